package wire

// Request types (client -> server). Each request gets exactly one reply with
// the same id: an "ok" frame or an "error" frame.
const (
	TypeSend         = "send"          // post a message to a conversation
	TypeDirectOpen   = "dm.open"       // get or create the 1:1 conversation with a user
	TypeGroupCreate  = "group.create"  // create a group
	TypeGroupAdd     = "group.add"     // add members (admins only)
	TypeGroupRemove  = "group.remove"  // remove a member (admins only)
	TypeGroupLeave   = "group.leave"   // leave a group
	TypeGroupAdmin   = "group.admin"   // grant or revoke admin (admins only)
	TypeGroupRename  = "group.rename"  // rename a group (any member)
	TypeConvGet      = "conv.get"      // one conversation's metadata
	TypeConvList     = "conv.list"     // the user's conversations
	TypeHistory      = "history"       // a page of a conversation's events by seq
	TypeSync         = "sync"          // what changed since a cursor
	TypeUserGet      = "user.get"      // look up a user by id or by name
	TypePing         = "ping"          // application-level keepalive; replied with "ok"
	TypeTyping       = "typing"        // start or stop typing in a conversation (ephemeral)
	TypePresenceSub  = "presence.sub"  // watch the presence of a bounded list of users
	TypeReceipt      = "receipt"       // report delivered-up-to / read-up-to in a conversation
	TypeReadGet      = "read.get"      // who has read a message of a group, paged
	TypePrivacySet   = "privacy.set"   // hide or show last_seen
	TypeDeviceList   = "device.list"   // the user's devices, paged
	TypeDeviceRevoke = "device.revoke" // revoke one of the user's devices
	TypeBlock        = "block"         // block a user
	TypeUnblock      = "unblock"       // unblock a user
	TypeBlockList    = "block.list"    // the users the user blocks, paged
	TypePushSet      = "push.set"      // register this device's push target
	TypePushClear    = "push.clear"    // remove this device's push target
	TypeNotifySet    = "notify.set"    // the user's notification settings
	TypeConvMute     = "conv.mute"     // mute or unmute a conversation's notifications
	TypeMsgDelete    = "msg.delete"    // delete a message for everyone
)

// IsWrite reports whether requests of type t are writes: they go through
// the log, and a node that cannot commit them in time refuses them `busy`
// with retry_ms (PROTOCOL.md sections 4.2 and 5).
func IsWrite(t string) bool {
	switch t {
	case TypeSend, TypeDirectOpen, TypeGroupCreate, TypeGroupAdd, TypeGroupRemove, TypeGroupLeave,
		TypeGroupAdmin, TypeGroupRename, TypePrivacySet, TypeDeviceRevoke, TypeBlock, TypeUnblock,
		TypePushSet, TypePushClear, TypeNotifySet, TypeConvMute, TypeMsgDelete:
		return true
	}
	return false
}

// Who may add a user to groups (privacy.set group_add).
const (
	GroupAddEveryone = "everyone" // anyone the user has not blocked (the default)
	GroupAddContacts = "contacts" // users who share a conversation with the user
	GroupAddNobody   = "nobody"
)

// Server frame types.
const (
	TypeHello = "hello" // first frame after the upgrade
	TypeOK    = "ok"    // successful reply to a request
	TypeError = "error" // failed reply to a request (id 0 if the request had none)
	TypeEvent = "ev"    // a durable conversation event
	// Ephemeral signals: never stored, never replayed by sync.
	TypeTypingEvent   = "typing"   // someone started or stopped typing
	TypePresenceEvent = "presence" // a watched user went online or offline
	// Receipts: derived from durable cursors, but not conversation events
	// (no seq): sync returns the cursors themselves.
	TypeReceiptEvent    = "receipt"     // a member's cursors moved (1:1, and your own devices)
	TypeReadCountsEvent = "read_counts" // a group's "read by N of M", throttled
)

// Event kinds. Every kind occupies one seq in its conversation.
const (
	KindMessage       = "message"
	KindCreated       = "created"
	KindMemberAdded   = "member_added"
	KindMemberRemoved = "member_removed"
	KindMemberLeft    = "member_left"
	KindAdminChanged  = "admin_changed"
	KindRenamed       = "renamed"
	KindDeleted       = "deleted"
)

// History directions.
const (
	DirBefore = "before" // events with seq < anchor, newest first
	DirAfter  = "after"  // events with seq > anchor, oldest first
)

