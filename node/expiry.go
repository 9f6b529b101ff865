package node

import (
	"time"

	"parley/engine"
)

// expireSends keeps the dedup records of sends bounded: on the leader, once
// every ExpireSendsEvery, it submits an OpExpireSends that deletes the
// records older than SendRetention among the next engine.ExpireSendsBudget
// (the engine sweeps the whole set in such steps). Only the leader
// submits, so the sweep is not repeated by every node; one is in flight at
// a time. It runs on the signal loop's goroutine, which alone touches
// expireNext.
func (n *Node) expireSends(now time.Time) {
	if n.cfg.SendRetention < 0 || now.Before(n.expireNext) || !n.raft.IsLeader() || n.expireInflight.Load() {
		return
	}
	n.expireNext = now.Add(n.cfg.ExpireSendsEvery)
	cmd, err := engine.EncodeCommand(&engine.Command{Op: engine.OpExpireSends, Ts: now.Add(-n.cfg.SendRetention).UnixMilli()})
	if err != nil {
		n.log.Error("encode expire_sends", "err", err)
		return
	}
	n.expireInflight.Store(true)
	err = n.raft.Submit(cmd, func(result any, _ uint64, err error) {
		n.expireInflight.Store(false)
		if err != nil {
			n.log.Debug("expire_sends", "err", err) // the next tick tries again
			return
		}
		n.metrics.expirySweeps.Inc()
		if res, _ := result.(*engine.Result); res != nil && res.Expired > 0 {
			n.metrics.sendsExpired.Add(float64(res.Expired))
		}
	})
	if err != nil {
		n.expireInflight.Store(false)
	}
}
