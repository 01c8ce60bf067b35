package objstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// checkFile validates the page structure of a bbolt file before bbolt maps
// it. With NoFreelistSync, bbolt rebuilds its freelist at Open by walking
// every page of the tree; problems found on that walk are reported by
// panicking in a goroutine of bbolt's own (the process dies), and a file
// shorter than its pages claim faults on the mmap. So this walk repeats
// bbolt's checks (page bounds, page types, single reference, key order,
// bucket values) with ReadAt and returns an error instead. It reads the
// first page of every tree page and the keys, not the values, and keeps one
// bit per page of the file.
//
// The layout is bbolt's data file format version 2, in native byte order.
func checkFile(r io.ReaderAt, size int64) error {
	m, err := readBoltMeta(r, size)
	if err != nil {
		return err
	}
	ps := int64(m.pageSize)
	if m.pgid > uint64(size/ps) {
		return fmt.Errorf("file is truncated: %d bytes, but the database has %d pages of %d bytes (%d bytes)",
			size, m.pgid, ps, m.pgid*uint64(ps))
	}
	if m.root < 2 || m.root >= m.pgid {
		return fmt.Errorf("root bucket page %d outside [2, %d)", m.root, m.pgid)
	}
	w := &walker{r: r, ps: ps, hwm: m.pgid, seen: make([]uint64, (m.pgid+63)/64)}
	w.mark(0, 0)
	w.mark(1, 0)
	if m.freelist != pgidNoFreelist {
		if err := w.checkFreelist(m.freelist); err != nil {
			return err
		}
	}
	return w.bucket(m.root, 0)
}

const (
	bPageHeader  = 16
	bElemSize    = 16
	bBranch      = 0x01
	bLeaf        = 0x02
	bFreelist    = 0x10
	bBucketFlag  = 0x01
	bBucketHdr   = 16
	bMagic       = 0xED0CDAED
	bVersion     = 2
	bMaxKey      = 32768
	maxTreeDepth = 64

	pgidNoFreelist = ^uint64(0)
)

var ne = binary.NativeEndian

type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64
	txid     uint64
}

// readBoltMeta picks the meta page bbolt would use: page 0 gives the page
// size if valid (else the OS page size, as bbolt does), and of the two
// valid metas the one with the higher transaction id wins.
func readBoltMeta(r io.ReaderAt, size int64) (boltMeta, error) {
	m0, err0 := readMetaAt(r, 0)
	off := int64(os.Getpagesize())
	if err0 == nil {
		off = int64(m0.pageSize)
	}
	m1, err1 := readMetaAt(r, off)
	switch {
	case err0 != nil && err1 != nil:
		return boltMeta{}, fmt.Errorf("not a bbolt database: meta page 0: %v; meta page 1: %v", err0, err1)
	case err0 != nil:
		m0 = m1
	case err1 == nil && m1.txid > m0.txid && m1.pageSize == m0.pageSize:
		m0 = m1
	}
	if ps := m0.pageSize; ps < 512 || ps > 1<<20 || ps&(ps-1) != 0 {
		return boltMeta{}, fmt.Errorf("implausible page size %d", ps)
	}
	if size < 2*int64(m0.pageSize) {
		return boltMeta{}, fmt.Errorf("file is truncated: %d bytes, less than two %d-byte meta pages", size, m0.pageSize)
	}
	return m0, nil
}

