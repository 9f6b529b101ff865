// Package wire defines Parley's client protocol: the msgpack frames that travel
// inside WebSocket binary messages, their codec, the stable error codes and the
// limits. docs/PROTOCOL.md is the normative description; this package is its
// Go form. It imports nothing else from Parley.
//
// Every frame is a msgpack map with short string keys. Client frames are
// requests: they carry a type "t" and a client-chosen request id "id" that the
// server echoes in its reply. Server frames are replies ("ok" or "error",
// carrying the request id), events ("ev", durable conversation events with a
// per-conversation seq), and the "hello" sent once after the upgrade.
//
// Decoders ignore unknown keys so that either side can add optional fields
// without breaking the other.
//
// Client frames come from anyone, so the server decodes them with a
// hand-written decoder (decode.go) that trusts no length a frame declares
// beyond the bytes the frame has. Clients decode server frames with
// msgpack/v5 (Unmarshal), after the same bounds check.
package wire