// Conversation kinds.
const (
	ConvDirect = "direct"
	ConvGroup  = "group"
)

// Request is any client frame. It is one flat struct rather than a type per
// request so the loop decodes a frame in one pass without reflection on an
// interface; which fields matter depends on Type (see Validate and
// docs/PROTOCOL.md).
type Request struct {
	Type        string   `msgpack:"t"`
	ID          uint64   `msgpack:"id"`
	Conv        uint64   `msgpack:"conv,omitempty"`
	ClientMsgID string   `msgpack:"cmid,omitempty"`
	Body        string   `msgpack:"body,omitempty"`
	ReplyTo     uint64   `msgpack:"reply_to,omitempty"`
	User        uint64   `msgpack:"user,omitempty"`
	Users       []uint64 `msgpack:"users,omitempty"`
	Name        string   `msgpack:"name,omitempty"`
	Admin       bool     `msgpack:"admin,omitempty"`
	Seq         uint64   `msgpack:"seq,omitempty"`
	Dir         string   `msgpack:"dir,omitempty"`
	Limit       int      `msgpack:"limit,omitempty"`
	Since       uint64   `msgpack:"since,omitempty"`
	After       uint64   `msgpack:"after,omitempty"`      // paging: the previous page's next
	AfterConv   uint64   `msgpack:"after_conv,omitempty"` // sync and conv.list paging: the previous page's next_conv
	On          bool     `msgpack:"on,omitempty"`         // typing: started (true) or stopped
	Delivered   uint64   `msgpack:"delivered,omitempty"`
	Read        uint64   `msgpack:"read,omitempty"`
	Hide        bool     `msgpack:"hide_last_seen,omitempty"`
	GroupAdd    string   `msgpack:"group_add,omitempty"` // privacy.set: "everyone", "contacts", "nobody"; "" leaves it as it is
	Device      uint64   `msgpack:"dev,omitempty"`
	// MinIndex: serve this read only once the node has applied at least
	// this index (the highest idx the client has seen); see Consistency in
	// PROTOCOL.md. 0: no wait.
	MinIndex uint64 `msgpack:"min_idx,omitempty"`
	// Att: send's attachments (at most MaxAttachments); only their ID and
	// Name are read.
	Att []Attachment `msgpack:"att,omitempty"`
	// push.set: the device's push target.
	Provider string `msgpack:"provider,omitempty"` // "fcm", "apns", "webpush", "webhook"
	Token    string `msgpack:"token,omitempty"`    // fcm, apns, webhook
	Endpoint string `msgpack:"endpoint,omitempty"` // webpush: the PushSubscription's endpoint
	P256dh   string `msgpack:"p256dh,omitempty"`   // webpush: keys.p256dh
	Auth     string `msgpack:"auth,omitempty"`     // webpush: keys.auth
	// notify.set
	Preview bool `msgpack:"preview,omitempty"`
	DND     bool `msgpack:"dnd,omitempty"`
	// conv.mute: unix ms; 0 unmutes, -1 mutes until unmuted.
	Until int64 `msgpack:"until,omitempty"`
}

// Attachment is a file attached to a message (docs/PROTOCOL.md, Media).
// A send names it by ID (a media id from the upload) and optionally a
// Name to show; in an event the server fills in the rest.
type Attachment struct {
	ID     string `msgpack:"id"`
	Name   string `msgpack:"name,omitempty"`
	Mime   string `msgpack:"mime,omitempty"`
	Size   uint64 `msgpack:"size,omitempty"`
	Width  uint64 `msgpack:"w,omitempty"` // images: pixels
	Height uint64 `msgpack:"h,omitempty"`
	Thumb  bool   `msgpack:"thumb,omitempty"` // a thumbnail exists (GET /v1/media/{id}?thumb=1)
}

// Hello is sent once, right after the WebSocket upgrade.
type Hello struct {
	Type     string `msgpack:"t"` // "hello"
	User     uint64 `msgpack:"user"`
	Device   uint64 `msgpack:"dev"`
	Node     string `msgpack:"node"`
	Index    uint64 `msgpack:"idx"`     // the node's applied index now
	PingMS   int64  `msgpack:"ping_ms"` // the server pings a connection quiet for this long
	Limits   Limits `msgpack:"limits"`
	Protocol int    `msgpack:"v"` // protocol version, 1
	// VAPID is the server's Web Push public key (base64url), the
	// applicationServerKey a browser subscribes with; absent when the
	// server sends no Web Push.
	VAPID string `msgpack:"vapid,omitempty"`
}

