package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math"

	"github.com/vmihailenco/msgpack/v5"
)

// Op names the operation of a Command.
type Op uint8

const (
	opInvalid Op = iota

	OpRegister     // Username, PasswordHash -> Result.User
	OpAddDevice    // User, DeviceName, MaxDevices, Ts -> Result.Device
	OpRevokeDevice // User, Device -> Result.Device
	OpOpenDirect   // User, Peer -> Result.Conv
	OpCreateGroup  // User, Name, Members -> Result.Conv
	OpAddMembers   // User, Conv, Members (admins only)
	OpRemoveMember // User, Conv, Member (admins only)
	OpLeave        // User, Conv
	OpSetAdmin     // User, Conv, Member, Admin (admins only)
	OpRename       // User, Conv, Name
	OpSend         // User, Device, Conv, ClientMsgID, Body, ReplyTo -> Result.Seq
	OpReceipts     // User, Device, Items -> Result.ItemErrors
	OpLastSeen     // User, Ts
	OpSetPrivacy   // User, HideLastSeen
	// OpSetSigningKey: SigningKey. The cluster's device-token signing key,
	// submitted by the nodes themselves (never by a client). The first one
	// applied stays for good; later ones succeed without changing it.
	OpSetSigningKey
	// OpExpireSends: Ts. Forgets the dedup records of sends older than Ts
	// (unix ms, capped at the entry's time), examining at most
	// ExpireSendsBudget records from where the previous one stopped.
	// Submitted by the leader (never by a client) -> Result.Expired.
	OpExpireSends
	OpBlock   // User, Peer: User blocks Peer (at most MaxBlocksPerUser)
	OpUnblock // User, Peer

	// Push notifications (engine/push.go).
	OpPushSet      // User, Device, Push: the device's push target
	OpPushClear    // User, Device, Push.Token: clears the target (only if it still has that token, when given)
	OpNotifySet    // User, Preview, DND: the user's notification settings
	OpMute         // User, Conv, Until: no notifications from Conv until then (0: unmute; -1: for good)
	OpPushProgress // Progress: every message up to this index was handled by the notifier (leader only)

	// Media attachments (engine/media.go).
	OpMediaChunk  // User, Media.{Upload, Index, Data, Quota}: one chunk of an upload
	OpMediaCommit // User, Media.{Upload, Index (chunks), Size, ID, Mime, Width, Height, Thumb, ThumbMime, Name}
	// OpMediaExpire: Ts. Collects uploads never committed and objects no
	// message references, older than Ts, a budget of records from where
	// the previous one stopped. Submitted by the leader -> Result.Expired.
	// With User and Media.Upload: abandons that upload at once (the node
	// that took it gave up on it).
	OpMediaExpire

	// OpDeleteMessage: User, Conv, Seq. Deletes a message for everyone
	// (engine/delete.go) -> Result.Seq of the deleted event.
	OpDeleteMessage

	// User administration (engine/useradmin.go), proposed by the admin API
	// only, each with Audit: who did it, written to the audit log.
	OpSuspend       // User, Admin: suspend (true) or unsuspend the user
	OpResetPassword // User, PasswordHash: a new password; every device is revoked
	OpDeleteUser    // User: delete the account (engine/useradmin.go)

	// OpExpireMessages: Ts. Deletes the events older than Ts, oldest
	// first in each conversation, a budget of events per command resuming
	// where the previous one stopped (engine/retention.go). Submitted by
	// the leader -> Result.Expired.
	OpExpireMessages

	// OpAudit: Audit, Name. Writes an administrative action that is not a
	// command of its own (a change of the cluster's membership, a backup)
	// to the audit log: Name says what was done.
	OpAudit

	opCount
)

