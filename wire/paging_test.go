package wire

import "testing"

// The paging fields of requests: conv.list's limit is defaulted and
// clamped like the others, and after_conv is an id like any other.
func TestValidatePagingFields(t *testing.T) {
	r := Request{Type: TypeConvList}
	if e := r.Validate(); e != nil || r.Limit != DefaultConvListLimit {
		t.Fatalf("conv.list: %v, limit %d", e, r.Limit)
	}
	r = Request{Type: TypeConvList, Limit: MaxConvListLimit + 1}
	if e := r.Validate(); e != nil || r.Limit != MaxConvListLimit {
		t.Fatalf("conv.list over the limit: %v, limit %d", e, r.Limit)
	}
	for _, bad := range []Request{
		{Type: TypeConvList, Limit: -1},
		{Type: TypeSync, AfterConv: MaxSafeInteger + 1},
		{Type: TypeConvList, AfterConv: MaxSafeInteger + 1},
	} {
		if e := bad.Validate(); e == nil || e.Code != CodeInvalid {
			t.Fatalf("%+v: %v, want invalid", bad, e)
		}
	}
	// after_conv travels in the frame.
	in := Request{Type: TypeSync, ID: 1, Since: 5, After: 9, AfterConv: 12}
	b, err := Marshal(&in)
	if err != nil {
		t.Fatal(err)
	}
	var out Request
	if e := DecodeRequest(b, &out); e != nil || out.AfterConv != 12 || out.After != 9 {
		t.Fatalf("%+v, %v", out, e)
	}
}

func TestSyncAdvanced(t *testing.T) {
	for _, tc := range []struct {
		after, afterConv, next, nextConv uint64
		want                             bool
	}{
		{10, 0, 11, 0, true},
		{10, 0, 11, 3, true},
		{10, 0, 10, 0, false},
		{10, 0, 10, 3, false}, // the whole of 10 was done already
		{10, 2, 10, 0, true},  // the rest of 10 is done now
		{10, 2, 10, 5, true},
		{10, 2, 10, 2, false},
		{10, 5, 10, 2, false},
		{10, 2, 9, 0, false},
	} {
		if got := SyncAdvanced(tc.after, tc.afterConv, tc.next, tc.nextConv); got != tc.want {
			t.Errorf("%d/%d -> %d/%d: %v, want %v", tc.after, tc.afterConv, tc.next, tc.nextConv, got, tc.want)
		}
	}
}
