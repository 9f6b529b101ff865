package wire

import (
	"strconv"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
)

// DecodeRequest decodes one client frame into r (which it resets first) and
// validates it. b is not retained: strings are copied out. It is the
// hand-written, bounds-checked decoder of decode.go (which lists what it
// accepts): no length declared in the frame is trusted beyond the bytes
// the frame has, so a frame of n bytes never costs more than a few times n
// bytes of memory.
//
// On error r.ID is the request's id if the frame had a valid one (in
// 0..2^53-1) before the point where decoding stopped, else 0; the error
// reply carries it. An id out of that range is itself the error (invalid).
func DecodeRequest(b []byte, r *Request) *Error {
	*r = Request{}
	if len(b) > MaxFrameBytes {
		return Errorf(CodeTooLarge, "frame over limit")
	}
	if len(b) == 0 || !isMap(b[0]) {
		return Errorf(CodeBadFrame, "frame is not a msgpack map")
	}
	if e := decodeRequest(b, r); e != nil {
		return e
	}
	return r.Validate()
}

// isMap reports whether c starts a msgpack map (fixmap, map16, map32).
func isMap(c byte) bool { return c&0xf0 == 0x80 || c == 0xde || c == 0xdf }

// Validate checks the fields a request type needs and every limit. It is the
// single place where the protocol's rules on requests live.
func (r *Request) Validate() *Error {
	for _, v := range [...]uint64{r.ID, r.Conv, r.ReplyTo, r.User, r.Seq, r.Since, r.After, r.AfterConv, r.Delivered, r.Read, r.Device, r.MinIndex} {
		if v > MaxSafeInteger {
			return Errorf(CodeInvalid, "a number is above 2^53-1")
		}
	}
	needConv := func() *Error {
		if r.Conv == 0 {
			return Errorf(CodeInvalid, "conv is required")
		}
		return nil
	}
	needUser := func() *Error {
		if r.User == 0 {
			return Errorf(CodeInvalid, "user is required")
		}
		return nil
	}
	switch r.Type {
	case TypeSend:
		if e := needConv(); e != nil {
			return e
		}
		if n := len(r.ClientMsgID); n == 0 || n > MaxClientMsgIDBytes {
			return Errorf(CodeInvalid, "cmid must be 1-64 bytes")
		}
		if e := validAttachments(r.Att); e != nil {
			return e
		}
		if len(r.Body) == 0 && len(r.Att) == 0 { // a file may go without text
			return Errorf(CodeInvalid, "body is empty")
		}
		if len(r.Body) > MaxBodyBytes {
			return Errorf(CodeTooLarge, "body over limit")
		}
		if !utf8.ValidString(r.Body) {
			return Errorf(CodeInvalid, "body is not valid UTF-8")
		}
	case TypeDirectOpen:
		return needUser()
	case TypeGroupCreate:
		if e := validName(r.Name); e != nil {
			return e
		}
		return validUsers(r.Users, true)
	case TypeGroupAdd:
		if e := needConv(); e != nil {
			return e
		}
		return validUsers(r.Users, false)
	case TypeGroupRemove, TypeGroupAdmin:
		if e := needConv(); e != nil {
			return e
		}
		return needUser()
	case TypeGroupLeave, TypeConvGet:
		return needConv()
	case TypeGroupRename:
		if e := needConv(); e != nil {
			return e
		}
		return validName(r.Name)
	case TypeHistory:
		if e := needConv(); e != nil {
			return e
		}
		if r.Dir == "" {
			r.Dir = DirBefore
		}
		if r.Dir != DirBefore && r.Dir != DirAfter {
			return Errorf(CodeInvalid, `dir must be "before" or "after"`)
		}
		if r.Limit < 0 {
			return Errorf(CodeInvalid, "negative limit")
		}
		if r.Limit == 0 {
			r.Limit = DefaultHistoryLimit
		}
		if r.Limit > MaxHistoryLimit {
			r.Limit = MaxHistoryLimit
		}
	case TypeSync:
		if r.Limit < 0 {
			return Errorf(CodeInvalid, "negative limit")
		}
		if r.Limit == 0 {
			r.Limit = DefaultSyncConvs
		}
		if r.Limit > MaxSyncConvs {
			r.Limit = MaxSyncConvs
		}
	case TypeUserGet:
		if r.User == 0 && r.Name == "" {
			return Errorf(CodeInvalid, "user or name is required")
		}
	case TypeTyping:
		return needConv()
	case TypePresenceSub:
		if len(r.Users) > MaxPresenceWatch {
			return Errorf(CodeTooLarge, "presence.sub watches at most 256 users")
		}
		return validUsers(r.Users, true)
	case TypeReceipt:
		if e := needConv(); e != nil {
			return e
		}
		if r.Delivered == 0 && r.Read == 0 {
			return Errorf(CodeInvalid, "delivered or read is required")
		}
	case TypeReadGet:
		if e := needConv(); e != nil {
			return e
		}
		if r.Seq == 0 {
			return Errorf(CodeInvalid, "seq is required")
		}
		if r.Limit < 0 {
			return Errorf(CodeInvalid, "negative limit")
		}
	case TypeDeviceRevoke:
		if r.Device == 0 {
			return Errorf(CodeInvalid, "dev is required")
		}
	case TypeConvList:
		if r.Limit < 0 {
			return Errorf(CodeInvalid, "negative limit")
		}
		if r.Limit == 0 {
			r.Limit = DefaultConvListLimit
		}
		if r.Limit > MaxConvListLimit {
			r.Limit = MaxConvListLimit
		}
	case TypePrivacySet:
		switch r.GroupAdd {
		case "", GroupAddEveryone, GroupAddContacts, GroupAddNobody:
		default:
			return Errorf(CodeInvalid, `group_add must be "everyone", "contacts" or "nobody"`)
		}
	case TypeBlock, TypeUnblock:
		return needUser()
	case TypeBlockList:
		if r.Limit < 0 {
			return Errorf(CodeInvalid, "negative limit")
		}
		if r.Limit == 0 {
			r.Limit = DefaultBlockListLimit
		}
		if r.Limit > MaxBlockListLimit {
			r.Limit = MaxBlockListLimit
		}
	case TypeDeviceList:
		if r.Limit < 0 { // 0 is the default, over the maximum is capped (engine.Devices)
			return Errorf(CodeInvalid, "negative limit")
		}
	case TypeMsgDelete:
		if r.Conv == 0 || r.Seq == 0 {
			return Errorf(CodeInvalid, "conv and seq are required")
		}
	case TypePushSet:
		return validPushTarget(r)
	case TypePushClear, TypeNotifySet:
	case TypeConvMute:
		if r.Conv == 0 {
			return Errorf(CodeInvalid, "conv is required")
		}
		if r.Until < -1 || r.Until > MaxSafeInteger {
			return Errorf(CodeInvalid, "until must be -1, 0 or a time in unix ms")
		}
	case TypePing:
	case "":
		return Errorf(CodeBadFrame, `missing "t"`)
	default:
		return Errorf(CodeUnknownType, "unknown request type")
	}
	return nil
}

