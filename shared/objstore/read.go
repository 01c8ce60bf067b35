package objstore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// copyBufs serve WriteRange to writers that cannot read from a file
// themselves.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

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
	if o.file {
		n, err = o.readFile(want, off)
	} else {
		n = copy(want, o.body[off:])
	}
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

// readFile reads len(p) bytes of a body file at off.
func (o *Object) readFile(p []byte, off int64) (int, error) {
	f, err := o.open()
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := f.ReadAt(p, off)
	if n < len(p) {
		return n, o.short(err)
	}
	return n, nil
}

// open opens the body file: ErrNotFound once the object is gone.
func (o *Object) open() (*os.File, error) {
	s := o.s
	if s.closed.Load() {
		return nil, ErrClosed
	}
	f, err := openBody(s.bodyPath(o.id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("objstore: body of %q: %w", o.Meta.Key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("objstore: body of %q: %w", o.Meta.Key, err)
	}
	return f, nil
}

// short handles a body file that ended before its recorded size: damage,
// since body files are never written after Commit.
func (o *Object) short(err error) error {
	if err != nil && err != io.EOF {
		return fmt.Errorf("objstore: reading the body of %q: %w", o.Meta.Key, err)
	}
	return o.s.dropBroken(o.Meta.Key, o.id, io.ErrUnexpectedEOF)
}

func (o *Object) writeRange(w io.Writer, off, n int64) (int64, error) {
	s, size := o.s, o.Meta.Size
	if s == nil {
		return 0, errNoStore
	}
	if off < 0 || n < 0 || off > size || n > size-off {
		return 0, fmt.Errorf("objstore: range %d+%d outside a body of %d bytes", off, n, size)
	}
	if !o.file {
		m, err := w.Write(o.body[off : off+n])
		if err == nil && int64(m) < n {
			err = io.ErrShortWrite
		}
		return int64(m), err
	}
	if n == 0 {
		return 0, nil
	}
	f, err := o.open()
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if off > 0 {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return 0, fmt.Errorf("objstore: body of %q: %w", o.Meta.Key, err)
		}
	}
	// An *io.LimitedReader of an *os.File is what net.TCPConn.ReadFrom
	// turns into sendfile(2), through http.ResponseWriter's ReadFrom (see
	// TestWriteRangeSendfile); other writers get a plain copy.
	lr := &io.LimitedReader{R: f, N: n}
	var m int64
	if _, ok := w.(io.ReaderFrom); ok {
		m, err = io.Copy(w, lr)
	} else {
		bp := copyBufs.Get().(*[]byte)
		m, err = io.CopyBuffer(w, lr, *bp)
		copyBufs.Put(bp)
	}
	if err == nil && m < n {
		// The file ended early: nothing stopped the copy but the file.
		return m, o.short(nil)
	}
	return m, err
}
