package wire

import (
	"strconv"
	"unicode/utf8"
)

// attFields are Attachment's keys in the order of its fields.
var attFields = [...]string{"id", "name", "mime", "size", "w", "h", "thumb"}

// attView is an attachment of a request as views into the frame, copied
// out (decodeRequest) only once the whole frame decoded.
type attView struct {
	id, name, mime []byte
	a              Attachment // the other fields
}

// att decodes send's "att": an array (or nil) of at most MaxAttachments
// maps (or nils), each with "id" and "name" strings; the fields the server
// fills in events are decoded too, with their types checked, and ignored
// by the server; other keys are skipped.
// Counts are checked against the bytes left, as everywhere. More elements
// are CodeTooLarge; an element that is not a map, or an id or name that is
// not a string, is CodeBadFrame.
func (d *reqDecoder) att() *Error {
	n, ok, e := d.r.readArrayLen()
	switch {
	case e != nil:
		return within("att", e)
	case !ok:
		return d.wrongType("att", -1, "an array", 2)
	case n < 0:
		d.atts = nil
		return nil
	case n > MaxAttachments:
		if e := d.r.skipArray(uint64(n), 2); e != nil {
			return within("att", e)
		}
		if d.err == nil {
			d.err = Errorf(CodeTooLarge, "att: "+strconv.Itoa(n)+" attachments, at most "+strconv.Itoa(MaxAttachments))
		}
		return nil
	}
	atts := d.atts[:0] // a second "att" replaces the first
	if atts == nil {
		atts = make([]attView, 0, n)
	}
	for i := range n {
		if c, _ := d.r.peek(); c == mpNil { // nil: the zero value, as everywhere
			d.r.off++
			atts = append(atts, attView{})
			continue
		}
		m, ok, e := d.r.readMapLen()
		if e != nil {
			return within(fieldName("att", i), e)
		}
		if !ok {
			// msgpack/v5 takes a struct as an array too: empty, or its
			// fields in order; so does this decoder.
			if n, isArray, _ := d.r.readArrayLen(); isArray && (n == 0 || n == len(attFields)) {
				var v attView
				for _, k := range attFields[:n] {
					if e := d.attValue(&v, i, []byte(k)); e != nil {
						return e
					}
				}
				atts = append(atts, v)
				continue
			} else if isArray {
				if e := d.r.skipArray(uint64(n), 3); e != nil {
					return within(fieldName("att", i), e)
				}
				if d.err == nil {
					d.err = Errorf(CodeBadFrame, fieldName("att", i)+": an array of "+strconv.Itoa(n)+" fields")
				}
				continue
			}
			if e := d.wrongType("att", i, "a map", 3); e != nil {
				return e
			}
			continue
		}
		var v attView
		for range m {
			key, ok, e := d.r.readStr()
			if e != nil {
				return within(fieldName("att", i), e)
			}
			if !ok { // a key that is not a string: skip the entry
				if e := d.r.skip(4); e != nil {
					return within(fieldName("att", i), e)
				}
				if e := d.r.skip(4); e != nil {
					return within(fieldName("att", i), e)
				}
				if d.err == nil {
					d.err = Errorf(CodeBadFrame, fieldName("att", i)+": a key is not a string")
				}
				continue
			}
			if e := d.attValue(&v, i, key); e != nil {
				return e
			}
		}
		atts = append(atts, v)
	}
	d.atts = atts
	return nil
}

// attValue decodes the value of key in attachment i into v.
func (d *reqDecoder) attValue(v *attView, i int, key []byte) *Error {
	field := attKey{i, key}
	switch string(key) {
	case "id", "name", "mime":
		dst := &v.id
		switch string(key) {
		case "name":
			dst = &v.name
		case "mime":
			dst = &v.mime
		}
		s, ok, e := d.r.readStr()
		switch {
		case e != nil:
			return within(field.String(), e)
		case !ok:
			if e := d.wrongType(field.String(), -1, "a string", 4); e != nil {
				return e
			}
		default:
			*dst = s
		}
	case "size", "w", "h":
		dst := &v.a.Size
		switch string(key) {
		case "w":
			dst = &v.a.Width
		case "h":
			dst = &v.a.Height
		}
		n, neg, ok, e := d.r.readInt()
		switch {
		case e != nil:
			return within(field.String(), e)
		case !ok:
			if e := d.wrongType(field.String(), -1, "an integer", 4); e != nil {
				return e
			}
		case neg || n > MaxSafeInteger:
			d.outOfRange(field.String(), -1, n, neg)
		default:
			*dst = n
		}
	case "thumb":
		c, e := d.r.peek()
		if e != nil {
			return within(field.String(), e)
		}
		switch c {
		case mpNil, mpFalse, mpTrue:
			v.a.Thumb = c == mpTrue
			d.r.off++
		default:
			if e := d.wrongType(field.String(), -1, "a bool", 4); e != nil {
				return e
			}
		}
	default:
		if e := d.r.skip(4); e != nil {
			return within(fieldName("att", i), e)
		}
	}
	return nil
}