// Push providers (push.set).
const (
	PushFCM     = "fcm"
	PushAPNs    = "apns"
	PushWebPush = "webpush"
	PushWebhook = "webhook"
)

func validPushTarget(r *Request) *Error {
	for _, f := range [...]struct {
		what string
		v    string
		max  int
	}{{"token", r.Token, MaxPushTokenBytes}, {"endpoint", r.Endpoint, MaxPushEndpointBytes}, {"p256dh", r.P256dh, MaxPushKeyBytes}, {"auth", r.Auth, MaxPushKeyBytes}} {
		if len(f.v) > f.max {
			return Errorf(CodeTooLarge, f.what+" over "+strconv.Itoa(f.max)+" bytes")
		}
	}
	switch r.Provider {
	case PushFCM, PushAPNs, PushWebhook:
		if r.Token == "" || r.Endpoint != "" || r.P256dh != "" || r.Auth != "" {
			return Errorf(CodeInvalid, r.Provider+" takes a token and nothing else")
		}
	case PushWebPush:
		if r.Token != "" || r.Endpoint == "" || r.P256dh == "" || r.Auth == "" {
			return Errorf(CodeInvalid, "webpush takes endpoint, p256dh and auth")
		}
	case "":
		return Errorf(CodeInvalid, "provider is required")
	default:
		return Errorf(CodeInvalid, `provider must be "fcm", "apns", "webpush" or "webhook"`)
	}
	return nil
}

