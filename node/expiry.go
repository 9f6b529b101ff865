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

// expireMessages applies MessageRetention: on the leader, with the dedup
// sweep's rhythm, an OpExpireMessages deleting the events older than
// now - MessageRetention among the next engine.ExpireMessagesBudget. One
// is in flight at a time; the signal loop alone calls it.
func (n *Node) expireMessages(now time.Time) {
	if n.cfg.MessageRetention <= 0 || now.Before(n.retentionNext) || !n.raft.IsLeader() || n.retentionInflight.Load() {
		return
	}
	n.retentionNext = now.Add(n.cfg.ExpireSendsEvery)
	cmd, err := engine.EncodeCommand(&engine.Command{Op: engine.OpExpireMessages, Ts: now.Add(-n.cfg.MessageRetention).UnixMilli()})
	if err != nil {
		n.log.Error("encode expire_messages", "err", err)
		return
	}
	n.retentionInflight.Store(true)
	if err := n.raft.Submit(cmd, func(result any, _ uint64, err error) {
		n.retentionInflight.Store(false)
		if res, _ := result.(*engine.Result); err == nil && res != nil && res.Expired > 0 {
			n.log.Debug("retention", "events_deleted", res.Expired)
		}
	}); err != nil {
		n.retentionInflight.Store(false)
	}
}
