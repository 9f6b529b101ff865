package node

import (
	"testing"

	"parley/wire"
)

// TestReadAdmission: a connection has at most wire.MaxReadsInFlight
// expensive reads in flight and a user at most maxReadsPerUser over all
// their connections; a refused read takes nothing, a finished one gives
// its slot back.
func TestReadAdmission(t *testing.T) {
	var a readAdmission
	conns := make([]*session, maxReadsPerUser/wire.MaxReadsInFlight+1)
	for i := range conns {
		conns[i] = &session{user: 7}
	}
	other := &session{user: 8}
	for _, s := range conns[:len(conns)-1] {
		for range wire.MaxReadsInFlight {
			if !a.acquire(s) {
				t.Fatal("a read within the connection's share was refused")
			}
		}
		if a.acquire(s) {
			t.Fatal("a read over the connection's share was admitted")
		}
	}
	last := conns[len(conns)-1]
	if a.acquire(last) {
		t.Fatal("a read over the user's share was admitted")
	}
	if last.reads.Load() != 0 {
		t.Fatal("a refused read kept its slot")
	}
	if !a.acquire(other) {
		t.Fatal("another user's read was refused")
	}
	a.release(conns[0])
	if !a.acquire(last) {
		t.Fatal("a released slot was not reusable")
	}
	for _, s := range conns {
		for s.reads.Load() > 0 {
			a.release(s)
		}
	}
	a.release(other)
	if len(a.users) != 0 {
		t.Fatalf("counts left behind: %v", a.users)
	}
}

func TestExpensiveReads(t *testing.T) {
	for _, typ := range []string{wire.TypeHistory, wire.TypeSync, wire.TypeConvGet, wire.TypeConvList,
		wire.TypeUserGet, wire.TypeReadGet, wire.TypeDeviceList, wire.TypeBlockList} {
		if !expensiveRead(typ) {
			t.Errorf("%s is not charged", typ)
		}
	}
	for _, typ := range []string{wire.TypeTyping, wire.TypeReceipt, wire.TypePresenceSub, wire.TypePing} {
		if expensiveRead(typ) {
			t.Errorf("%s is charged", typ)
		}
	}
}
