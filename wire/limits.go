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

	// MaxSafeInteger is 2^53-1: every ID and counter in the protocol stays
	// below it, so JavaScript clients read them exactly as numbers.
	MaxSafeInteger = 1<<53 - 1
)
