package media

import (
	"bytes"
	"encoding/binary"
	"image"
)

// orientation is the EXIF Orientation tag (0x0112): how the stored pixels
// must be turned to show the picture upright. Phones store photos as the
// sensor saw them and set the tag rather than rotate the pixels.
type orientation uint8

const (
	orientNormal     orientation = 1
	orientMirrorH    orientation = 2
	orientRotate180  orientation = 3
	orientMirrorV    orientation = 4
	orientTranspose  orientation = 5
	orientRotate90   orientation = 6 // clockwise
	orientTransverse orientation = 7
	orientRotate270  orientation = 8 // clockwise
)

// jpegOrientation finds the Orientation tag in a JPEG's first Exif APP1
// segment, or returns orientNormal. It walks the marker segments before
// the scan, each bounded by its own length and by b, and reads IFD0 only:
// a few bytes looked at, nothing allocated.
func jpegOrientation(b []byte) orientation {
	if len(b) < 4 || b[0] != 0xFF || b[1] != 0xD8 {
		return orientNormal
	}
	for i := 2; i+4 <= len(b); {
		if b[i] != 0xFF {
			return orientNormal
		}
		marker := b[i+1]
		switch {
		case marker == 0xFF: // fill byte
			i++
			continue
		case marker == 0xDA || marker == 0xD9: // start of scan, end of image
			return orientNormal
		case marker == 0x01 || marker >= 0xD0 && marker <= 0xD7: // no length
			i += 2
			continue
		}
		n := int(b[i+2])<<8 | int(b[i+3])
		if n < 2 || i+2+n > len(b) {
			return orientNormal
		}
		seg := b[i+4 : i+2+n]
		if marker == 0xE1 && bytes.HasPrefix(seg, []byte("Exif\x00\x00")) {
			return exifOrientation(seg[6:])
		}
		i += 2 + n
	}
	return orientNormal
}

// exifOrientation reads the Orientation entry of IFD0 in a TIFF structure.
func exifOrientation(t []byte) orientation {
	if len(t) < 8 {
		return orientNormal
	}
	var bo binary.ByteOrder
	switch string(t[:4]) {
	case "II*\x00":
		bo = binary.LittleEndian
	case "MM\x00*":
		bo = binary.BigEndian
	default:
		return orientNormal
	}
	off := uint64(bo.Uint32(t[4:8]))
	if off < 8 || off+2 > uint64(len(t)) {
		return orientNormal
	}
	n := int(bo.Uint16(t[off:]))
	p := int(off) + 2
	for k := 0; k < n && p+12 <= len(t); k, p = k+1, p+12 {
		if bo.Uint16(t[p:]) != 0x0112 {
			continue
		}
		if bo.Uint16(t[p+2:]) != 3 { // type SHORT
			return orientNormal
		}
		if v := bo.Uint16(t[p+8:]); v >= 1 && v <= 8 {
			return orientation(v)
		}
		return orientNormal
	}
	return orientNormal
}

// apply returns src turned as o says, src itself for orientNormal. It is
// meant for thumbnails: one pass, one new image of the same size.
func (o orientation) apply(src *image.RGBA) *image.RGBA {
	if o <= orientNormal || o > orientRotate270 {
		return src
	}
	w, h := src.Rect.Dx(), src.Rect.Dy()
	dw, dh := w, h
	if o >= orientTranspose {
		dw, dh = h, w
	}
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	for y := 0; y < dh; y++ {
		for x := 0; x < dw; x++ {
			var sx, sy int
			switch o {
			case orientMirrorH:
				sx, sy = w-1-x, y
			case orientRotate180:
				sx, sy = w-1-x, h-1-y
			case orientMirrorV:
				sx, sy = x, h-1-y
			case orientTranspose:
				sx, sy = y, x
			case orientRotate90:
				sx, sy = y, h-1-x
			case orientTransverse:
				sx, sy = w-1-y, h-1-x
			case orientRotate270:
				sx, sy = w-1-y, x
			}
			si := sy*src.Stride + sx*4
			di := y*dst.Stride + x*4
			copy(dst.Pix[di:di+4], src.Pix[si:si+4])
		}
	}
	return dst
}
