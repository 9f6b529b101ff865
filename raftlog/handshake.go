package raftlog

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
)

// The cluster-key handshake. When Config.ClusterKey is set, every internal
// connection starts with it, before the dialer's kind byte (transport.go),
// so that nothing reaches raft or the node's handlers from a peer that
// cannot prove it holds the key. Both sides prove it, without sending it:
//
//	acceptor -> dialer:   nonceA                              (32 random bytes)
//	dialer   -> acceptor: nonceD, HMAC(key, "parley-dial" || nonceA || nonceD)
//	acceptor -> dialer:   HMAC(key, "parley-accept" || nonceD || nonceA)
//
// Each side checks the other's MAC over its own fresh nonce, so a recorded
// answer cannot be replayed, and the two labels keep one side's answer from
// serving as the other's. It authenticates the connection's start only:
// the bytes after it are neither encrypted nor protected, so the internal
// port still belongs on a private network.

const (
	nonceLen = 32
	macLen   = sha256.Size

	// MinClusterKeyLen is the shortest ClusterKey Validate accepts.
	MinClusterKeyLen = 16
)

var (
	labelDial   = []byte("parley-dial")
	labelAccept = []byte("parley-accept")

	errBadProof = errors.New("raftlog: peer did not prove the cluster key")
)

// handshakeMAC is HMAC-SHA256(key, label || first || second).
func handshakeMAC(key, label, first, second []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(label)
	h.Write(first)
	h.Write(second)
	return h.Sum(nil)
}

// acceptHandshake runs the acceptor's side on rw. The caller sets the
// deadline and closes the connection on error.
func acceptHandshake(rw io.ReadWriter, key []byte) error {
	nonceA := make([]byte, nonceLen)
	rand.Read(nonceA) // never fails: crypto/rand crashes the program instead
	if _, err := rw.Write(nonceA); err != nil {
		return err
	}
	answer := make([]byte, nonceLen+macLen) // nonceD, the dialer's MAC
	if _, err := io.ReadFull(rw, answer); err != nil {
		return err
	}
	nonceD, macD := answer[:nonceLen], answer[nonceLen:]
	if !hmac.Equal(macD, handshakeMAC(key, labelDial, nonceA, nonceD)) {
		return errBadProof
	}
	_, err := rw.Write(handshakeMAC(key, labelAccept, nonceD, nonceA))
	return err
}

// dialHandshake runs the dialer's side on rw. The caller sets the deadline
// and closes the connection on error. Errors that point at a key mismatch
// wrap errBadProof; the others (no nonce: the acceptor is down, closing,
// isolated or has no key) are plain I/O errors.
func dialHandshake(rw io.ReadWriter, key []byte) error {
	nonceA := make([]byte, nonceLen)
	if _, err := io.ReadFull(rw, nonceA); err != nil {
		return err
	}
	answer := make([]byte, nonceLen, nonceLen+macLen)
	rand.Read(answer) // nonceD
	answer = append(answer, handshakeMAC(key, labelDial, nonceA, answer)...)
	if _, err := rw.Write(answer); err != nil {
		return err
	}
	macA := make([]byte, macLen)
	if _, err := io.ReadFull(rw, macA); err != nil {
		// An acceptor with another key closes here, having checked ours.
		return fmt.Errorf("%w: no answer to our proof, another key? (%w)", errBadProof, err)
	}
	if !hmac.Equal(macA, handshakeMAC(key, labelAccept, answer[:nonceLen], nonceA)) {
		return errBadProof
	}
	return nil
}
