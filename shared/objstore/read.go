package objstore

import (
	"errors"
	"fmt"
	"io"
	"sync"

	bolt "go.etcd.io/bbolt"
)

const (
	writePiece = 32 << 10
	// smallBody is the size up to which Get copies the body along with
	// the metadata: a small hit then costs one read transaction, not two.
	smallBody = 16 << 10
)

// piecePool holds the buffers WriteRange copies through, so a read
// transaction never waits on the client's connection.
var piecePool = sync.Pool{New: func() any { b := make([]byte, writePiece); return &b }}

func (o *Object) readAt(p []byte, off int64) (int, error) {
	s, size := o.s, o.Meta.Size
	if s == nil {
		return 0, errNoStore
	}
	if off < 0 {
		return 0, errors.New("objstore: negative offset")
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= size {
		return 0, io.EOF
	}
	want := p
	if int64(len(want)) > size-off {
		want = want[:size-off]
	}
	var n int
	var err error
	if o.body != nil {
		n = copy(want, o.body[off:])
	} else {
		n, err = s.readChunks(o.id, off, want)
	}
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

func (o *Object) writeRange(w io.Writer, off, n int64) (int64, error) {
	s, size := o.s, o.Meta.Size
	if s == nil {
		return 0, errNoStore
	}
	if off < 0 || n < 0 || off > size || n > size-off {
		return 0, fmt.Errorf("objstore: range %d+%d outside a body of %d bytes", off, n, size)
	}
	if o.body != nil {
		m, err := w.Write(o.body[off : off+n])
		if err == nil && int64(m) < n {
			err = io.ErrShortWrite
		}
		return int64(m), err
	}
	bp := piecePool.Get().(*[]byte)
	defer piecePool.Put(bp)
	buf := *bp
	var done int64
	for done < n {
		k := int(min(int64(len(buf)), n-done))
		got, err := s.readChunks(o.id, off+done, buf[:k])
		if err != nil {
			return done, err
		}
		m, err := w.Write(buf[:got])
		done += int64(m)
		if err != nil {
			return done, err
		}
		if m < got {
			return done, io.ErrShortWrite
		}
	}
	return done, nil
}

// readChunks fills p with body bytes of object id from off, in read
// transactions of at most readTxnBytes.
func (s *Store) readChunks(id uint64, off int64, p []byte) (int, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	n := 0
	for n < len(p) {
		part := p[n:]
		if len(part) > readTxnBytes {
			part = part[:readTxnBytes]
		}
		var got int
		err := s.view(func(tx *bolt.Tx) error {
			var err error
			got, err = s.copyChunks(tx.Bucket(bucketChunks), id, off+int64(n), part)
			return err
		})
		n += got
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// copyChunks copies len(p) body bytes of object id from off out of b. A
// missing chunk means the object was deleted, replaced or evicted (ids are
// never reused): ErrNotFound.
func (s *Store) copyChunks(b *bolt.Bucket, id uint64, off int64, p []byte) (int, error) {
	cs := s.chunk
	var kb [chunkKeyLen]byte
	got := 0
	for got < len(p) {
		pos := off + int64(got)
		idx, within := pos/cs, pos%cs
		v := b.Get(chunkKey(&kb, id, uint32(idx)))
		if v == nil {
			return got, fmt.Errorf("objstore: object %d, chunk %d: %w", id, idx, ErrNotFound)
		}
		if int64(len(v)) <= within {
			return got, s.corruptf("object %d, chunk %d: %d bytes, need byte %d", id, idx, len(v), within)
		}
		got += copy(p[got:], v[within:])
		if got < len(p) && int64(len(v)) < cs {
			return got, s.corruptf("object %d, chunk %d: short chunk (%d bytes) before the end", id, idx, len(v))
		}
	}
	return got, nil
}
