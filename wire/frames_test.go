package wire

import "testing"

// TestIsWrite: every request type is classified, and the writes are those
// PROTOCOL.md lists as answered busy with retry_ms (the requests that go
// through the log); reads and signals are not.
func TestIsWrite(t *testing.T) {
	types := map[string]bool{
		TypeSend: true, TypeDirectOpen: true, TypeGroupCreate: true, TypeGroupAdd: true,
		TypeGroupRemove: true, TypeGroupLeave: true, TypeGroupAdmin: true, TypeGroupRename: true,
		TypePrivacySet: true, TypeDeviceRevoke: true, TypeBlock: true, TypeUnblock: true,
		TypePushSet: true, TypePushClear: true, TypeNotifySet: true, TypeConvMute: true, TypeMsgDelete: true,

		TypeConvGet: false, TypeConvList: false, TypeHistory: false, TypeSync: false, TypeUserGet: false,
		TypePing: false, TypeTyping: false, TypePresenceSub: false, TypeReceipt: false, TypeReadGet: false,
		TypeDeviceList: false, TypeBlockList: false,
	}
	for typ, want := range types {
		if got := IsWrite(typ); got != want {
			t.Errorf("IsWrite(%q) = %v, want %v", typ, got, want)
		}
	}
	// Every request type the decoder knows is in the table above.
	for _, typ := range known {
		if _, ok := types[typ]; ok {
			continue
		}
		if e := (&Request{Type: typ}).Validate(); e == nil || e.Code != CodeUnknownType {
			t.Errorf("request type %q is not classified here", typ)
		}
	}
}
