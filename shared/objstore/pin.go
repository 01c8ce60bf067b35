package objstore

import (
	"errors"
	"io"
	"os"
	"sync"
)

// Pinned is one version of an object's body held open: it reads the same
// bytes until Close, even after the object is replaced, deleted or evicted
// (the body file stays readable while open; its disk space comes back at
// Close). It is for readers that take long over one version, such as castd's
// multicast sessions; Close it promptly when done.
type Pinned struct {
	size int64
	body []byte // inline bodies

	mu sync.Mutex
	f  *os.File // file bodies; nil once closed
}

// Pin opens o's body for reading until Close. It fails with ErrNotFound
// when the object is already gone.
func (o *Object) Pin() (*Pinned, error) {
	if o.s == nil {
		return nil, errNoStore
	}
	p := &Pinned{size: o.Meta.Size}
	if !o.file {
		p.body = o.body
		return p, nil
	}
	f, err := o.open()
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != o.Meta.Size {
		f.Close()
		return nil, o.short(err)
	}
	p.f = f
	return p, nil
}

// errPinClosed is ReadAt's error after Close.
var errPinClosed = errors.New("objstore: pinned body closed")

// Size is the body's length.
func (p *Pinned) Size() int64 { return p.size }

// ReadAt reads body bytes at off, as io.ReaderAt.
func (p *Pinned) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("objstore: negative offset")
	}
	if off >= p.size {
		if len(b) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := b
	if int64(len(want)) > p.size-off {
		want = want[:p.size-off]
	}
	var n int
	if p.body != nil || p.size == 0 {
		n = copy(want, p.body[off:])
	} else {
		p.mu.Lock()
		f := p.f
		p.mu.Unlock()
		if f == nil {
			return 0, errPinClosed
		}
		var err error
		if n, err = f.ReadAt(want, off); n < len(want) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// Close releases the body. It may be called more than once.
func (p *Pinned) Close() error {
	p.mu.Lock()
	f := p.f
	p.f = nil
	p.mu.Unlock()
	if f != nil {
		return f.Close()
	}
	return nil
}
