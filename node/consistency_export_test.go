package node

import "time"

// SetMinIndexTimerForTest makes timer stand in for the minIndexWait timer
// of reads waiting for a min_idx (nil restores it).
func (n *Node) SetMinIndexTimerForTest(timer func() <-chan time.Time) {
	if timer == nil {
		n.minIndexTimer.Store(nil)
		return
	}
	n.minIndexTimer.Store(&timer)
}
