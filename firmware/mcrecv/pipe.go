package mcrecv

import (
	"io"
	"sync"
)

// pipe carries the decoded object from the Assembler (which writes with its
// lock held, from the goroutines reading packets) to the cache's fill. A
// write is copied and returns at once while fewer than max bytes wait, so a
// reader that pauses briefly never stalls packet reception; past max it
// blocks, which bounds memory when the reader stalls for good.
type pipe struct {
	mu     sync.Mutex
	cond   *sync.Cond
	buf    []byte
	off    int
	max    int
	werr   error // set by CloseWrite: what the reader gets after the data
	rerr   error // set by the reader's Close: what writes get
	closed bool
}

func newPipe(max int) *pipe {
	p := &pipe{max: max}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *pipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.buf)-p.off >= p.max && p.rerr == nil && !p.closed {
		p.cond.Wait()
	}
	if p.rerr != nil {
		return 0, p.rerr
	}
	if p.closed {
		return 0, io.ErrClosedPipe
	}
	if p.off > 0 && p.off == len(p.buf) {
		p.buf, p.off = p.buf[:0], 0
	}
	p.buf = append(p.buf, b...)
	p.cond.Broadcast()
	return len(b), nil
}

func (p *pipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.off == len(p.buf) && !p.closed && p.rerr == nil {
		p.cond.Wait()
	}
	if p.rerr != nil {
		return 0, io.ErrClosedPipe
	}
	if p.off == len(p.buf) {
		if p.werr != nil {
			return 0, p.werr
		}
		return 0, io.EOF
	}
	n := copy(b, p.buf[p.off:])
	p.off += n
	if p.off == len(p.buf) {
		p.buf, p.off = p.buf[:0], 0
	}
	p.cond.Broadcast()
	return n, nil
}

// CloseWrite ends the data: the reader gets err (io.EOF when nil) after
// what is buffered.
func (p *pipe) CloseWrite(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed, p.werr = true, err
	}
	p.cond.Broadcast()
}

// Close is the reader's: the object's consumer went away.
func (p *pipe) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rerr == nil {
		p.rerr = errReaderGone
	}
	p.cond.Broadcast()
	return nil
}

// readerGone reports whether the reader closed the pipe.
func (p *pipe) readerGone() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rerr != nil
}
