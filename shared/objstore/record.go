package objstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"time"
)

// On-disk layout (format 2). All integers are big-endian so that bbolt's
// byte-wise key order is numeric order.
//
//	bucket "meta":   key               → meta record (below); the bucket's
//	                                     sequence is the highest object id used
//	bucket "lru":    atime(8) ‖ id(8)  → key
//	bucket "inline": id(8)             → body of an object stored in bbolt
//	bucket "files":  id(8)             → key of an object whose body is a file
//	bucket "state":  "format" → 2
//
// Bodies larger than the inline limit are write-once files in the directory
// <db>.bodies, named by id (16 hex digits); a fill writes <id>.part and
// renames it at Commit. Format 1 kept every body in chunks in bbolt.
//
// Meta record:
//
//	0      version (2)
//	1..8   object id
//	9..16  access time, Unix ns (the LRU position; see lruKey)
//	17..24 body size
//	25..26 HTTP status
//	27..38 request time:  Unix seconds (8), nanoseconds (4)
//	39..50 response time: Unix seconds (8), nanoseconds (4)
//	51     flags: bit 0 set when the body is a file
//	52..   header block: uvarint names, uvarint values, then per name
//	       (in ascending byte order, each once) uvarint len, name, uvarint
//	       count, and per value uvarint len, value
//
// The fixed part lets eviction and atime updates read or patch id, atime
// and size without decoding the headers.
const (
	formatVersion  = 2
	recordVersion  = 2
	recordFixedLen = 52

	offID     = 1
	offAtime  = 9
	offSize   = 17
	offStatus = 25
	offReq    = 27
	offResp   = 39
	offFlags  = 51

	flagFile = 1 << 0

	lruKeyLen = 16
)

var (
	bucketMeta   = []byte("meta")
	bucketLRU    = []byte("lru")
	bucketInline = []byte("inline")
	bucketFiles  = []byte("files")
	bucketState  = []byte("state")

	stateFormat = []byte("format")
)

// zeroUnix is time.Time{}.Unix(): the zero time is stored as itself so that
// IsZero survives a round trip.
const zeroUnix = -62135596800

var errRecord = errors.New("bad meta record")

// recordHead is the fixed part of a meta record.
type recordHead struct {
	id    uint64
	atime int64
	size  int64
	file  bool // the body is a file, not in the inline bucket
}

// parseHead reads the fixed part of a meta record without decoding headers.
func parseHead(v []byte) (recordHead, error) {
	if len(v) < recordFixedLen {
		return recordHead{}, fmt.Errorf("%w: %d bytes, want at least %d", errRecord, len(v), recordFixedLen)
	}
	if v[0] != recordVersion {
		return recordHead{}, fmt.Errorf("%w: version %d", errRecord, v[0])
	}
	h := recordHead{
		id:    binary.BigEndian.Uint64(v[offID:]),
		atime: int64(binary.BigEndian.Uint64(v[offAtime:])),
		size:  int64(binary.BigEndian.Uint64(v[offSize:])),
		file:  v[offFlags]&flagFile != 0,
	}
	if h.id == 0 || h.size < 0 {
		return recordHead{}, fmt.Errorf("%w: id %d size %d", errRecord, h.id, h.size)
	}
	if v[offFlags]&^flagFile != 0 {
		return recordHead{}, fmt.Errorf("%w: unknown flags %#x", errRecord, v[offFlags])
	}
	return h, nil
}

// encodeRecord appends the record for m to dst. id, atime and file are the
// object's id, LRU time and body location; m.Size is stored as given.
func encodeRecord(dst []byte, m *Meta, id uint64, atime int64, file bool) ([]byte, error) {
	if m.Status < 0 || m.Status > math.MaxUint16 {
		return dst, fmt.Errorf("objstore: status %d out of range", m.Status)
	}
	var fixed [recordFixedLen]byte
	fixed[0] = recordVersion
	binary.BigEndian.PutUint64(fixed[offID:], id)
	binary.BigEndian.PutUint64(fixed[offAtime:], uint64(atime))
	binary.BigEndian.PutUint64(fixed[offSize:], uint64(m.Size))
	binary.BigEndian.PutUint16(fixed[offStatus:], uint16(m.Status))
	putTime(fixed[offReq:], m.RequestTime)
	putTime(fixed[offResp:], m.ResponseTime)
	if file {
		fixed[offFlags] = flagFile
	}
	dst = append(dst, fixed[:]...)

	// Sorted names make the encoding deterministic (golden files, and a
	// re-encode of an unchanged Meta yields the same bytes).
	names := make([]string, 0, len(m.Header))
	nvals := 0
	for k, vs := range m.Header {
		names = append(names, k)
		nvals += len(vs)
	}
	sort.Strings(names)
	dst = binary.AppendUvarint(dst, uint64(len(names)))
	dst = binary.AppendUvarint(dst, uint64(nvals))
	for _, k := range names {
		vs := m.Header[k]
		dst = binary.AppendUvarint(dst, uint64(len(k)))
		dst = append(dst, k...)
		dst = binary.AppendUvarint(dst, uint64(len(vs)))
		for _, v := range vs {
			dst = binary.AppendUvarint(dst, uint64(len(v)))
			dst = append(dst, v...)
		}
	}
	return dst, nil
}

func putTime(b []byte, t time.Time) {
	binary.BigEndian.PutUint64(b, uint64(t.Unix()))
	binary.BigEndian.PutUint32(b[8:], uint32(t.Nanosecond()))
}

