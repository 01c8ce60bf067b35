package objstore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
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

// A fill is one Writer's object in progress. The body is kept in buf while
// it fits the inline limit (it is then committed into bbolt with the
// record, in one transaction); past that it goes to the file <id>.part,
// written through the page cache, from which followers read with pread. RAM
// per fill is bounded by the inline limit, whatever the object size and
// follower count.
type fill struct {
	s    *Store
	key  string
	hint int64  // expected size, or -1
	id   uint64 // allocated by Create; names the body file

	wmu      sync.Mutex // serializes Write, Commit, Abort and Store.Close
	reserved int64      // bytes reserved in s (wmu)
	renamed  bool       // the file has its final name (wmu)

	mu      sync.Mutex // guards the fields below; followers wait on cond
	cond    sync.Cond
	buf     []byte   // the body while it is inline; kept after an inline commit
	file    *os.File // the body file once the body outgrew buf
	refs    int      // the writer until it ends, and followers until they end; file closes at 0
	written int64
	state   fillState
	err     error // why the fill failed
}

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
	s := f.s
	n := int64(len(p))
	if f.written+n > s.max {
		err := fmt.Errorf("%w: %q grew past %d bytes", ErrTooLarge, f.key, s.max)
		f.fail(err)
		return 0, err
	}
	if err := s.reserve(n); err != nil {
		f.fail(err)
		return 0, err
	}
	f.reserved += n
	if f.file == nil && f.written+n <= s.inlineMax && f.hint <= s.inlineMax {
		f.mu.Lock()
		if f.buf == nil && f.hint > 0 {
			f.buf = make([]byte, 0, f.hint) // the size is known: no regrowth
		}
		f.buf = append(f.buf, p...)
		f.written += n
		f.mu.Unlock()
		f.cond.Broadcast()
		return len(p), nil
	}
	if f.file == nil {
		err := f.spill()
		if isNoSpace(err) {
			if freed, ferr := s.freeDisk(int64(len(f.buf)) + n); ferr == nil && freed > 0 {
				err = f.spill()
			}
			if isNoSpace(err) {
				err = s.noSpace(f.key, err)
			}
		}
		if err != nil {
			f.fail(err)
			return 0, err
		}
	}
	// Only the writer writes, at the end; followers read below written.
	m, err := f.writeFile(p)
	if isNoSpace(err) {
		// The file system is full although the store is within its bound:
		// make room and try the rest once more.
		if freed, ferr := s.freeDisk(int64(len(p) - m)); ferr == nil && freed > 0 {
			var m2 int
			m2, err = f.writeFile(p[m:])
			m += m2
		}
	}
	if err != nil {
		if isNoSpace(err) {
			err = s.noSpace(f.key, err)
		} else {
			err = fmt.Errorf("objstore: writing the body of %q: %w", f.key, err)
		}
		f.fail(err)
		return m, err
	}
	return m, nil
}

// writeFile appends p to the body file and tells followers (wmu held).
func (f *fill) writeFile(p []byte) (int, error) {
	m, err := f.file.Write(p)
	if m > 0 {
		f.mu.Lock()
		f.written += int64(m)
		f.mu.Unlock()
		f.cond.Broadcast()
	}
	return m, err
}

// spill moves the body from buf to a new .part file (wmu held).
func (f *fill) spill() error {
	path := f.s.partPath(f.id)
	file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("objstore: body file of %q: %w", f.key, err)
	}
	if len(f.buf) > 0 {
		if _, err := file.Write(f.buf); err != nil {
			file.Close()
			os.Remove(path)
			return fmt.Errorf("objstore: writing the body of %q: %w", f.key, err)
		}
	}
	f.mu.Lock()
	f.file, f.buf = file, nil
	f.mu.Unlock()
	return nil
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

// release drops a reference (f.mu held); the last one closes the file.
func (f *fill) release() {
	f.refs--
	if f.refs == 0 && f.file != nil {
		f.file.Close()
	}
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
	inFile := f.file != nil
	// The metadata is charged like body bytes (see metaCharge); the
	// record's length does not depend on the access time.
	probe, err := encodeRecord(nil, &m, f.id, 0, inFile)
	if err != nil {
		return err
	}
	charge := metaCharge(len(f.key), len(probe))
	if err := s.reserve(charge); err != nil {
		f.fail(err)
		return err
	}
	f.reserved += charge
	if inFile {
		// The data is on disk before a record can point at it, and the
		// name is final before the record is written (see body.go).
		if !s.noSync {
			if err := f.file.Sync(); err != nil {
				if isNoSpace(err) {
					err = s.noSpace(f.key, err)
				} else {
					err = fmt.Errorf("objstore: syncing the body of %q: %w", f.key, err)
				}
				f.fail(err)
				return err
			}
		}
		if err := os.Rename(s.partPath(f.id), s.bodyPath(f.id)); err != nil {
			err = fmt.Errorf("objstore: body file of %q: %w", f.key, err)
			f.fail(err)
			return err
		}
		f.renamed = true
	}
	key := []byte(f.key)
	var d deletion
	err = f.commitTx(key, &m, inFile, &d)
	if isNoSpace(err) {
		// bbolt could not grow its file: make room and try once more.
		if freed, ferr := s.freeDisk(int64(len(f.buf)) + charge); ferr == nil && freed > 0 {
			err = f.commitTx(key, &m, inFile, &d)
		}
		if isNoSpace(err) {
			err = s.noSpace(f.key, err)
		}
	}
	if err != nil {
		f.fail(err)
		return err
	}
	s.mu.Lock()
	s.reserved -= f.reserved
	s.bytes += f.written
	s.meta += charge
	s.objects++
	delete(s.fills, f)
	s.mu.Unlock()
	f.reserved = 0
	s.deleted(&d) // the version replaced, if any
	s.spaceOK()

	f.mu.Lock()
	f.state = committed
	f.release() // followers may still read the file
	f.mu.Unlock()
	f.cond.Broadcast()
	return nil
}

