package driad

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// DNS wire format (RFC 1035 §4), only as much as an AMTRELAY lookup needs.

const (
	headerLen     = 12
	maxNameLen    = 255 // wire length, RFC 1035 §2.3.4
	maxLabelLen   = 63
	maxUDPPayload = 1232 // EDNS0 buffer size advertised (DNS flag day 2020)

	classIN  = 1
	typeA    = 1
	typeCNAM = 5
	typeAAAA = 28
	typeDNAM = 39
	typeOPT  = 41

	flagQR = 1 << 15
	flagTC = 1 << 9
	flagRD = 1 << 8

	rcodeSuccess  = 0
	rcodeNXDomain = 3
)

// appendQuery appends a recursive query for name/qtype with an EDNS0 OPT
// record, so that answers up to maxUDPPayload bytes come over UDP.
func appendQuery(dst []byte, id uint16, name string, qtype uint16) ([]byte, error) {
	dst = binary.BigEndian.AppendUint16(dst, id)
	dst = binary.BigEndian.AppendUint16(dst, flagRD)
	dst = binary.BigEndian.AppendUint16(dst, 1) // QDCOUNT
	dst = binary.BigEndian.AppendUint16(dst, 0) // ANCOUNT
	dst = binary.BigEndian.AppendUint16(dst, 0) // NSCOUNT
	dst = binary.BigEndian.AppendUint16(dst, 1) // ARCOUNT: OPT
	var err error
	if dst, err = appendName(dst, name); err != nil {
		return dst, err
	}
	dst = binary.BigEndian.AppendUint16(dst, qtype)
	dst = binary.BigEndian.AppendUint16(dst, classIN)
	// OPT pseudo-RR (RFC 6891 §6.1.2): root owner, class = UDP payload
	// size, TTL = extended RCODE 0, version 0, no flags; no options.
	dst = append(dst, 0)
	dst = binary.BigEndian.AppendUint16(dst, typeOPT)
	dst = binary.BigEndian.AppendUint16(dst, maxUDPPayload)
	dst = binary.BigEndian.AppendUint32(dst, 0)
	dst = binary.BigEndian.AppendUint16(dst, 0)
	return dst, nil
}

// record is one resource record of a parsed message; its RDATA stays in the
// message (msg[rdOff:rdEnd]) because names in it may point elsewhere.
type record struct {
	name         string
	typ, class   uint16
	ttl          uint32
	rdOff, rdEnd int
}

// response is a parsed DNS response: the header fields a client checks and
// the answer section. Authority and additional sections are not read.
type response struct {
	msg       []byte
	id        uint16
	rcode     int
	truncated bool
	qname     string
	qtype     uint16
	qclass    uint16
	answers   []record
}

// maxRecords bounds how many answers are parsed, so that a hostile
// message cannot make us allocate much (a 64 KiB TCP message holds at most
// about 5000 records anyway).
const maxRecords = 512