// attachments copies the decoded attachments out of the frame; nil when
// the request has none.
func (d *reqDecoder) attachments() []Attachment {
	if d.atts == nil {
		return nil
	}
	out := make([]Attachment, len(d.atts))
	for i, v := range d.atts {
		out[i] = v.a
		out[i].ID, out[i].Name, out[i].Mime = string(v.id), string(v.name), string(v.mime)
	}
	return out
}

// validAttachments checks send's attachments: at most MaxAttachments, each
// with an id, and a name of at most MaxAttachmentNameBytes of UTF-8.
// Whether the id names a file the sender may attach is the server's to
// check (not_found).
func validAttachments(atts []Attachment) *Error {
	if len(atts) > MaxAttachments {
		return Errorf(CodeTooLarge, "over "+strconv.Itoa(MaxAttachments)+" attachments")
	}
	for _, a := range atts {
		switch {
		case a.ID == "":
			return Errorf(CodeInvalid, "an attachment without id")
		case len(a.Name) > MaxAttachmentNameBytes:
			return Errorf(CodeTooLarge, "attachment name over "+strconv.Itoa(MaxAttachmentNameBytes)+" bytes")
		case !utf8.ValidString(a.Name):
			return Errorf(CodeInvalid, "attachment name is not valid UTF-8")
		}
	}
	return nil
}

// appendAttachments appends atts as an array of maps, as msgpack/v5
// encodes []Attachment.
func appendAttachments(b []byte, atts []Attachment) []byte {
	b = appendArrayLen(b, len(atts))
	for i := range atts {
		a := &atts[i]
		n := 1 + count(a.Name != "") + count(a.Mime != "") + count(a.Size != 0) + count(a.Width != 0) +
			count(a.Height != 0) + count(a.Thumb)
		b = appendMapLen(b, n)
		b = appendStr(appendStr(b, "id"), a.ID)
		if a.Name != "" {
			b = appendStr(appendStr(b, "name"), a.Name)
		}
		if a.Mime != "" {
			b = appendStr(appendStr(b, "mime"), a.Mime)
		}
		if a.Size != 0 {
			b = appendU64(appendStr(b, "size"), a.Size)
		}
		if a.Width != 0 {
			b = appendU64(appendStr(b, "w"), a.Width)
		}
		if a.Height != 0 {
			b = appendU64(appendStr(b, "h"), a.Height)
		}
		if a.Thumb {
			b = appendBool(appendStr(b, "thumb"), true)
		}
	}
	return b
}

// attachmentsLen is len(appendAttachments(nil, atts)).
func attachmentsLen(atts []Attachment) int {
	size := arrayLenSize(len(atts))
	for i := range atts {
		a := &atts[i]
		n := 1 + count(a.Name != "") + count(a.Mime != "") + count(a.Size != 0) + count(a.Width != 0) +
			count(a.Height != 0) + count(a.Thumb)
		size += mapLenSize(n) + strSize("id") + strSize(a.ID)
		if a.Name != "" {
			size += strSize("name") + strSize(a.Name)
		}
		if a.Mime != "" {
			size += strSize("mime") + strSize(a.Mime)
		}
		if a.Size != 0 {
			size += strSize("size") + 9
		}
		if a.Width != 0 {
			size += strSize("w") + 9
		}
		if a.Height != 0 {
			size += strSize("h") + 9
		}
		if a.Thumb {
			size += strSize("thumb") + 1
		}
	}
	return size
}

// attKey names a field of an attachment in an error; built only then.
type attKey struct {
	i   int
	key []byte
}

func (k attKey) String() string { return fieldName("att", k.i) + "." + string(k.key) }
