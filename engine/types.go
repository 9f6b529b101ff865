package engine

// Limits enforced by Apply and the queries. They equal the protocol's (package
// wire) where the protocol has one; they are constants because every replica
// must enforce the same ones.
const (
	MinUsernameLen       = 3
	MaxUsernameLen       = 32
	MaxPasswordHashBytes = 1024
	MaxDeviceNameBytes   = 64
	MaxNameBytes         = 64 // group name
	MaxClientMsgIDBytes  = 64
	MaxBodyBytes         = 16 << 10
	MaxMembersPerCommand = 1000
	MaxGroupMembers      = 100_000

	DefaultHistoryLimit = 50
	MaxHistoryLimit     = 200
	DefaultSyncConvs    = 50
	MaxSyncConvs        = 100
	DefaultSyncEvents   = 50
	MaxSyncEvents       = 200

	// SyncInfoMembers caps the member list in a ConvSync's Info: a page of
	// 100 large groups would otherwise carry millions of IDs. Larger groups
	// come with MemberCount only; Conversation(id) has the full list.
	SyncInfoMembers = 256

	// maxID keeps every ID below 2^53 so JavaScript clients read it exactly.
	maxID = 1<<53 - 1
)

// ConvKind says whether a conversation is a 1:1 or a group.
type ConvKind string

const (
	KindDirect ConvKind = "direct"
	KindGroup  ConvKind = "group"
)

// EventKind is the kind of an Event. The strings are the protocol's.
type EventKind string

const (
	EventMessage       EventKind = "message"
	EventCreated       EventKind = "created"
	EventMemberAdded   EventKind = "member_added"
	EventMemberRemoved EventKind = "member_removed"
	EventMemberLeft    EventKind = "member_left"
	EventAdminChanged  EventKind = "admin_changed"
	EventRenamed       EventKind = "renamed"
)

// Event is one entry of a conversation: a message or a membership change.
// Each takes the conversation's next Seq.
type Event struct {
	Conv  uint64
	Seq   uint64
	Index uint64 // the Raft log index that created it: the sync clock
	Ts    int64  // the leader's clock, unix ms
	Kind  EventKind
	From  uint64 // the acting user; the sender of a message

	// Messages.
	Device      uint64
	ClientMsgID string
	Body        string
	ReplyTo     uint64

	// System events.
	Users []uint64 // affected users (added, removed, left, made admin; the initial members for created)
	Name  string   // created (groups) and renamed
	Admin bool     // admin_changed: the new flag

	// Recipients is set only on published events: the members after the
	// change, plus the removed or departed user on their own removal event.
	// It is sorted, read-only and may be shared by several events (it is the
	// conversation's member list at that point, never modified afterwards).
	Recipients []uint64
}

// Publisher receives the events of each applied entry, on the Apply
// goroutine, after the entry's state is committed and visible to queries.
// It must not block for long (it holds up Apply) and must not call Apply.
// The slice and its events are the receiver's to keep.
type Publisher interface {
	Publish(events []Event)
}

// User is an account.
type User struct {
	ID           uint64
	Username     string
	PasswordHash []byte
	CreatedAt    int64
}

// Device is one login of a user.
type Device struct {
	ID        uint64
	User      uint64
	Name      string
	CreatedAt int64
	Revoked   bool
}

// Member is a member of a conversation.
type Member struct {
	User  uint64
	Admin bool
}

// ConvInfo describes a conversation.
type ConvInfo struct {
	ID          uint64
	Kind        ConvKind
	Name        string   // groups only
	Members     []Member // ascending user ID; see SyncInfoMembers
	MemberCount int
	LastSeq     uint64
	LastIndex   uint64
	CreatedAt   int64
}

// Direction of a History page relative to its anchor.
type Direction uint8

const (
	Before Direction = iota // seqs below the anchor, newest first
	After                   // seqs above the anchor, oldest first
)

// ConvSync is one changed conversation in a SyncPage.
type ConvSync struct {
	Info   ConvInfo
	Events []Event // index > since, ascending seq
	More   bool    // further events follow these: page them with History(After)
	// Gone is set when the user left or was removed: Events end with that
	// change and the conversation stops appearing in later syncs.
	Gone bool
}

// SyncPage answers Sync.
type SyncPage struct {
	Convs []ConvSync
	More  bool // more changed conversations: call Sync again with after = Next
	// Next is the after of the next call while More is set, and the
	// device's new cursor once it is not.
	Next uint64
}