// commitTx writes the object's records in one transaction (wmu held).
func (f *fill) commitTx(key []byte, m *Meta, inFile bool, dp *deletion) error {
	s := f.s
	var d deletion
	hw := s.hotWrite()
	err := s.update(func(tx *bolt.Tx) error {
		d = deletion{}
		if _, _, err := s.deleteKey(tx, key, &d); err != nil {
			return err
		}
		mb := tx.Bucket(bucketMeta)
		if f.id > mb.Sequence() {
			if err := mb.SetSequence(f.id); err != nil {
				return err
			}
		}
		ik := new([8]byte) // bbolt keeps keys and values until the commit
		switch {
		case inFile:
			if err := tx.Bucket(bucketFiles).Put(idKey(ik, f.id), key); err != nil {
				return err
			}
		case len(f.buf) > 0:
			// buf does not change from now on: it is bbolt's until the commit.
			if err := tx.Bucket(bucketInline).Put(idKey(ik, f.id), f.buf); err != nil {
				return err
			}
		}
		atime := s.now()
		rec, err := encodeRecord(nil, m, f.id, atime, inFile)
		if err != nil {
			return err
		}
		if err := mb.Put(key, rec); err != nil {
			return err
		}
		if err := tx.Bucket(bucketLRU).Put(lruKey(new([lruKeyLen]byte), atime, f.id), key); err != nil {
			return err
		}
		hw.change(f.key)
		return nil
	})
	hw.done()
	*dp = d
	return err
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
// the body file is removed and the reservation released. If the file
// cannot be removed, the next Open removes it.
func (f *fill) fail(err error) {
	f.mu.Lock()
	if f.state != filling {
		f.mu.Unlock()
		return
	}
	f.state, f.err = failed, err
	f.buf = nil
	hadFile := f.file != nil
	f.release()
	f.mu.Unlock()
	f.cond.Broadcast()
	s := f.s
	if hadFile {
		path := s.partPath(f.id)
		if f.renamed {
			path = s.bodyPath(f.id)
		}
		if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			s.log.Warn("objstore: removing a failed fill; the next Open will", "path", path, "key", f.key, "err", rerr)
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
	r := &fillReader{f: f}
	f.mu.Lock()
	if f.refs > 0 {
		f.refs++
		r.shared = true
		// A follower dropped without Close must not keep the file open.
		runtime.SetFinalizer(r, func(r *fillReader) { r.Close() })
	}
	f.mu.Unlock()
	return r
}

// fillReader follows a fill from byte 0. A follower that starts while the
// fill's file may still be open shares it (a reference, given back at the
// end of the body, on an error or on Close), so it reads the version it
// follows to the end even if that is replaced or evicted meanwhile. One
// that starts later opens the committed body file itself.
type fillReader struct {
	f      *fill
	pos    int64
	shared bool     // holds a reference to f (f.mu)
	own    *os.File // the committed body file, opened by a late follower
	closed bool     // f.mu
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
			r.drop()
			f.mu.Unlock()
			return 0, err
		}
		if r.pos < f.written {
			break
		}
		if f.state == committed {
			r.drop()
			f.mu.Unlock()
			return 0, io.EOF
		}
		f.cond.Wait()
	}
	if f.file == nil {
		n := copy(p, f.buf[r.pos:f.written])
		r.pos += int64(n)
		f.mu.Unlock()
		return n, nil
	}
	file, end := f.file, f.written
	if !r.shared {
		// The fill has ended and closed its file: it committed (it did not
		// fail, see above), so the body has its final name, unless it is
		// already gone.
		if r.own == nil {
			o := &Object{Meta: Meta{Key: f.key, Size: f.written}, s: f.s, id: f.id, file: true}
			own, err := o.open()
			if err != nil {
				f.mu.Unlock()
				return 0, err
			}
			r.own = own
		}
		file = r.own
	}
	f.mu.Unlock()
	if int64(len(p)) > end-r.pos {
		p = p[:end-r.pos]
	}
	n, err := file.ReadAt(p, r.pos)
	r.pos += int64(n)
	if n == len(p) {
		return n, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == failed {
		return n, f.err
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF // below written: the file was cut
	}
	return n, fmt.Errorf("objstore: reading the body of %q: %w", f.key, err)
}

// drop gives back what the reader holds (f.mu held).
func (r *fillReader) drop() {
	if r.shared {
		r.shared = false
		r.f.release()
	}
	if r.own != nil {
		r.own.Close()
		r.own = nil
	}
}

// Close releases the reader; a Read blocked in it returns.
func (r *fillReader) Close() error {
	r.f.mu.Lock()
	r.closed = true
	r.drop()
	r.f.mu.Unlock()
	r.f.cond.Broadcast()
	return nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
func (e errReader) Close() error             { return nil }
