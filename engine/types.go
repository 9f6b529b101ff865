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
	MaxReceiptItems      = 1000 // conversations in one OpReceipts
	// A token signing key (OpSetSigningKey): HS256 wants at least 32 bytes;
	// the upper bound only keeps a bad command from bloating the state.
	MinSigningKeyLen = 32
	MaxSigningKeyLen = 512

	DefaultHistoryLimit  = 50
	MaxHistoryLimit      = 200
	DefaultSyncConvs     = 50
	MaxSyncConvs         = 100
	DefaultSyncEvents    = 50
	MaxSyncEvents        = 200
	DefaultReadersLimit  = 50
	MaxReadersLimit      = 200
	DefaultDevicesLimit  = 100
	MaxDevicesLimit      = 500
	DefaultConvListLimit = 100
	MaxConvListLimit     = 500
	// MaxBlocksPerUser bounds a user's block list (OpBlock beyond it is
	// ErrCodeTooLarge): it is kept in memory, and block.list pages it.
	MaxBlocksPerUser      = 1000
	DefaultBlockListLimit = 100
	MaxBlockListLimit     = 1000

	// readersScanLimit bounds the members one Readers call examines, so a
	// page of a 100k-member group that few have read costs no more than
	// this; the page may then come back short (even empty) with More set.
	readersScanLimit = 10_000

	// SyncInfoMembers caps the member list in a ConvSync's Info: a page of
	// 100 large groups would otherwise carry millions of IDs. Larger groups
	// come with MemberCount only; Conversation(id) has the full list.
	SyncInfoMembers = 256

	// maxID keeps every ID below 2^53 so JavaScript clients read it exactly.
	maxID = 1<<53 - 1
)

// GroupAddPolicy is a user's setting of who may add them to groups.
type GroupAddPolicy uint8

const (
	// GroupAddUnchanged in an OpSetPrivacy leaves the setting as it is.
	GroupAddUnchanged GroupAddPolicy = iota
	// GroupAddEveryone: anyone the user has not blocked (the default).
	GroupAddEveryone
	// GroupAddContacts: only users who are already members of a
	// conversation with the user (a 1:1 or a group).
	GroupAddContacts
	// GroupAddNobody: nobody; the user creates groups or is added by no one.
	GroupAddNobody
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
	// EventDeleted: From deleted the message at Target for everyone; the
	// message stays at its seq with Deleted set and no body or attachments.
	EventDeleted EventKind = "deleted"

	// Signals: published after commit, never stored, Seq 0. They are not
	// conversation events: sync does not replay them (it reports the state
	// they announce instead) and clients must not dedupe them by seq.

	// EventReceipt: a user's receipt cursors in Conv moved to Delivered and
	// Read, reported by Device. Recipients: both members of a 1:1; in a
	// group only the reader (their other devices), and only when Read moved.
	EventReceipt EventKind = "receipt"
	// EventDeviceRevoked: Device of user From was revoked (Conv 0).
	// Recipients: that user. Every node closes the device's connections.
	EventDeviceRevoked EventKind = "device_revoked"
	// EventUserSuspended: user From was suspended (Conv 0). Recipients:
	// that user. Every node closes the user's connections.
	EventUserSuspended EventKind = "user_suspended"
)

// Event is one entry of a conversation: a message or a membership change.
// Each takes the conversation's next Seq. The signal kinds above use the
// same struct with Seq 0.
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
	// Attachments of a message, in the sender's order (media.go).
	Attachments []Attachment
	// Deleted: the message was deleted for everyone (by the deleted event
	// at Target); its body and attachments are gone.
	Deleted bool
	// Target: of a deleted event, the seq of the message deleted; of a
	// deleted message, the seq of the deleted event.
	Target uint64

	// System events.
	Users []uint64 // affected users (added, removed, left, made admin; the initial members for created)
	Name  string   // created (groups) and renamed
	Admin bool     // admin_changed: the new flag

	// Receipts: the reader's (From's) cursors after the change.
	Delivered uint64
	Read      uint64

	// Recipients is set only on published events: the members after the
	// change, plus the removed or departed user on their own removal event.
	// It is sorted, read-only and may be shared by several events (it is the
	// conversation's member list at that point, never modified afterwards).
	Recipients []uint64
}

