package wire

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

// checkLen compares size with the length of what enc writes, on random
// values of T (the same values as the encoder tests).
func checkLen[T any](t *testing.T, size func(*T) int, enc func([]byte, *T) []byte) {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 500 {
		v := new(T)
		fill(r, reflect.ValueOf(v).Elem())
		if got, want := size(v), len(enc(nil, v)); got != want {
			t.Fatalf("value %d: size %d, encoded %d bytes", i, got, want)
		}
	}
}

func TestEventLenIsExact(t *testing.T) { checkLen(t, EventLen, AppendEvent) }
func TestConvInfoLenIsExact(t *testing.T) {
	checkLen(t, ConvInfoLen, appendConvInfo)
}
func TestConvSyncLenIsExact(t *testing.T)   { checkLen(t, ConvSyncLen, appendConvSync) }
func TestDeviceInfoLenIsExact(t *testing.T) { checkLen(t, DeviceInfoLen, appendDeviceInfo) }

// TestPageReplyOverhead: a reply carrying every paging field costs at most
// PageReplyOverhead more than its items (frame header included).
func TestPageReplyOverhead(t *testing.T) {
	big := uint64(MaxSafeInteger)
	evs := make([]Event, 200)
	for i := range evs {
		evs[i] = Event{Conv: big, Seq: big, Kind: KindMessage, Body: "x"}
	}
	changes := []ConvSync{{Info: ConvInfo{ID: big, Kind: ConvGroup}, Events: evs[:1], More: true}}
	for _, r := range []*Reply{
		{Type: TypeOK, ID: big, Events: evs, More: true},
		{Type: TypeOK, ID: big, Changes: changes, More: true, Next: big, NextConv: big},
		{Type: TypeOK, ID: big, Convs: []ConvInfo{changes[0].Info}, More: true, Next: big, NextConv: big},
		{Type: TypeOK, ID: big, Devices: []DeviceInfo{{ID: big, Name: "d"}}, More: true, Next: big},
		{Type: TypeOK, ID: big, Info: &changes[0].Info, More: true, Next: big},
	} {
		items := 0
		for i := range r.Events {
			items += EventLen(&r.Events[i])
		}
		for i := range r.Changes {
			items += ConvSyncLen(&r.Changes[i])
		}
		for i := range r.Convs {
			items += ConvInfoLen(&r.Convs[i])
		}
		for i := range r.Devices {
			items += DeviceInfoLen(&r.Devices[i])
		}
		if r.Info != nil {
			items += ConvInfoLen(r.Info)
		}
		const wsHeader = 10
		if extra := len(AppendReply(nil, r)) + wsHeader - items; extra > PageReplyOverhead {
			t.Fatalf("%+v: %d bytes over its items", r, extra)
		}
	}
}
