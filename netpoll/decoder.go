package netpoll

import (
	"encoding/binary"
	"unicode/utf8"
)

// frameSink receives what the decoder finds. Payloads are valid only during
// the call. Returning false stops decoding: the rest of the input is dropped.
type frameSink interface {
	// onMessage gets a complete text (valid UTF-8) or binary message.
	onMessage(binary bool, payload []byte) bool
	// onControl gets a ping, a pong, or a close frame whose payload has been
	// validated (empty, or a valid code and a UTF-8 reason).
	onControl(op byte, payload []byte) bool
}

// decoder turns client bytes, delivered in arbitrary pieces as an event loop
// reads them, into messages and control frames, enforcing RFC 6455.
//
// A frame that lies whole inside the input is unmasked in place and handed
// out without copying, so the caller must own the input bytes and must not
// need them afterwards. Only a frame cut by the end of the input is copied
// (into carry), and only a fragmented message is reassembled (into msg);
// both buffers are pooled and released as soon as they are done, so an idle
// connection's decoder holds no memory.
//
// A decoder is owned by one goroutine (the connection's event loop). After
// it returns an error it must not be fed again.
type decoder struct {
	carry     *buffer // a frame cut by the end of the last input; nil when none
	msg       *buffer // fragments of the message in progress; non-nil iff inMsg
	inMsg     bool
	msgBinary bool
}

// feed decodes data. limit bounds a reassembled message. It returns the number
// of complete frames seen and, for a protocol violation, the close code and
// reason to fail the connection with.
func (d *decoder) feed(data []byte, limit int, sink frameSink) (frames int, err *CloseError) {
	// First complete a frame carried over from the previous input, copying
	// only the bytes that frame still needs.
	for d.carry != nil {
		h, need, perr := parseHeader(d.carry.b)
		if perr != nil {
			return frames, perr
		}
		if need == 0 {
			if perr := d.checkHeader(h, limit); perr != nil {
				return frames, perr
			}
			need = h.size + int(h.length)
		}
		if len(d.carry.b) < need {
			if len(data) == 0 {
				return frames, nil
			}
			take := min(need-len(d.carry.b), len(data))
			d.carry = d.carry.grow(take)
			d.carry.b = append(d.carry.b, data[:take]...)
			data = data[take:]
			if len(d.carry.b) < need {
				return frames, nil // data is exhausted
			}
		}
		if h.size == 0 {
			continue // the header just became complete; parse it again
		}
		frame := d.carry
		d.carry = nil
		frames++
		cont, perr := d.frame(h, frame.b[h.size:need], limit, sink)
		putBuffer(frame)
		if perr != nil || !cont {
			return frames, perr
		}
	}
	for len(data) > 0 {
		h, need, perr := parseHeader(data)
		if perr != nil {
			return frames, perr
		}
		if need == 0 {
			if perr := d.checkHeader(h, limit); perr != nil {
				return frames, perr
			}
			need = h.size + int(h.length)
		}
		if len(data) < need {
			hint := need
			if h.size == 0 {
				hint = maxFrameHeader
			}
			d.carry = getBuffer(hint)
			d.carry.b = append(d.carry.b, data...)
			return frames, nil
		}
		frames++
		cont, perr := d.frame(h, data[h.size:need], limit, sink)
		if perr != nil || !cont {
			return frames, perr
		}
		data = data[need:]
	}
	return frames, nil
}

// checkHeader applies the rules that need the message state, before any
// payload byte is buffered: continuation only inside a message, no new
// message inside one, and the size limit on the reassembled message.
func (d *decoder) checkHeader(h frameHeader, limit int) *CloseError {
	switch h.op {
	case opContinuation:
		if !d.inMsg {
			return protocolError(CloseProtocolError, "continuation frame without a message")
		}
		if uint64(len(d.msg.b))+h.length > uint64(limit) {
			return protocolError(CloseMessageTooBig, "message too big")
		}
	case opText, opBinary:
		if d.inMsg {
			return protocolError(CloseProtocolError, "new message inside a fragmented message")
		}
		if h.length > uint64(limit) {
			return protocolError(CloseMessageTooBig, "message too big")
		}
	}
	return nil
}

// frame handles one complete frame whose header passed checkHeader.
func (d *decoder) frame(h frameHeader, payload []byte, limit int, sink frameSink) (bool, *CloseError) {
	maskBytes(h.key, payload)
	switch h.op {
	case opText, opBinary:
		if h.fin {
			if h.op == opText && !utf8.Valid(payload) {
				return false, protocolError(CloseInvalidPayload, "text message is not UTF-8")
			}
			return sink.onMessage(h.op == opBinary, payload), nil
		}
		d.inMsg, d.msgBinary = true, h.op == opBinary
		d.msg = getBuffer(min(2*len(payload), limit))
		d.msg.b = append(d.msg.b, payload...)
		return true, nil
	case opContinuation:
		d.msg = d.msg.grow(len(payload))
		d.msg.b = append(d.msg.b, payload...)
		if !h.fin {
			return true, nil
		}
		msg := d.msg
		d.msg, d.inMsg = nil, false
		defer putBuffer(msg)
		if !d.msgBinary && !utf8.Valid(msg.b) {
			return false, protocolError(CloseInvalidPayload, "text message is not UTF-8")
		}
		return sink.onMessage(d.msgBinary, msg.b), nil
	case opClose:
		switch {
		case len(payload) == 1:
			return false, protocolError(CloseProtocolError, "close payload of one byte")
		case len(payload) >= 2:
			if !validCloseCode(binary.BigEndian.Uint16(payload)) {
				return false, protocolError(CloseProtocolError, "invalid close code")
			}
			if !utf8.Valid(payload[2:]) {
				return false, protocolError(CloseInvalidPayload, "close reason is not UTF-8")
			}
		}
		return sink.onControl(opClose, payload), nil
	default: // ping, pong
		return sink.onControl(h.op, payload), nil
	}
}

// release returns the decoder's buffers to their pools.
func (d *decoder) release() {
	putBuffer(d.carry)
	putBuffer(d.msg)
	d.carry, d.msg, d.inMsg = nil, nil, false
}
