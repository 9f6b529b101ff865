// Package media is the I/O-free core of chat attachments: what the server
// needs to accept, store, replicate and serve a file, with none of the
// HTTP, Raft or Pebble around it (those are the server's).
//
//   - Sniff names the content type from the bytes, never from the client;
//     Allowed is the allow-list of what the server accepts.
//   - Probe reads an image's dimensions from its header and refuses
//     decompression bombs (ErrImageTooLarge) before anything is decoded;
//     Thumbnail decodes only what Probe passed and scales it.
//   - Chunker hashes an upload as it streams in and cuts it into chunks of
//     a fixed size, handed one by one to a callback (a Raft proposal); the
//     SHA-256 is the media ID, whose text form ParseID checks.
//   - ChunkReader is an io.ReadSeeker over the stored chunks, for
//     net/http.ServeContent, which does Range, If-Range and, given an ETag,
//     If-None-Match.
//
// Everything here is deterministic and reads no clock, so the same bytes
// give the same ID and chunks on every node.
//
// Serving advice for the server: send "X-Content-Type-Options: nosniff"
// with the type Sniff named, and "Content-Disposition: attachment" for
// anything that is not an image, audio or video, so that no upload is ever
// rendered as a page of the chat's origin.
package media
