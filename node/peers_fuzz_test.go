package node

import (
	"reflect"
	"testing"
)

// FuzzDecodePeerMsg: whatever a peer sends, decoding never panics, and a
// message that decodes survives a round trip unchanged.
func FuzzDecodePeerMsg(f *testing.F) {
	for _, m := range []*peerMsg{
		{Kind: peerPresenceSet, Ver: 3, On: []uint64{1, 2, 1 << 40}, Ts: 1767225600000},
		{Kind: peerPresenceDelta, Ver: 4, On: []uint64{7}, Off: []uint64{2}, Ts: 1},
		{Kind: peerTyping, Conv: 9, User: 2, Typing: true},
	} {
		b, err := encodePeerMsg(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x80})
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}) // an array claiming 4G elements
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodePeerMsg(b)
		if err != nil {
			return
		}
		again, err := encodePeerMsg(m)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", m, err)
		}
		m2, err := decodePeerMsg(again)
		if err != nil {
			t.Fatalf("decode of a re-encoded message: %v", err)
		}
		if !reflect.DeepEqual(normalize(m), normalize(m2)) {
			t.Fatalf("round trip changed the message: %+v -> %+v", m, m2)
		}
	})
}

// normalize maps empty slices to nil: omitempty drops them either way.
func normalize(m *peerMsg) peerMsg {
	c := *m
	if len(c.On) == 0 {
		c.On = nil
	}
	if len(c.Off) == 0 {
		c.Off = nil
	}
	return c
}