func readMetaAt(r io.ReaderAt, off int64) (boltMeta, error) {
	var b [bPageHeader + 64]byte
	if _, err := r.ReadAt(b[:], off); err != nil {
		return boltMeta{}, fmt.Errorf("read at %d: %w", off, err)
	}
	// Like bbolt, judge a meta page by magic, version and checksum only.
	m := b[bPageHeader:]
	if ne.Uint32(m[0:]) != bMagic {
		return boltMeta{}, errors.New("bad magic")
	}
	if v := ne.Uint32(m[4:]); v != bVersion {
		return boltMeta{}, fmt.Errorf("format version %d, want %d", v, bVersion)
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if h.Sum64() != ne.Uint64(m[56:]) {
		return boltMeta{}, errors.New("checksum mismatch")
	}
	return boltMeta{
		pageSize: ne.Uint32(m[8:]),
		root:     ne.Uint64(m[16:]),
		freelist: ne.Uint64(m[32:]),
		pgid:     ne.Uint64(m[40:]),
		txid:     ne.Uint64(m[48:]),
	}, nil
}

type walker struct {
	r    io.ReaderAt
	ps   int64
	hwm  uint64
	seen []uint64 // one bit per page below hwm
	bufs [][]byte // first-page buffer per tree depth
	hdr  [bPageHeader]byte
}

// mark records pages id..id+overflow as referenced, failing on a second
// reference (bbolt: "multiple references").
func (w *walker) mark(id uint64, overflow uint32) error {
	for i := uint64(0); i <= uint64(overflow); i++ {
		p := id + i
		if w.seen[p/64]&(1<<(p%64)) != 0 {
			return fmt.Errorf("page %d: referenced twice", p)
		}
		w.seen[p/64] |= 1 << (p % 64)
	}
	return nil
}

func (w *walker) checkFreelist(id uint64) error {
	if id < 2 || id >= w.hwm {
		return fmt.Errorf("freelist page %d outside [2, %d)", id, w.hwm)
	}
	if _, err := w.r.ReadAt(w.hdr[:], int64(id)*w.ps); err != nil {
		return fmt.Errorf("freelist page %d: %w", id, err)
	}
	if ne.Uint16(w.hdr[8:]) != bFreelist || ne.Uint64(w.hdr[0:]) != id {
		return fmt.Errorf("page %d is not a freelist page", id)
	}
	ov := ne.Uint32(w.hdr[12:])
	if id+uint64(ov) >= w.hwm {
		return fmt.Errorf("freelist page %d: overflow %d past the end (%d pages)", id, ov, w.hwm)
	}
	// The page id count; 0xFFFF means the real count is the first id slot.
	count, first := uint64(ne.Uint16(w.hdr[10:])), uint64(0)
	if count == 0xFFFF {
		var b [8]byte
		if _, err := w.r.ReadAt(b[:], int64(id)*w.ps+bPageHeader); err != nil {
			return fmt.Errorf("freelist page %d: %w", id, err)
		}
		count, first = ne.Uint64(b[:]), 1
	}
	if count > uint64(ov+1)*uint64(w.ps)/8 || bPageHeader+(first+count)*8 > uint64(ov+1)*uint64(w.ps) {
		return fmt.Errorf("freelist page %d: %d ids do not fit", id, count)
	}
	return w.mark(id, ov)
}

// page is one tree page: its first page in buf, the rest read on demand.
type page struct {
	w     *walker
	id    uint64
	buf   []byte
	size  int64 // (overflow+1) * page size
	count int
	depth int
}

// bytesAt returns n bytes at off within the page.
func (p *page) bytesAt(off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off+n > p.size {
		return nil, fmt.Errorf("page %d: range [%d, %d) outside the page (%d bytes)", p.id, off, off+n, p.size)
	}
	if off+n <= int64(len(p.buf)) {
		return p.buf[off : off+n], nil
	}
	b := make([]byte, n)
	if _, err := p.w.r.ReadAt(b, int64(p.id)*p.w.ps+off); err != nil {
		return nil, fmt.Errorf("page %d: %w", p.id, err)
	}
	return b, nil
}

func (w *walker) readPage(id uint64, depth int) (*page, uint16, error) {
	if depth >= maxTreeDepth {
		return nil, 0, fmt.Errorf("page %d: tree deeper than %d", id, maxTreeDepth)
	}
	if id < 2 || id >= w.hwm {
		return nil, 0, fmt.Errorf("page %d: outside [2, %d)", id, w.hwm)
	}
	for len(w.bufs) <= depth {
		w.bufs = append(w.bufs, make([]byte, w.ps))
	}
	buf := w.bufs[depth]
	if _, err := w.r.ReadAt(buf, int64(id)*w.ps); err != nil {
		return nil, 0, fmt.Errorf("page %d: %w", id, err)
	}
	if got := ne.Uint64(buf); got != id {
		return nil, 0, fmt.Errorf("page %d: header says page %d", id, got)
	}
	flags := ne.Uint16(buf[8:])
	if flags != bBranch && flags != bLeaf {
		return nil, 0, fmt.Errorf("page %d: unexpected page type %#x", id, flags)
	}
	ov := ne.Uint32(buf[12:])
	if id+uint64(ov) >= w.hwm {
		return nil, 0, fmt.Errorf("page %d: overflow %d past the end (%d pages)", id, ov, w.hwm)
	}
	if err := w.mark(id, ov); err != nil {
		return nil, 0, err
	}
	p := &page{w: w, id: id, buf: buf, size: (int64(ov) + 1) * w.ps, count: int(ne.Uint16(buf[10:])), depth: depth}
	if int64(bPageHeader+p.count*bElemSize) > p.size {
		return nil, 0, fmt.Errorf("page %d: %d elements do not fit", id, p.count)
	}
	return p, flags, nil
}

// bucket walks the tree of a non-inline bucket whose root is page root.
func (w *walker) bucket(root uint64, depth int) error {
	_, err := w.tree(root, nil, nil, depth)
	return err
}

// tree checks the subtree at id, whose keys must lie in [minKey, maxKey),
// and returns (a copy of) its largest key, mirroring bbolt's check.
func (w *walker) tree(id uint64, minKey, maxKey []byte, depth int) ([]byte, error) {
	p, flags, err := w.readPage(id, depth)
	if err != nil {
		return nil, err
	}
	if flags == bBranch {
		return w.branch(p, minKey, maxKey)
	}
	return w.leaf(p, minKey, maxKey)
}

func (w *walker) branch(p *page, minKey, maxKey []byte) ([]byte, error) {
	type elem struct {
		key []byte
		id  uint64
	}
	// Collect first: children reuse deeper buffers, but element keys may
	// come from this page's buffer, which stays untouched until we return.
	elems := make([]elem, p.count)
	for i := range elems {
		eoff := int64(bPageHeader + i*bElemSize)
		e, err := p.bytesAt(eoff, bElemSize)
		if err != nil {
			return nil, err
		}
		pos, ksize, child := int64(ne.Uint32(e)), int64(ne.Uint32(e[4:])), ne.Uint64(e[8:])
		if ksize > bMaxKey {
			return nil, fmt.Errorf("page %d: key %d is %d bytes", p.id, i, ksize)
		}
		k, err := p.bytesAt(eoff+pos, ksize)
		if err != nil {
			return nil, err
		}
		elems[i] = elem{k, child}
	}
	var maxIn []byte
	running := minKey
	for i, e := range elems {
		if err := keyOrder(p.id, i, e.key, running, maxKey); err != nil {
			return nil, err
		}
		next := maxKey
		if i < len(elems)-1 {
			next = elems[i+1].key
		}
		m, err := w.tree(e.id, e.key, next, p.depth+1)
		if err != nil {
			return nil, err
		}
		maxIn = m
		running = m
	}
	return maxIn, nil
}

func (w *walker) leaf(p *page, minKey, maxKey []byte) ([]byte, error) {
	running := minKey
	var buckets [][]byte // bucket values, checked after the page (buffers)
	for i := 0; i < p.count; i++ {
		eoff := int64(bPageHeader + i*bElemSize)
		e, err := p.bytesAt(eoff, bElemSize)
		if err != nil {
			return nil, err
		}
		flags, pos, ksize, vsize := ne.Uint32(e), int64(ne.Uint32(e[4:])), int64(ne.Uint32(e[8:])), int64(ne.Uint32(e[12:]))
		if ksize > bMaxKey {
			return nil, fmt.Errorf("page %d: key %d is %d bytes", p.id, i, ksize)
		}
		k, err := p.bytesAt(eoff+pos, ksize)
		if err != nil {
			return nil, err
		}
		if err := keyOrder(p.id, i, k, running, maxKey); err != nil {
			return nil, err
		}
		running = k
		if flags&bBucketFlag == 0 {
			// A value is not read, only bounded.
			if eoff+pos+ksize+vsize > p.size {
				return nil, fmt.Errorf("page %d: value %d runs past the page", p.id, i)
			}
			continue
		}
		if vsize < bBucketHdr || vsize > bBucketHdr+w.ps {
			return nil, fmt.Errorf("page %d: bucket value %d is %d bytes", p.id, i, vsize)
		}
		v, err := p.bytesAt(eoff+pos+ksize, vsize)
		if err != nil {
			return nil, err
		}
		buckets = append(buckets, append([]byte(nil), v...))
	}
	var last []byte
	if p.count > 0 {
		last = append([]byte(nil), running...)
	}
	for _, v := range buckets {
		if err := w.bucketValue(v, p.depth+1); err != nil {
			return nil, fmt.Errorf("bucket in page %d: %w", p.id, err)
		}
	}
	return last, nil
}

// bucketValue checks a bucket header and, for an inline bucket, its page.
func (w *walker) bucketValue(v []byte, depth int) error {
	if depth >= maxTreeDepth {
		return fmt.Errorf("buckets nested deeper than %d", maxTreeDepth)
	}
	if root := ne.Uint64(v); root != 0 {
		return w.bucket(root, depth)
	}
	ip := v[bBucketHdr:]
	if len(ip) < bPageHeader {
		return fmt.Errorf("inline bucket page is %d bytes", len(ip))
	}
	if flags := ne.Uint16(ip[8:]); flags != bLeaf {
		return fmt.Errorf("inline bucket page type %#x", flags)
	}
	p := &page{w: w, buf: ip, size: int64(len(ip)), count: int(ne.Uint16(ip[10:])), depth: depth}
	if int64(bPageHeader+p.count*bElemSize) > p.size {
		return fmt.Errorf("inline bucket: %d elements do not fit", p.count)
	}
	_, err := w.leaf(p, nil, nil)
	return err
}

// keyOrder mirrors bbolt's verifyKeyOrder.
func keyOrder(id uint64, i int, key, prev, maxKey []byte) error {
	if i == 0 && prev != nil && bytes.Compare(prev, key) > 0 {
		return fmt.Errorf("page %d: first key below its parent's", id)
	}
	if i > 0 && bytes.Compare(prev, key) >= 0 {
		return fmt.Errorf("page %d: key %d out of order", id, i)
	}
	if maxKey != nil && bytes.Compare(key, maxKey) >= 0 {
		return fmt.Errorf("page %d: key %d not below the next key of its parent", id, i)
	}
	return nil
}
