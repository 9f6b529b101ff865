package wire

// Limits of the protocol. A frame over a limit is refused with CodeTooLarge
// (or the WebSocket close code 1009 for a message over MaxFrameBytes); the
// server sends the values it enforces in the hello frame.
const (
	MaxFrameBytes       = 64 << 10 // one WebSocket message (one frame of this protocol)
	MaxBodyBytes        = 16 << 10 // a message body, UTF-8
	MaxClientMsgIDBytes = 64
	MaxNameBytes        = 64 // group name
	MaxUsersPerRequest  = 1000
	MaxHistoryLimit     = 200 // events per history page
	DefaultHistoryLimit = 50
	MaxSyncConvs        = 100 // conversations per sync page
	DefaultSyncConvs    = 50
	SyncEventsPerConv   = 50  // events per conversation in a sync page; more via history
	MaxPresenceWatch    = 256 // users one connection may watch (presence.sub)
	// A push target's fields (push.set).
	MaxPushTokenBytes    = 4096
	MaxPushEndpointBytes = 2048
	MaxPushKeyBytes      = 256

	// MaxReplyBytes bounds the encoded size of a paged reply (history,
	// sync, conv.list, conv.get members, device.list): a page stops before
	// the next item would cross it, so it always fits well inside a
	// connection's send queue; the server uses min(MaxReplyBytes, a quarter
	// of its send queue) and says which in hello (max_reply). A page holds
	// at least one item even if that alone is larger, which a single
	// event never is (a 16 KiB body plus under 10 KiB of fields).
	MaxReplyBytes = 256 << 10
	// MaxReadsInFlight is how many expensive reads (history, sync,
	// conv.get, conv.list, user.get, read.get, device.list) one connection
	// may have waiting for a reply; more are answered busy at once.
	MaxReadsInFlight     = 2
	DefaultConvListLimit = 100 // conversations per conv.list page
	MaxConvListLimit     = 500
	// MaxMembersPage bounds the members listed in one ConvInfo of a reply
	// (conv.get pages the rest); ConvInfos in sync and conv.list pages list
	// members only for groups of up to SyncInfoMembers.
	MaxMembersPage  = 10_000
	SyncInfoMembers = 256

	MaxBlocksPerUser      = 1000 // users one user may block
	DefaultBlockListLimit = 100  // blocked users per block.list page
	MaxBlockListLimit     = 1000

	// Media attachments (docs/PROTOCOL.md, Media).
	MaxAttachments         = 10  // attachments per message
	MaxAttachmentNameBytes = 255 // a file name, UTF-8

	// MaxSafeInteger is 2^53-1: every ID and counter in the protocol stays
	// below it, so JavaScript clients read them exactly as numbers.
	MaxSafeInteger = 1<<53 - 1
)