var opNames = [opCount]string{
	opInvalid: "invalid", OpRegister: "register", OpAddDevice: "add_device", OpRevokeDevice: "revoke_device",
	OpOpenDirect: "open_direct", OpCreateGroup: "create_group", OpAddMembers: "add_members",
	OpRemoveMember: "remove_member", OpLeave: "leave", OpSetAdmin: "set_admin", OpRename: "rename",
	OpSend: "send", OpReceipts: "receipts", OpLastSeen: "last_seen", OpSetPrivacy: "set_privacy",
	OpSetSigningKey: "set_signing_key", OpExpireSends: "expire_sends",
	OpBlock: "block", OpUnblock: "unblock",
	OpPushSet: "push_set", OpPushClear: "push_clear", OpNotifySet: "notify_set", OpMute: "mute",
	OpPushProgress: "push_progress",
	OpMediaChunk:   "media_chunk", OpMediaCommit: "media_commit", OpMediaExpire: "media_expire",
	OpDeleteMessage: "delete_message",
	OpSuspend:       "suspend", OpResetPassword: "reset_password", OpDeleteUser: "delete_user",
	OpExpireMessages: "expire_messages",
	OpAudit:          "audit",
}

func (o Op) String() string {
	if o < opCount {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Command is one state change proposed through Raft. The node fills in the
// acting User (and Device) from the authenticated session; every other field
// comes from the client and is validated by Apply. Only the fields listed for
// an Op are read.
type Command struct {
	Op           Op
	User         uint64
	Device       uint64
	Conv         uint64
	Peer         uint64
	Member       uint64
	Members      []uint64
	Admin        bool
	Username     string
	PasswordHash []byte // hashed by the caller; opaque here
	DeviceName   string
	Name         string
	ClientMsgID  string
	Body         string
	ReplyTo      uint64
	Items        []ReceiptItem  // OpReceipts: at most MaxReceiptItems
	Ts           int64          // OpLastSeen: when the user was last seen, unix ms
	HideLastSeen bool           // OpSetPrivacy
	GroupAdd     GroupAddPolicy // OpSetPrivacy: who may add User to groups; 0 leaves it as it is
	SigningKey   []byte         // OpSetSigningKey: MinSigningKeyLen to MaxSigningKeyLen bytes
	// OpAddDevice: with Ts set, the user's devices created before Ts (unix
	// ms: their tokens have expired) are revoked; then the oldest until at
	// most MaxDevices are active, the new one included (0: no cap).
	MaxDevices uint64
	// Media: the media commands' fields and a send's attachments
	// (engine/media.go).
	Media *MediaArgs
	// OpPushSet: the device's push target (see PushTarget); OpPushClear
	// reads PushToken (and PushEndpoint for webpush) to clear only that one.
	PushProvider string
	PushToken    string
	PushEndpoint string
	PushP256dh   string
	PushAuth     string
	Preview      bool   // OpNotifySet: notifications show the sender and text
	DND          bool   // OpNotifySet: do not disturb (no notifications at all)
	Until        int64  // OpMute: unix ms; 0 unmutes, MuteForever mutes for good
	Progress     uint64 // OpPushProgress: the log index handled up to
	Seq          uint64 // OpDeleteMessage: the message
	// Audit, on a command of the admin API: who asked (the operator and
	// their address); the command's success is written to the audit log
	// with it.
	Audit string
}

// commandVersion is the first byte of every encoded command. A replica that
// meets a version it does not know answers ErrCodeInvalid for that command,
// the same on every replica, instead of guessing at its meaning.
const commandVersion byte = 1

// Keys of the msgpack map of a command. Short, since a command is encoded
// into every Raft entry and sent to every replica.
const (
	keyOp           = "op"
	keyUser         = "u"
	keyDevice       = "d"
	keyConv         = "c"
	keyPeer         = "p"
	keyMember       = "m"
	keyMembers      = "ms"
	keyAdmin        = "a"
	keyUsername     = "un"
	keyPasswordHash = "ph"
	keyDeviceName   = "dn"
	keyName         = "n"
	keyClientMsgID  = "cm"
	keyBody         = "b"
	keyReplyTo      = "r"
	keyItems        = "ri" // [[conv, delivered, read], ...]
	keyTs           = "ts"
	keyHideLastSeen = "hl"
	keySigningKey   = "sk"
	keyMaxDevices   = "md"
	keyGroupAdd     = "ga"
	keyMedia        = "mx" // a map: see encodeMedia
	keyPushProvider = "pp"
	keyPushToken    = "pt"
	keyPushEndpoint = "pe"
	keyPushP256dh   = "pk"
	keyPushAuth     = "pa"
	keyPreview      = "pv"
	keyDND          = "nd"
	keyUntil        = "ut"
	keyProgress     = "pg"
	keySeq          = "sq"
	keyAudit        = "au"
)

// ErrBadCommand is returned (wrapped) by DecodeCommand for malformed input.
var ErrBadCommand = errors.New("engine: bad command")

// ErrNewerCommand is returned (wrapped) by DecodeCommand for a command of
// a newer build: a later version byte, or an op this build does not know.
// Unlike a malformed command, which every replica of a version refuses
// alike, it would be applied by the newer replicas and refused by this
// one: applying around it would fork the state, so Apply stops instead
// (Engine.SetIncompatible).
var ErrNewerCommand = errors.New("engine: command of a newer version")

// EncodeCommand encodes c for a Raft entry: a version byte, then a msgpack
// map holding the fields that are not zero.
//
// The codec is written out by hand rather than left to msgpack's reflection:
// it is on the Apply path of every message, and the generic slice decoder
// preallocates whatever length the input claims.
func EncodeCommand(c *Command) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(48 + len(c.Username) + len(c.PasswordHash) + len(c.SigningKey) + len(c.DeviceName) + len(c.Name) +
		len(c.ClientMsgID) + len(c.Body) + 9*len(c.Members) + 28*len(c.Items) +
		c.Media.size() +
		len(c.PushToken) + len(c.PushEndpoint) + len(c.PushP256dh) + len(c.PushAuth))
	buf.WriteByte(commandVersion)
	enc := msgpack.GetEncoder()
	defer msgpack.PutEncoder(enc)
	enc.Reset(&buf)
	if err := encodeCommand(enc, c); err != nil {
		return nil, fmt.Errorf("engine: encode command: %w", err)
	}
	return buf.Bytes(), nil
}

func encodeCommand(enc *msgpack.Encoder, c *Command) error {
	n := 1
	count := func(nonZero bool) {
		if nonZero {
			n++
		}
	}
	count(c.User != 0)
	count(c.Device != 0)
	count(c.Conv != 0)
	count(c.Peer != 0)
	count(c.Member != 0)
	count(len(c.Members) != 0)
	count(c.Admin)
	count(c.Username != "")
	count(len(c.PasswordHash) != 0)
	count(c.DeviceName != "")
	count(c.Name != "")
	count(c.ClientMsgID != "")
	count(c.Body != "")
	count(c.ReplyTo != 0)
	count(len(c.Items) != 0)
	count(c.Ts != 0)
	count(c.HideLastSeen)
	count(len(c.SigningKey) != 0)
	count(c.MaxDevices != 0)
	count(c.GroupAdd != 0)
	count(!c.Media.isZero())
	count(c.PushProvider != "")
	count(c.PushToken != "")
	count(c.PushEndpoint != "")
	count(c.PushP256dh != "")
	count(c.PushAuth != "")
	count(c.Preview)
	count(c.DND)
	count(c.Until != 0)
	count(c.Progress != 0)
	count(c.Seq != 0)
	count(c.Audit != "")

	var err error
	put := func(key string, f func() error) {
		if err == nil {
			if err = enc.EncodeString(key); err == nil {
				err = f()
			}
		}
	}
	putUint := func(key string, v uint64) {
		if v != 0 {
			put(key, func() error { return enc.EncodeUint(v) })
		}
	}
	putStr := func(key, v string) {
		if v != "" {
			put(key, func() error { return enc.EncodeString(v) })
		}
	}
	if err := enc.EncodeMapLen(n); err != nil {
		return err
	}
	put(keyOp, func() error { return enc.EncodeUint(uint64(c.Op)) })
	putUint(keyUser, c.User)
	putUint(keyDevice, c.Device)
	putUint(keyConv, c.Conv)
	putUint(keyPeer, c.Peer)
	putUint(keyMember, c.Member)
	if len(c.Members) != 0 {
		put(keyMembers, func() error {
			if err := enc.EncodeArrayLen(len(c.Members)); err != nil {
				return err
			}
			for _, m := range c.Members {
				if err := enc.EncodeUint(m); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if c.Admin {
		put(keyAdmin, func() error { return enc.EncodeBool(true) })
	}
	putStr(keyUsername, c.Username)
	if len(c.PasswordHash) != 0 {
		put(keyPasswordHash, func() error { return enc.EncodeBytes(c.PasswordHash) })
	}
	putStr(keyDeviceName, c.DeviceName)
	putStr(keyName, c.Name)
	putStr(keyClientMsgID, c.ClientMsgID)
	putStr(keyBody, c.Body)
	putUint(keyReplyTo, c.ReplyTo)
	if len(c.Items) != 0 {
		put(keyItems, func() error { return encodeItems(enc, c.Items) })
	}
	if c.Ts != 0 {
		put(keyTs, func() error { return enc.EncodeInt(c.Ts) })
	}
	if c.HideLastSeen {
		put(keyHideLastSeen, func() error { return enc.EncodeBool(true) })
	}
	if len(c.SigningKey) != 0 {
		put(keySigningKey, func() error { return enc.EncodeBytes(c.SigningKey) })
	}
	putUint(keyMaxDevices, c.MaxDevices)
	putUint(keyGroupAdd, uint64(c.GroupAdd))
	if !c.Media.isZero() {
		put(keyMedia, func() error { return encodeMedia(enc, c.Media) })
	}
	putStr(keyPushProvider, c.PushProvider)
	putStr(keyPushToken, c.PushToken)
	putStr(keyPushEndpoint, c.PushEndpoint)
	putStr(keyPushP256dh, c.PushP256dh)
	putStr(keyPushAuth, c.PushAuth)
	if c.Preview {
		put(keyPreview, func() error { return enc.EncodeBool(true) })
	}
	if c.DND {
		put(keyDND, func() error { return enc.EncodeBool(true) })
	}
	if c.Until != 0 {
		put(keyUntil, func() error { return enc.EncodeInt(c.Until) })
	}
	putUint(keyProgress, c.Progress)
	putUint(keySeq, c.Seq)
	putStr(keyAudit, c.Audit)
	return err
}

// encodeItems writes receipt items as an array of [conv, delivered, read]
// arrays. Any number is encoded; DecodeCommand refuses more than
// MaxReceiptItems, so the proposer must split longer lists.
func encodeItems(enc *msgpack.Encoder, items []ReceiptItem) error {
	if err := enc.EncodeArrayLen(len(items)); err != nil {
		return err
	}
	for _, it := range items {
		if err := enc.EncodeArrayLen(3); err != nil {
			return err
		}
		for _, v := range [3]uint64{it.Conv, it.Delivered, it.Read} {
			if err := enc.EncodeUint(v); err != nil {
				return err
			}
		}
	}
	return nil
}

// DecodeCommand decodes what EncodeCommand produced into c. Nothing in c
// aliases b. Unknown keys are skipped (a newer proposer may add fields);
// empty lists and byte strings decode as nil.
func DecodeCommand(b []byte, c *Command) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: empty", ErrBadCommand)
	}
	switch {
	case b[0] > commandVersion:
		return fmt.Errorf("%w: %w: command version %d, this build reads %d", ErrBadCommand, ErrNewerCommand, b[0], commandVersion)
	case b[0] != commandVersion:
		return fmt.Errorf("%w: unknown version %d", ErrBadCommand, b[0])
	}
	r := bytes.NewReader(b[1:])
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(r)
	*c = Command{}
	if err := decodeCommand(dec, r, c); err != nil {
		return fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	if r.Len() != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrBadCommand, r.Len())
	}
	if c.Op >= opCount {
		return fmt.Errorf("%w: %w: op %d, this build knows ops below %d", ErrBadCommand, ErrNewerCommand, c.Op, opCount)
	}
	return nil
}

// decodeCommand reads the map. r is the decoder's input: its remaining
// length bounds the size of a list before anything is allocated for it.
func decodeCommand(dec *msgpack.Decoder, r *bytes.Reader, c *Command) error {
	n, err := dec.DecodeMapLen()
	if err != nil {
		return err
	}
	if n < 0 {
		return errors.New("nil map")
	}
	for range n {
		key, err := dec.DecodeString()
		if err != nil {
			return err
		}
		switch key {
		case keyOp:
			var op uint64
			// Not DecodeUint8: it truncates, and 257 must not read as 1.
			if op, err = dec.DecodeUint64(); err == nil && op > math.MaxUint8 {
				err = fmt.Errorf("op %d out of range", op)
			}
			c.Op = Op(op)
		case keyUser:
			c.User, err = dec.DecodeUint64()
		case keyDevice:
			c.Device, err = dec.DecodeUint64()
		case keyConv:
			c.Conv, err = dec.DecodeUint64()
		case keyPeer:
			c.Peer, err = dec.DecodeUint64()
		case keyMember:
			c.Member, err = dec.DecodeUint64()
		case keyMembers:
			c.Members, err = decodeUint64s(dec, r)
		case keyAdmin:
			c.Admin, err = dec.DecodeBool()
		case keyUsername:
			c.Username, err = dec.DecodeString()
		case keyPasswordHash:
			c.PasswordHash, err = dec.DecodeBytes()
			if len(c.PasswordHash) == 0 {
				c.PasswordHash = nil
			}
		case keyDeviceName:
			c.DeviceName, err = dec.DecodeString()
		case keyName:
			c.Name, err = dec.DecodeString()
		case keyClientMsgID:
			c.ClientMsgID, err = dec.DecodeString()
		case keyBody:
			c.Body, err = dec.DecodeString()
		case keyReplyTo:
			c.ReplyTo, err = dec.DecodeUint64()
		case keyItems:
			c.Items, err = decodeItems(dec, r)
		case keyTs:
			c.Ts, err = dec.DecodeInt64()
		case keyHideLastSeen:
			c.HideLastSeen, err = dec.DecodeBool()
		case keyMaxDevices:
			c.MaxDevices, err = dec.DecodeUint64()
		case keySigningKey:
			c.SigningKey, err = dec.DecodeBytes()
			if len(c.SigningKey) == 0 {
				c.SigningKey = nil
			}
		case keyGroupAdd:
			var v uint64
			if v, err = dec.DecodeUint64(); err == nil && v > math.MaxUint8 {
				err = fmt.Errorf("group_add %d out of range", v)
			}
			c.GroupAdd = GroupAddPolicy(v)
		case keyMedia:
			c.Media = new(MediaArgs)
			if err = decodeMedia(dec, r, c.Media); err == nil && c.Media.isZero() {
				c.Media = nil // as the encoder, which writes no empty map, has it
			}
		case keyPushProvider:
			c.PushProvider, err = dec.DecodeString()
		case keyPushToken:
			c.PushToken, err = dec.DecodeString()
		case keyPushEndpoint:
			c.PushEndpoint, err = dec.DecodeString()
		case keyPushP256dh:
			c.PushP256dh, err = dec.DecodeString()
		case keyPushAuth:
			c.PushAuth, err = dec.DecodeString()
		case keyPreview:
			c.Preview, err = dec.DecodeBool()
		case keyDND:
			c.DND, err = dec.DecodeBool()
		case keyUntil:
			c.Until, err = dec.DecodeInt64()
		case keyAudit:
			c.Audit, err = dec.DecodeString()
		case keySeq:
			c.Seq, err = dec.DecodeUint64()
		case keyProgress:
			c.Progress, err = dec.DecodeUint64()
		default:
			err = dec.Skip()
		}
		if err != nil {
			return fmt.Errorf("field %q: %w", key, err)
		}
	}
	return nil
}

func decodeUint64s(dec *msgpack.Decoder, r *bytes.Reader) ([]uint64, error) {
	n, err := dec.DecodeArrayLen()
	if err != nil || n <= 0 {
		return nil, err
	}
	if n > r.Len() { // every element takes at least one byte
		return nil, fmt.Errorf("list of %d elements in %d bytes", n, r.Len())
	}
	out := make([]uint64, n)
	for i := range out {
		if out[i], err = dec.DecodeUint64(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// decodeItems reads what encodeItems wrote: at most MaxReceiptItems items,
// each an array of exactly three integers.
func decodeItems(dec *msgpack.Decoder, r *bytes.Reader) ([]ReceiptItem, error) {
	n, err := dec.DecodeArrayLen()
	if err != nil || n <= 0 {
		return nil, err
	}
	if n > MaxReceiptItems {
		return nil, fmt.Errorf("%d receipt items, at most %d", n, MaxReceiptItems)
	}
	if 4*n > r.Len() { // every item takes at least four bytes
		return nil, fmt.Errorf("list of %d items in %d bytes", n, r.Len())
	}
	out := make([]ReceiptItem, n)
	for i := range out {
		m, err := dec.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		if m != 3 {
			return nil, fmt.Errorf("receipt item of %d fields, want 3", m)
		}
		it := &out[i]
		for _, dst := range [3]*uint64{&it.Conv, &it.Delivered, &it.Read} {
			if *dst, err = dec.DecodeUint64(); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// ErrCode is a stable error code in a Result or a query answer. The values
// are the protocol's codes (package wire), so the node passes them through.
type ErrCode string

const (
	ErrCodeNone          ErrCode = ""
	ErrCodeInvalid       ErrCode = "invalid"        // a field is missing or malformed
	ErrCodeTooLarge      ErrCode = "too_large"      // a body, name or list over its limit
	ErrCodeForbidden     ErrCode = "forbidden"      // not allowed (not an admin, not a group, revoked device)
	ErrCodeNotMember     ErrCode = "not_member"     // the user is not a member of the conversation
	ErrCodeNotFound      ErrCode = "not_found"      // no such user, device, conversation or message
	ErrCodeConflict      ErrCode = "conflict"       // contradicts current state (1:1 with yourself, cmid reused for another conversation)
	ErrCodeUsernameTaken ErrCode = "username_taken" // registration with a name in use
	ErrCodeInternal      ErrCode = "internal"       // a query could not read local state
)

// Result is what Apply returns for one command, as a value: a command that
// fails changes nothing, and its error travels back to the proposer here.
type Result struct {
	Err     ErrCode
	Message string // human-readable detail for Err

	User   uint64 // OpRegister
	Device uint64 // OpAddDevice, OpRevokeDevice
	Conv   uint64 // conversation operations and OpSend

	// The event the command appended (OpSend: the message; membership
	// operations: their system event; zero when nothing was appended).
	Seq   uint64
	Ts    int64
	Index uint64

	// Duplicate is set when an OpSend repeated a (user, device,
	// client_msg_id) already applied: Seq, Ts and Index are the original's.
	Duplicate bool

	// ItemErrors is OpReceipts' outcome per item, aligned with
	// Command.Items: ErrCodeNone where the item applied (or was stale, a
	// no-op), else why it did not. Nil when no item failed. The command
	// itself succeeds whatever its items do.
	ItemErrors []ErrCode

	// Expired is the number of dedup records OpExpireSends deleted.
	Expired int
}

func failure(code ErrCode, msg string) *Result { return &Result{Err: code, Message: msg} }