// Publisher receives the events of each applied entry, on the Apply
// goroutine, after the entry's state is committed and visible to queries.
// It must not block for long (it holds up Apply: hand the events to another
// goroutine to deliver them) and must not call Apply.
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
	// LastSeen is unix ms (0: never recorded). HideLastSeen is the user's
	// privacy setting: the node shows LastSeen to nobody else while it is set.
	LastSeen     int64
	HideLastSeen bool
	// GroupAdd is who may add the user to groups (never GroupAddUnchanged).
	GroupAdd GroupAddPolicy
	// Notification settings: show the sender and text, do not disturb.
	Preview, DND bool
	// Deleted: the account was deleted (its Username is "").
	Deleted bool
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
	// FirstSeq is the first seq the conversation keeps: retention deleted
	// the events below it (1: none).
	FirstSeq uint64

	// For the asking user (Conversations, ConversationFor and Sync fill
	// these; Conversation, which has no asking user, leaves them zero):
	// their receipt cursors, and the number of messages from other users
	// above Read. A former member's Unread is 0.
	Delivered uint64
	Read      uint64
	Unread    uint64
	// MutedUntil: the asking user muted the conversation until then (unix
	// ms, or MuteForever; 0 if not muted).
	MutedUntil int64
	// 1:1 only: the other member's cursors.
	PeerDelivered uint64
	PeerRead      uint64
}

// ReceiptItem is one conversation's cursors in an OpReceipts: the highest
// seq the reporting device has received (Delivered) and shown (Read). Zero
// means "no report" for that cursor.
type ReceiptItem struct {
	Conv      uint64
	Delivered uint64
	Read      uint64
}

// ReadersPage answers Readers.
type ReadersPage struct {
	Users []uint64 // ascending
	// More: members after Next remain to be examined; call again with
	// after = Next. A page may be short, even empty, while More is set
	// (each call examines a bounded number of members).
	More bool
	Next uint64
}

// Direction of a History page relative to its anchor.
type Direction uint8

const (
	Before Direction = iota // seqs below the anchor, newest first
	After                   // seqs above the anchor, oldest first
)

// ConvSync is one changed conversation in a SyncPage.
type ConvSync struct {
	Info ConvInfo
	// ChangeIndex is the log index of the latest change the user sees in
	// the conversation, and the order of a sync page: the last event, or
	// a change of the user's receipt cursors (in a 1:1, of either
	// member's). It is above Info.LastIndex when only cursors changed, and
	// then Events may be empty.
	ChangeIndex uint64
	Events      []Event // index > since, ascending seq
	More        bool    // further events follow these: page them with History(After)
	// Gone is set when the user left or was removed: Events end with that
	// change and the conversation stops appearing in later syncs.
	Gone bool
}

// SyncQuery is one call of a catch-up (see Sync).
type SyncQuery struct {
	Since uint64 // the device's cursor: the same for every page of a catch-up
	// The page position: 0, 0 on the first page, then the previous page's
	// Next and NextConv.
	After, AfterConv uint64
	Convs            int // conversations per page (0: DefaultSyncConvs)
	Events           int // events per conversation (0: DefaultSyncEvents)
	Budget           Budget
}

// SyncPage answers Sync.
type SyncPage struct {
	Convs []ConvSync
	More  bool // more changed conversations: call Sync again with after = Next
	// Next is the after of the next call while More is set, and the
	// device's new cursor once it is not.
	Next uint64
	// NextConv is set when the page ended among the conversations whose
	// change index is Next (a page could not hold all of them): the next
	// call passes it as AfterConv, and gets the rest of them first.
	NextConv uint64
}