// parseResponse decodes the header, the single question and the answer
// section of msg. A truncated (TC) message is returned after the question,
// without its answers: the caller retries over TCP.
func parseResponse(msg []byte) (*response, error) {
	if len(msg) < headerLen {
		return nil, fmt.Errorf("dns: message of %d bytes: %w", len(msg), ErrMalformed)
	}
	r := &response{msg: msg, id: binary.BigEndian.Uint16(msg[0:2])}
	flags := binary.BigEndian.Uint16(msg[2:4])
	if flags&flagQR == 0 {
		return nil, fmt.Errorf("dns: not a response: %w", ErrMalformed)
	}
	if op := flags >> 11 & 0xf; op != 0 {
		return nil, fmt.Errorf("dns: opcode %d: %w", op, ErrMalformed)
	}
	r.truncated = flags&flagTC != 0
	r.rcode = int(flags & 0xf)
	qd := binary.BigEndian.Uint16(msg[4:6])
	an := int(binary.BigEndian.Uint16(msg[6:8]))
	if qd != 1 {
		return nil, fmt.Errorf("dns: %d questions, want 1: %w", qd, ErrMalformed)
	}
	name, off, err := readName(msg, headerLen, true)
	if err != nil {
		return nil, fmt.Errorf("dns: question: %w", err)
	}
	if off+4 > len(msg) {
		return nil, fmt.Errorf("dns: question ends early: %w", ErrMalformed)
	}
	r.qname = name
	r.qtype = binary.BigEndian.Uint16(msg[off:])
	r.qclass = binary.BigEndian.Uint16(msg[off+2:])
	off += 4
	if r.truncated {
		return r, nil
	}
	if an > maxRecords {
		return nil, fmt.Errorf("dns: %d answers: %w", an, ErrMalformed)
	}
	r.answers = make([]record, 0, an)
	for i := 0; i < an; i++ {
		var rr record
		if rr.name, off, err = readName(msg, off, true); err != nil {
			return nil, fmt.Errorf("dns: answer %d: %w", i, err)
		}
		if off+10 > len(msg) {
			return nil, fmt.Errorf("dns: answer %d header ends early: %w", i, ErrMalformed)
		}
		rr.typ = binary.BigEndian.Uint16(msg[off:])
		rr.class = binary.BigEndian.Uint16(msg[off+2:])
		rr.ttl = binary.BigEndian.Uint32(msg[off+4:])
		rdlen := int(binary.BigEndian.Uint16(msg[off+8:]))
		off += 10
		if off+rdlen > len(msg) {
			return nil, fmt.Errorf("dns: answer %d: RDATA of %d bytes past the end: %w", i, rdlen, ErrMalformed)
		}
		rr.rdOff, rr.rdEnd = off, off+rdlen
		off += rdlen
		r.answers = append(r.answers, rr)
	}
	return r, nil
}

// readName decodes the domain name at msg[off:] into presentation format
// (absolute, with a trailing dot, special bytes escaped) and returns the
// offset after it. Compression pointers (RFC 1035 §4.1.4) are followed only
// when ptrOK, and only backwards, which bounds the work: every jump lands
// strictly before the previous one. Names longer than 255 bytes are refused.
func readName(msg []byte, off int, ptrOK bool) (string, int, error) {
	var (
		sb      strings.Builder
		wireLen = 1 // the root label
		next    = -1
		limit   = off // pointers must go below this
	)
	for {
		if off >= len(msg) {
			return "", 0, fmt.Errorf("name ends early: %w", ErrMalformed)
		}
		c := int(msg[off])
		switch c & 0xc0 {
		case 0x00:
			if c == 0 {
				if next < 0 {
					next = off + 1
				}
				if sb.Len() == 0 {
					return ".", next, nil
				}
				return sb.String(), next, nil
			}
			if off+1+c > len(msg) {
				return "", 0, fmt.Errorf("label ends early: %w", ErrMalformed)
			}
			if wireLen += 1 + c; wireLen > maxNameLen {
				return "", 0, fmt.Errorf("name longer than %d bytes: %w", maxNameLen, ErrMalformed)
			}
			appendLabel(&sb, msg[off+1:off+1+c])
			sb.WriteByte('.')
			off += 1 + c
		case 0xc0:
			if !ptrOK {
				return "", 0, fmt.Errorf("compressed name where none is allowed: %w", ErrMalformed)
			}
			if off+2 > len(msg) {
				return "", 0, fmt.Errorf("pointer ends early: %w", ErrMalformed)
			}
			ptr := int(binary.BigEndian.Uint16(msg[off:]) & 0x3fff)
			if ptr >= limit {
				return "", 0, fmt.Errorf("name pointer %d does not point backwards: %w", ptr, ErrMalformed)
			}
			if next < 0 {
				next = off + 2
			}
			off, limit = ptr, ptr
		default:
			// 0x40 (extended label types, RFC 6891 §5) and 0x80 are unused.
			return "", 0, fmt.Errorf("label type %#x: %w", c&0xc0, ErrMalformed)
		}
	}
}

// appendLabel writes one label in presentation format: letters, digits,
// '-', '_' and most punctuation as they are; '.', '\\' and bytes outside
// printable ASCII escaped, so that distinct wire names stay distinct.
func appendLabel(sb *strings.Builder, label []byte) {
	for _, b := range label {
		switch {
		case b == '.' || b == '\\':
			sb.WriteByte('\\')
			sb.WriteByte(b)
		case b < '!' || b > '~':
			sb.WriteByte('\\')
			sb.WriteString(fmt.Sprintf("%03d", b))
		default:
			sb.WriteByte(b)
		}
	}
}