// Limits tells the client what the server enforces.
type Limits struct {
	MaxFrameBytes int     `msgpack:"max_frame"`
	MaxBodyBytes  int     `msgpack:"max_body"`
	RatePerSecond float64 `msgpack:"rate"`
	RateBurst     int     `msgpack:"burst"`
	// MaxReplyBytes: paged replies stop before this many bytes.
	MaxReplyBytes int `msgpack:"max_reply"`
	// Reads: expensive reads one connection may have in flight (busy beyond).
	Reads int `msgpack:"reads"`
}

// Reply answers one request. Type is "ok" or "error"; the other fields
// depend on the request (docs/PROTOCOL.md lists them per type).
type Reply struct {
	Type    string `msgpack:"t"`
	ID      uint64 `msgpack:"id"`
	Code    Code   `msgpack:"code,omitempty"`
	Message string `msgpack:"msg,omitempty"`
	// RetryMS: on busy, how long to wait before retrying (plus jitter).
	RetryMS int64 `msgpack:"retry_ms,omitempty"`

	// send
	ClientMsgID string `msgpack:"cmid,omitempty"`
	Conv        uint64 `msgpack:"conv,omitempty"`
	Seq         uint64 `msgpack:"seq,omitempty"`
	Ts          int64  `msgpack:"ts,omitempty"`
	Index       uint64 `msgpack:"idx,omitempty"`
	Duplicate   bool   `msgpack:"dup,omitempty"`

	// dm.open, group.*, conv.get
	Info *ConvInfo `msgpack:"info,omitempty"`
	// conv.list
	Convs []ConvInfo `msgpack:"convs,omitempty"`
	// user.get
	UserInfo *UserInfo `msgpack:"user,omitempty"`
	// history
	Events []Event `msgpack:"events,omitempty"`
	More   bool    `msgpack:"more,omitempty"`
	// sync
	Changes []ConvSync `msgpack:"changes,omitempty"`
	Next    uint64     `msgpack:"next,omitempty"`
	// sync: set when the page ended among conversations that share the
	// change index Next; conv.list: the last conversation's id
	NextConv uint64 `msgpack:"next_conv,omitempty"`
	// presence.sub: the current state of every watched user
	Presence []Presence `msgpack:"presence,omitempty"`
	// read.get
	ReadCount      int      `msgpack:"read_count,omitempty"`
	DeliveredCount int      `msgpack:"delivered_count,omitempty"`
	MemberCount    int      `msgpack:"member_count,omitempty"`
	Readers        []uint64 `msgpack:"readers,omitempty"`
	// device.list
	Devices []DeviceInfo `msgpack:"devices,omitempty"`
	// block.list
	Blocked []uint64 `msgpack:"blocked,omitempty"`
}

// DeviceInfo describes one of the user's devices.
type DeviceInfo struct {
	ID        uint64 `msgpack:"id"`
	Name      string `msgpack:"name"`
	CreatedAt int64  `msgpack:"created_at"`
	Revoked   bool   `msgpack:"revoked,omitempty"`
	Current   bool   `msgpack:"current,omitempty"` // the device asking
}

// Receipt is the "receipt" frame: User's cursors in Conv moved.
type Receipt struct {
	Type      string `msgpack:"t"` // "receipt"
	Conv      uint64 `msgpack:"conv"`
	User      uint64 `msgpack:"user"`
	Device    uint64 `msgpack:"dev,omitempty"`
	Delivered uint64 `msgpack:"delivered"`
	Read      uint64 `msgpack:"read"`
	Index     uint64 `msgpack:"idx"`
}

// ReadCounts is the "read_counts" frame: for recent messages of a group,
// how many of the other members have had them delivered and have read them.
type ReadCounts struct {
	Type  string      `msgpack:"t"` // "read_counts"
	Conv  uint64      `msgpack:"conv"`
	Items []ReadCount `msgpack:"items"`
}

// ReadCount is one message's aggregate receipt.
type ReadCount struct {
	Seq       uint64 `msgpack:"seq"`
	From      uint64 `msgpack:"from"`
	Read      int    `msgpack:"read"`
	Delivered int    `msgpack:"delivered"`
	Members   int    `msgpack:"members"` // other members (the sender excluded)
}

// Typing is the ephemeral "typing" frame. A client shows the indicator until
// it gets On=false or TTLms pass without a renewal.
type Typing struct {
	Type  string `msgpack:"t"` // "typing"
	Conv  uint64 `msgpack:"conv"`
	User  uint64 `msgpack:"user"`
	On    bool   `msgpack:"on"`
	TTLms int64  `msgpack:"ttl_ms,omitempty"`
}

