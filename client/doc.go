// Package client is Parley's Go client SDK: a connection to a cluster that
// survives node failures, request/reply over the msgpack protocol of package
// wire, idempotent sends, and an ordered, deduplicated, gap-free stream of
// conversation events that resumes from a cursor.
//
//	c, err := client.Dial(ctx, client.Config{URLs: urls, Token: tok, Cursor: saved})
//	...
//	go func() {
//		for ev := range c.Events() { ... }
//	}()
//	ack, err := c.Send(ctx, conv, "hello")
//
// # Events
//
// The server delivers events at least once. The client keeps, per
// conversation, the highest seq it has delivered: a repeat is dropped, the
// next seq is delivered, and a jump is first filled from history. After a
// reconnection the client syncs from its cursor (the last index fully
// synced), pages every conversation to its end, delivers what was missed in
// order and then advances the cursor. Live events that arrive on a
// connection before its sync has completed are dropped (the sync returns
// them), so that a conversation first seen live cannot take a baseline that
// hides the events before it. The cursor moves only at the end of a sync, so
// a reconnection after a long session refetches that session's events, which
// the dedup then drops.
//
// # Goroutines
//
// A Client runs:
//
//   - one reader per connection (gws ReadLoop): decodes frames, hands each
//     reply to the request waiting for its id, queues events for the
//     dispatcher. It never blocks on the app: if the event queue is full,
//     the event is dropped and a resync is flagged, which refetches it.
//   - one dispatcher: the only goroutine that sends on Events(), owns the
//     per-conversation delivered seqs and writes the cursor; it runs syncs
//     and gap fills. When the app stops draining Events() only the
//     dispatcher waits.
//   - one supervisor: notices a dead connection, reconnects to the next URL
//     with jittered backoff and asks the dispatcher to resync.
//
// Requests are made from the caller's goroutine: it registers a waiter,
// writes the frame (writes are serialised per connection, each under a write
// deadline) and waits for the reply, the connection's end or its context.
// Client.Go makes a request without waiting: the reader hands the reply to
// a callback.
package client