// appendName appends name (presentation format, as readName writes it; the
// trailing dot is optional) in wire format without compression.
func appendName(dst []byte, name string) ([]byte, error) {
	if name == "." || name == "" {
		return append(dst, 0), nil
	}
	start := len(dst)
	lenAt := len(dst)
	dst = append(dst, 0)
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch c {
		case '.':
			n := len(dst) - lenAt - 1
			if n == 0 {
				return dst[:start], fmt.Errorf("name %q has an empty label: %w", name, ErrMalformed)
			}
			dst[lenAt] = byte(n)
			if i == len(name)-1 {
				return finishName(dst, start, name)
			}
			lenAt = len(dst)
			dst = append(dst, 0)
			continue
		case '\\':
			if i+1 >= len(name) {
				return dst[:start], fmt.Errorf("name %q ends in a backslash: %w", name, ErrMalformed)
			}
			if d := name[i+1]; d >= '0' && d <= '9' {
				if i+4 > len(name) {
					return dst[:start], fmt.Errorf("name %q: short \\DDD escape: %w", name, ErrMalformed)
				}
				v, err := strconv.ParseUint(name[i+1:i+4], 10, 8)
				if err != nil {
					return dst[:start], fmt.Errorf("name %q: bad \\DDD escape: %w", name, ErrMalformed)
				}
				c = byte(v)
				i += 3
			} else {
				c = d
				i++
			}
		}
		dst = append(dst, c)
		if len(dst)-lenAt-1 > maxLabelLen {
			return dst[:start], fmt.Errorf("name %q has a label longer than %d bytes: %w", name, maxLabelLen, ErrMalformed)
		}
	}
	// No trailing dot: close the last label.
	dst[lenAt] = byte(len(dst) - lenAt - 1)
	return finishName(dst, start, name)
}

func finishName(dst []byte, start int, name string) ([]byte, error) {
	dst = append(dst, 0)
	if len(dst)-start > maxNameLen {
		return dst[:start], fmt.Errorf("name %q is longer than %d bytes: %w", name, maxNameLen, ErrMalformed)
	}
	return dst, nil
}

// equalName compares two names in presentation format as DNS does: ASCII
// case-insensitively (RFC 4343), ignoring a missing trailing dot.
func equalName(a, b string) bool {
	wa, err1 := wireLower(a)
	wb, err2 := wireLower(b)
	return err1 == nil && err2 == nil && string(wa) == string(wb)
}

// wireLower returns name in wire format with ASCII letters folded to lower
// case, for comparisons.
func wireLower(name string) ([]byte, error) {
	w, err := appendName(nil, name)
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(w); {
		n := int(w[i])
		for j := i + 1; j <= i+n; j++ {
			if c := w[j]; c >= 'A' && c <= 'Z' {
				w[j] = c + 'a' - 'A'
			}
		}
		i += 1 + n
	}
	return w, nil
}

// dnameTarget applies a DNAME record (RFC 6672): when name is strictly
// below owner, it returns name with the owner suffix replaced by target.
func dnameTarget(name, owner, target string) (string, bool) {
	n, err1 := wireLower(name)
	o, err2 := wireLower(owner)
	orig, err3 := appendName(nil, name)
	t, err4 := appendName(nil, target)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || len(n) <= len(o) {
		return "", false
	}
	// The suffix must start on a label boundary of name.
	cut := len(n) - len(o)
	i := 0
	for i < cut {
		i += 1 + int(n[i])
	}
	if i != cut || string(n[cut:]) != string(o) {
		return "", false
	}
	w := append(orig[:cut:cut], t...)
	if len(w) > maxNameLen {
		return "", false
	}
	s, _, err := readName(w, 0, false)
	if err != nil {
		return "", false
	}
	return s, true
}

// canonical adds the trailing dot of an absolute name.
func canonical(name string) string {
	// A dot preceded by an odd number of backslashes is escaped.
	n := 0
	for i := len(name) - 2; i >= 0 && name[i] == '\\'; i-- {
		n++
	}
	if !strings.HasSuffix(name, ".") || n%2 == 1 {
		return name + "."
	}
	return name
}
