// Package netpoll is Parley's WebSocket server: a gnet event loop that does
// the HTTP upgrade and RFC 6455 framing itself, with no goroutine per
// connection. It knows nothing of chat or Raft; a Handler receives
// connections and whole messages, and anyone may Send prepared frames.
//
// # Threads of control
//
//   - gnet's event loops (Config.NumEventLoops). Each owns its connections:
//     their phase, read decoder, handshake buffer and heartbeat timer, and
//     its own timing wheel. All Handler methods run here, so they must not
//     block.
//   - The server's accept loop (accept.go), one goroutine, accepts sockets
//     and hands them to the loops (gnet.Client.EnrollContext). gnet's own
//     acceptor is not used: it stops the whole engine on the first EMFILE.
//     Here accept errors are retried with backoff, and a socket arriving
//     while too many handshakes are pending is answered 503 and closed.
//   - gnet's ticker calls OnTick every TickInterval; it only queues a sweep
//     of the timing wheel on each loop (gnet has no per-connection timers).
//   - Senders: any goroutine may call Conn.Send and Conn.Close. They append
//     to the connection's queue under its mutex and put the connection on
//     its loop's dirty list; the first sender after a flush wakes the loop
//     with one task that writes every dirty connection, so a broadcast to
//     thousands of connections costs one wakeup per loop, not one per frame.
//     Server.Hold defers those wakeups for a moment, so that frames queued
//     by several goroutines (an ack and an event for the same connection)
//     leave in one write.
//
// # Memory per connection
//
// An idle upgraded connection holds its Conn (240 bytes) and gnet's
// connection; read, reassembly and handshake buffers come from pools only
// while a frame or request is incomplete, the send queue only from a Send
// to the next flush, and gnet's inbound buffer is never used because every
// read is consumed whole. The loop writes the queued frames with one writev
// per connection per flush, straight to the socket (writev.go); only what
// the socket refuses waits in gnet's outbound buffer, which together with
// the send queue is bounded by Config.SendQueueBytes.
//
// # Closing
//
// A server-initiated close (Conn.Close, protocol error, idle timeout, slow
// consumer) sends a close frame and waits up to CloseTimeout for the peer's
// close frame before closing TCP, so the peer reads the close frame instead
// of a reset. A peer-initiated close is echoed and TCP closed at once.
// Handler.OnClose runs exactly once per connection that reached OnOpen.
//
// # Caps
//
// Config.MaxConnections (503), MaxConnectionsPerIP and MaxConnectionsPerKey
// (429) are checked when the upgrade request is complete, before the 101;
// MaxPendingHandshakes bounds the sockets still in their handshake. The
// slots a connection takes are given back once, when its socket closes
// (limits.go). Alive and Ready report a server that stopped taking
// connections (accept.go).
package netpoll