// Presence is a user's online state: a "presence" frame, or an item of the
// presence.sub reply. LastSeen is Unix ms, 0 when unknown or hidden by the
// user's privacy setting.
type Presence struct {
	Type     string `msgpack:"t,omitempty"` // "presence" as a frame
	User     uint64 `msgpack:"user"`
	Online   bool   `msgpack:"online"`
	LastSeen int64  `msgpack:"last_seen,omitempty"`
}

// Event is a durable conversation event. Clients dedupe events by
// (conv, seq): delivery is at-least-once.
type Event struct {
	Type        string   `msgpack:"t,omitempty"` // "ev" as a frame; empty, so absent, inside a reply
	Conv        uint64   `msgpack:"conv"`
	Seq         uint64   `msgpack:"seq"`
	Index       uint64   `msgpack:"idx"`
	Ts          int64    `msgpack:"ts"`
	Kind        string   `msgpack:"kind"`
	From        uint64   `msgpack:"from"`
	Device      uint64   `msgpack:"dev,omitempty"`
	ClientMsgID string   `msgpack:"cmid,omitempty"`
	Body        string   `msgpack:"body,omitempty"`
	ReplyTo     uint64   `msgpack:"reply_to,omitempty"`
	Users       []uint64 `msgpack:"users,omitempty"`
	Name        string   `msgpack:"name,omitempty"`
	Admin       bool     `msgpack:"admin,omitempty"`
	// Att: a message's attachments.
	Att []Attachment `msgpack:"att,omitempty"`
	// Target: of a "deleted" event, the seq of the message deleted; of a
	// deleted message, the seq of the "deleted" event.
	Target uint64 `msgpack:"target,omitempty"`
	// Deleted: the message was deleted for everyone (no body, no att).
	Deleted bool `msgpack:"deleted,omitempty"`
}

// ConvInfo describes a conversation.
type ConvInfo struct {
	ID        uint64   `msgpack:"id"`
	Kind      string   `msgpack:"kind"`
	Name      string   `msgpack:"name,omitempty"`
	Members   []uint64 `msgpack:"members"`
	Admins    []uint64 `msgpack:"admins,omitempty"`
	LastSeq   uint64   `msgpack:"last_seq"`
	LastIndex uint64   `msgpack:"last_idx"`
	CreatedAt int64    `msgpack:"created_at"`
	// The asking user's receipt cursors and unread messages; in a 1:1 the
	// other member's cursors too.
	MemberCount   int    `msgpack:"member_count,omitempty"`
	Delivered     uint64 `msgpack:"delivered,omitempty"`
	Read          uint64 `msgpack:"read,omitempty"`
	Unread        uint64 `msgpack:"unread,omitempty"`
	PeerDelivered uint64 `msgpack:"peer_delivered,omitempty"`
	PeerRead      uint64 `msgpack:"peer_read,omitempty"`
	// MutedUntil: the asking user muted its notifications until then
	// (unix ms; -1: until unmuted).
	MutedUntil int64 `msgpack:"muted_until,omitempty"`
	// FirstSeq: retention deleted the events below this seq (absent: none).
	FirstSeq uint64 `msgpack:"first_seq,omitempty"`
}

// ConvSync is one changed conversation in a sync page.
type ConvSync struct {
	Info   ConvInfo `msgpack:"info"`
	Events []Event  `msgpack:"events"`
	More   bool     `msgpack:"more,omitempty"` // more events after these: page with history
	Gone   bool     `msgpack:"gone,omitempty"` // the user is no longer a member
}

// UserInfo is the public profile of a user.
type UserInfo struct {
	ID       uint64 `msgpack:"id"`
	Username string `msgpack:"username"`
	LastSeen int64  `msgpack:"last_seen,omitempty"` // Unix ms; 0 if unknown or hidden
	// The user's privacy and notification settings: in the reply to
	// user.get of oneself only.
	HideLastSeen bool   `msgpack:"hide_last_seen,omitempty"`
	GroupAdd     string `msgpack:"group_add,omitempty"`
	Preview      bool   `msgpack:"preview,omitempty"`
	DND          bool   `msgpack:"dnd,omitempty"`
	// Deleted: the account was deleted by an operator (username "").
	Deleted bool `msgpack:"deleted,omitempty"`
}
