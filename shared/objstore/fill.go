package objstore

import (
	"errors"
	"fmt"
	"io"
	"sync"

	bolt "go.etcd.io/bbolt"
)

var (
	errNoStore      = errors.New("objstore: zero Object or Writer (use Store.Get or Store.Create)")
	errCommitted    = errors.New("objstore: fill already committed")
	errReaderClosed = errors.New("objstore: read from a closed fill reader")
)

type fillState uint8

const (
	filling fillState = iota
	committed
	failed
)

// A fill is one Writer's object in progress. Body bytes go to buf and, a
// transaction per fillBytes, to chunks under an id allocated at the first
// flush (so a small object commits in one transaction). Followers read the
// flushed part from bbolt and the rest from buf: RAM per fill is bounded by
// fillBytes, whatever the object size and follower count.
type fill struct {
	s    *Store
	key  string
	hint int64 // expected size, or -1

	wmu      sync.Mutex // serializes Write, Commit, Abort and Store.Close
	reserved int64      // bytes reserved in s (wmu)

	mu      sync.Mutex // guards the fields below; followers wait on cond
	cond    sync.Cond
	id      uint64 // 0 until the first transaction
	buf     []byte // body bytes [flushed, written)
	flushed int64
	written int64
	state   fillState
	err     error // why the fill failed
}

var fillBufPool sync.Pool // *[]byte of cap fillBytes (per store config; checked on Get)