func validName(name string) *Error {
	if name == "" {
		return Errorf(CodeInvalid, "name is required")
	}
	if len(name) > MaxNameBytes {
		return Errorf(CodeTooLarge, "name over 64 bytes")
	}
	if !utf8.ValidString(name) {
		return Errorf(CodeInvalid, "name is not valid UTF-8")
	}
	return nil
}

func validUsers(users []uint64, emptyOK bool) *Error {
	if len(users) == 0 && !emptyOK {
		return Errorf(CodeInvalid, "users is required")
	}
	if len(users) > MaxUsersPerRequest {
		return Errorf(CodeTooLarge, "more than 1000 users")
	}
	for _, u := range users {
		if u == 0 || u > MaxSafeInteger {
			return Errorf(CodeInvalid, "bad user id")
		}
	}
	return nil
}

// Marshal encodes a server or client frame (Hello, Reply, Event, Request).
// Encode a broadcast event once and share the bytes with every recipient.
// Pointers to the server frames sent all the time (events, replies,
// receipts, signals) go through the hand-written encoders of encode.go,
// which write the bytes msgpack would; anything else through msgpack.
// (A nil pointer goes to msgpack too, which encodes it as nil.)
func Marshal(v any) ([]byte, error) {
	switch v := v.(type) {
	case *Event:
		if v != nil {
			return AppendEvent(make([]byte, 0, EventSize(v)), v), nil
		}
	case *Reply:
		if v != nil {
			return AppendReply(make([]byte, 0, ReplySize(v)), v), nil
		}
	case *Receipt:
		if v != nil {
			return AppendReceipt(make([]byte, 0, 128), v), nil
		}
	case *ReadCounts:
		if v != nil {
			return AppendReadCounts(make([]byte, 0, 48+64*len(v.Items)), v), nil
		}
	case *Typing:
		if v != nil {
			return AppendTyping(make([]byte, 0, 64), v), nil
		}
	case *Presence:
		if v != nil {
			return AppendPresence(make([]byte, 0, 64), v), nil
		}
	}
	return msgpack.Marshal(v)
}

// Unmarshal decodes a frame; clients use it for server frames. It decodes
// with msgpack/v5, whose allocations follow the lengths a frame declares,
// so it first checks (with the reader of decode.go, allocating nothing)
// that b starts with a well-formed value whose declared lengths all fit in
// b and whose containers nest at most 32 deep, and refuses b otherwise.
// Bytes after that value are ignored, as msgpack/v5 ignores them.
//
// What is left is what decoding n bytes into Go values costs anyway: an
// array of n one-byte elements (nils, say) decoded into a slice of structs
// allocates n structs. Do not decode untrusted frames into Go maps with
// it: msgpack/v5 reads an ext followed by a map header there as a map and
// sizes the Go map by a count that this check has not seen.
func Unmarshal(b []byte, v any) error {
	if e := checkValue(b); e != nil {
		return e
	}
	return msgpack.Unmarshal(b, v)
}

// ErrorReply builds the reply for a failed request.
func ErrorReply(id uint64, e *Error) *Reply {
	return &Reply{Type: TypeError, ID: id, Code: e.Code, Message: e.Message, RetryMS: e.RetryMS}
}

// PeekType returns the "t" of a server frame without decoding the rest, so a
// client can route frames cheaply. The frame must be a map; its other
// values are skipped (allocating nothing, their lengths checked as in
// Unmarshal). Like msgpack/v5, it takes the last "t" if there are several,
// nil as "", and ignores bytes after the map.
func PeekType(b []byte) (string, error) {
	r := mpReader{b: b}
	n, ok, e := r.readMapLen()
	if e != nil {
		return "", e
	}
	if !ok {
		return "", Errorf(CodeBadFrame, "frame is not a msgpack map")
	}
	var typ []byte
	for range n {
		key, ok, e := r.readStr()
		if e != nil {
			return "", within("a key", e)
		}
		if !ok {
			c, _ := r.peek()
			return "", Errorf(CodeBadFrame, "a key: expected a string, got "+typeName(c))
		}
		if string(key) != "t" {
			if e := r.skip(2); e != nil {
				return "", e
			}
			continue
		}
		v, ok, e := r.readStr()
		if e != nil {
			return "", within("t", e)
		}
		if !ok {
			c, _ := r.peek()
			return "", Errorf(CodeBadFrame, "t: expected a string, got "+typeName(c))
		}
		typ = v
	}
	return internString(typ), nil
}