func getTime(b []byte) (time.Time, error) {
	sec := int64(binary.BigEndian.Uint64(b))
	nsec := binary.BigEndian.Uint32(b[8:])
	if nsec >= 1e9 {
		return time.Time{}, fmt.Errorf("%w: nanoseconds %d", errRecord, nsec)
	}
	if sec == zeroUnix && nsec == 0 {
		return time.Time{}, nil
	}
	return time.Unix(sec, int64(nsec)).UTC(), nil
}

// decodeRecord decodes a meta record into m (m.Key is left to the caller).
// v may point into the bbolt mmap: everything kept is copied, with one
// string for all header names and values and one slice for all values, so a
// hit costs a handful of allocations whatever the header count.
func decodeRecord(v []byte, m *Meta) (recordHead, error) {
	h, err := parseHead(v)
	if err != nil {
		return h, err
	}
	st := binary.BigEndian.Uint16(v[offStatus:])
	req, err := getTime(v[offReq:])
	if err != nil {
		return h, err
	}
	resp, err := getTime(v[offResp:])
	if err != nil {
		return h, err
	}
	nnames, nvals, err := walkHeaders(v[recordFixedLen:])
	if err != nil {
		return h, err
	}
	m.Status = int(st)
	m.Size = h.size
	m.RequestTime = req
	m.ResponseTime = resp
	m.Header = nil
	if nnames == 0 {
		return h, nil
	}
	blk := string(v[recordFixedLen:])
	hdr := make(http.Header, nnames)
	vals := make([]string, nvals)
	// Second pass, over a block walkHeaders has validated.
	p := 0
	next := func() int {
		x, n := binary.Uvarint(v[recordFixedLen+p:])
		p += n
		return int(x)
	}
	next()
	next()
	vi := 0
	for i := 0; i < nnames; i++ {
		nl := next()
		name := blk[p : p+nl]
		p += nl
		cnt := next()
		start := vi
		for j := 0; j < cnt; j++ {
			l := next()
			vals[vi] = blk[p : p+l]
			p += l
			vi++
		}
		hdr[name] = vals[start:vi:vi] // names are unique: walkHeaders checked
	}
	m.Header = hdr
	return h, nil
}

// walkHeaders validates a header block and returns its name and value
// counts. Counts are checked against the bytes left before anything is
// allocated, so a corrupt record cannot ask for a huge allocation.
func walkHeaders(b []byte) (nnames, nvals int, err error) {
	p := 0
	uv := func() (int, error) {
		x, n := binary.Uvarint(b[p:])
		if n <= 0 {
			return 0, fmt.Errorf("%w: bad varint at header offset %d", errRecord, p)
		}
		p += n
		if x > uint64(len(b)-p) {
			return 0, fmt.Errorf("%w: length %d past end of record", errRecord, x)
		}
		return int(x), nil
	}
	if nnames, err = uv(); err != nil {
		return 0, 0, err
	}
	if nvals, err = uv(); err != nil {
		return 0, 0, err
	}
	seen := 0
	var prev []byte
	for i := 0; i < nnames; i++ {
		nl, err := uv()
		if err != nil {
			return 0, 0, err
		}
		// encodeRecord sorts the names: order also rules out duplicates.
		name := b[p : p+nl]
		if i > 0 && bytes.Compare(prev, name) >= 0 {
			return 0, 0, fmt.Errorf("%w: header %q after %q: names not sorted or repeated", errRecord, name, prev)
		}
		prev = name
		p += nl
		cnt, err := uv()
		if err != nil {
			return 0, 0, err
		}
		if cnt > nvals-seen {
			return 0, 0, fmt.Errorf("%w: more header values than the %d declared", errRecord, nvals)
		}
		seen += cnt
		for j := 0; j < cnt; j++ {
			l, err := uv()
			if err != nil {
				return 0, 0, err
			}
			p += l
		}
	}
	if seen != nvals {
		return 0, 0, fmt.Errorf("%w: %d header values, %d declared", errRecord, seen, nvals)
	}
	if p != len(b) {
		return 0, 0, fmt.Errorf("%w: %d trailing bytes", errRecord, len(b)-p)
	}
	return nnames, nvals, nil
}

// validateRecord checks a whole record without allocating (used by Open).
func validateRecord(v []byte) (recordHead, error) {
	h, err := parseHead(v)
	if err != nil {
		return h, err
	}
	if _, err := getTime(v[offReq:]); err != nil {
		return h, err
	}
	if _, err := getTime(v[offResp:]); err != nil {
		return h, err
	}
	_, _, err = walkHeaders(v[recordFixedLen:])
	return h, err
}

// lruKey orders by access time, then id (ids are unique, so keys are).
// The sign bit is flipped so that negative times (a router whose clock
// starts at 1970 is fine, but be safe) sort before positive ones.
func lruKey(dst *[lruKeyLen]byte, atime int64, id uint64) []byte {
	binary.BigEndian.PutUint64(dst[:8], uint64(atime)^(1<<63))
	binary.BigEndian.PutUint64(dst[8:], id)
	return dst[:]
}

func parseLRUKey(k []byte) (atime int64, id uint64, ok bool) {
	if len(k) != lruKeyLen {
		return 0, 0, false
	}
	return int64(binary.BigEndian.Uint64(k) ^ (1 << 63)), binary.BigEndian.Uint64(k[8:]), true
}

func idKey(dst *[8]byte, id uint64) []byte {
	binary.BigEndian.PutUint64(dst[:], id)
	return dst[:]
}