func (f *fill) write(p []byte) (int, error) {
	if f == nil {
		return 0, errNoStore
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if err := f.usable(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	n := int64(len(p))
	if f.written+n > f.s.max {
		err := fmt.Errorf("%w: %q grew past %d bytes", ErrTooLarge, f.key, f.s.max)
		f.fail(err)
		return 0, err
	}
	if err := f.s.reserve(n); err != nil {
		f.fail(err)
		return 0, err
	}
	f.reserved += n
	done := 0
	for done < len(p) {
		// Flush a full buffer only when more data comes, so that an object
		// of exactly fillBytes still commits in one transaction.
		if len(f.buf) >= f.s.fillBytes {
			if err := f.flush(); err != nil {
				f.fail(err)
				return done, err
			}
		}
		take := min(len(p)-done, f.s.fillBytes-len(f.buf))
		f.mu.Lock()
		f.buf = f.grow(take)
		f.buf = append(f.buf, p[done:done+take]...)
		f.written += int64(take)
		f.mu.Unlock()
		f.cond.Broadcast()
		done += take
	}
	return done, nil
}

// usable reports why the writer cannot be used (wmu held).
func (f *fill) usable() error {
	f.mu.Lock()
	st, err := f.state, f.err
	f.mu.Unlock()
	switch {
	case st == committed:
		return errCommitted
	case st == failed:
		return err
	case f.s.closed.Load():
		f.fail(ErrClosed)
		return ErrClosed
	}
	return nil
}

// grow makes room for n more bytes in buf (f.mu held). A fill that will
// need a full buffer takes one from the pool.
func (f *fill) grow(n int) []byte {
	b := f.buf
	if cap(b)-len(b) >= n {
		return b
	}
	want := max(2*cap(b), len(b)+n, 4096)
	if f.hint > int64(want) {
		want = int(min(f.hint, int64(f.s.fillBytes))) // the size is known: no regrowth
	}
	if want >= f.s.fillBytes {
		want = f.s.fillBytes
		if pb, ok := fillBufPool.Get().(*[]byte); ok && cap(*pb) == want {
			return append((*pb)[:0], b...)
		}
	}
	nb := make([]byte, len(b), want)
	copy(nb, b)
	return nb
}

func putFillBuf(s *Store, b []byte) {
	if cap(b) == s.fillBytes {
		b = b[:0]
		fillBufPool.Put(&b)
	}
}

// flush writes buf (whole chunks) to bbolt (wmu held).
func (f *fill) flush() error {
	data := f.buf
	id := f.id
	first := uint32(f.flushed / f.s.chunk)
	err := f.s.update(func(tx *bolt.Tx) error {
		ch := tx.Bucket(bucketChunks)
		nid := id
		if nid == 0 {
			var err error
			if nid, err = ch.NextSequence(); err != nil {
				return err
			}
			// Recorded with the first chunks: if we never commit, the
			// next Open finds the id here and deletes the chunks.
			var ik [8]byte
			if err := tx.Bucket(bucketFills).Put(append([]byte(nil), idKey(&ik, nid)...), []byte(f.key)); err != nil {
				return err
			}
		}
		if err := putChunks(ch, nid, first, data, int(f.s.chunk)); err != nil {
			return err
		}
		id = nid
		return nil
	})
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.id = id
	f.flushed += int64(len(data))
	f.buf = f.buf[:0]
	f.mu.Unlock()
	return nil
}

// putChunks stores data as chunks first, first+1, ... of id. bbolt keeps
// keys and values until the commit, so each key is its own allocation and
// data must not change before then.
func putChunks(b *bolt.Bucket, id uint64, first uint32, data []byte, cs int) error {
	b.FillPercent = 0.9 // chunks are mostly appended
	keys := make([]byte, chunkKeyLen*((len(data)+cs-1)/cs))
	for i := 0; len(data) > 0; i++ {
		n := min(cs, len(data))
		k := (*[chunkKeyLen]byte)(keys[i*chunkKeyLen : (i+1)*chunkKeyLen])
		if err := b.Put(chunkKey(k, id, first+uint32(i)), data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

func (f *fill) commit(m Meta) error {
	if f == nil {
		return errNoStore
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if err := f.usable(); err != nil {
		return err
	}
	if m.Status < 0 || m.Status > 0xffff {
		return fmt.Errorf("objstore: status %d out of range", m.Status)
	}
	m.Key, m.Size = f.key, f.written
	s := f.s
	data, id, first := f.buf, f.id, uint32(f.flushed/s.chunk)
	key := []byte(f.key)
	var old recordHead
	var replaced bool
	err := s.update(func(tx *bolt.Tx) error {
		ch, fb := tx.Bucket(bucketChunks), tx.Bucket(bucketFills)
		nid := id
		var ik [8]byte
		if nid == 0 {
			var err error
			if nid, err = ch.NextSequence(); err != nil {
				return err
			}
		} else if err := fb.Delete(idKey(&ik, nid)); err != nil {
			return err
		}
		if err := putChunks(ch, nid, first, data, int(s.chunk)); err != nil {
			return err
		}
		var err error
		if old, replaced, err = s.deleteKey(tx, key); err != nil {
			return err
		}
		atime := s.now()
		rec, err := encodeRecord(nil, &m, nid, atime)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketMeta).Put(key, rec); err != nil {
			return err
		}
		lk := new([lruKeyLen]byte)
		if err := tx.Bucket(bucketLRU).Put(lruKey(lk, atime, nid), key); err != nil {
			return err
		}
		id = nid
		return nil
	})
	if err != nil {
		f.fail(err)
		return err
	}
	s.mu.Lock()
	s.reserved -= f.reserved
	s.bytes += f.written
	s.objects++
	if replaced {
		s.bytes -= old.size
		s.objects--
	}
	delete(s.fills, f)
	s.mu.Unlock()
	f.reserved = 0

	f.mu.Lock()
	f.id = id
	f.flushed = f.written
	buf := f.buf
	f.buf = nil
	f.state = committed
	f.mu.Unlock()
	f.cond.Broadcast()
	putFillBuf(s, buf)
	return nil
}

func (f *fill) abort() {
	if f == nil {
		return
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.fail(ErrAborted)
}

// abandon aborts a fill still in progress and reports whether it was.
func (f *fill) abandon() bool {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.mu.Lock()
	open := f.state == filling
	f.mu.Unlock()
	f.fail(ErrAborted)
	return open
}

// shutdown fails the fill because the store is closing.
func (f *fill) shutdown() {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.fail(ErrClosed)
}

// fail ends a fill that has not committed (wmu held): followers get err,
// the chunks written so far are deleted and the reservation released. If
// the delete fails, the id stays in the fills bucket for the next Open.
func (f *fill) fail(err error) {
	f.mu.Lock()
	if f.state != filling {
		f.mu.Unlock()
		return
	}
	f.state, f.err = failed, err
	id, buf := f.id, f.buf
	f.buf = nil
	f.mu.Unlock()
	f.cond.Broadcast()
	s := f.s
	putFillBuf(s, buf)
	if id != 0 {
		derr := s.update(func(tx *bolt.Tx) error {
			var ik [8]byte
			k := idKey(&ik, id)
			if _, err := deleteChunks(tx.Bucket(bucketChunks), k); err != nil {
				return err
			}
			return tx.Bucket(bucketFills).Delete(k)
		})
		if derr != nil {
			s.log.Warn("objstore: removing a failed fill; the next Open will", "path", s.path, "key", f.key, "err", derr)
		}
	}
	s.mu.Lock()
	s.reserved -= f.reserved
	delete(s.fills, f)
	s.mu.Unlock()
	f.reserved = 0
}

func (f *fill) newReader() io.ReadCloser {
	if f == nil {
		return errReader{errNoStore}
	}
	return &fillReader{f: f}
}

// fillReader follows a fill from byte 0.
type fillReader struct {
	f      *fill
	pos    int64
	closed bool // f.mu
}

func (r *fillReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	f := r.f
	f.mu.Lock()
	for {
		if r.closed {
			f.mu.Unlock()
			return 0, errReaderClosed
		}
		if f.state == failed {
			err := f.err
			f.mu.Unlock()
			return 0, err
		}
		if r.pos < f.written {
			break
		}
		if f.state == committed {
			f.mu.Unlock()
			return 0, io.EOF
		}
		f.cond.Wait()
	}
	if r.pos >= f.flushed {
		n := copy(p, f.buf[r.pos-f.flushed:])
		r.pos += int64(n)
		f.mu.Unlock()
		return n, nil
	}
	id, end := f.id, f.flushed
	f.mu.Unlock()
	if int64(len(p)) > end-r.pos {
		p = p[:end-r.pos]
	}
	n, err := f.s.readChunks(id, r.pos, p)
	r.pos += int64(n)
	if err != nil {
		f.mu.Lock()
		if f.state == failed {
			err = f.err // the chunks went with the fill
		}
		f.mu.Unlock()
	}
	return n, err
}

// Close releases the reader; a Read blocked in it returns.
func (r *fillReader) Close() error {
	r.f.mu.Lock()
	r.closed = true
	r.f.mu.Unlock()
	r.f.cond.Broadcast()
	return nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
func (e errReader) Close() error             { return nil }
