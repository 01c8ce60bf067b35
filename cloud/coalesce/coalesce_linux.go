package coalesce

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Poller owns an epoll instance with the connections it wraps. Its
// goroutine blocks in epoll_wait, so that an idle Poller costs nothing and
// the first packet after a quiet spell is read at once; it then hands
// everything that is ready to the waiting readers and sleeps out the
// interval before it looks again. While it sleeps nobody waits on the epoll
// instance and arrivals wake no thread. (Handing the epoll descriptor to
// Go's own poller instead would not do: the kernel wakes a nested epoll's
// watcher on every event, not only the first.)
type Poller struct {
	interval time.Duration
	log      *slog.Logger
	epfd     int
	wakefd   int // an eventfd in the set: Close's way into epoll_wait
	rounds   atomic.Uint64

	mu     sync.Mutex
	conns  map[int32]*conn
	next   int32
	closed bool

	done     chan struct{}
	loopDone chan struct{}
}

// New starts a Poller that looks for input at most once per interval.
func New(interval time.Duration, log *slog.Logger) (*Poller, error) {
	if interval <= 0 {
		return nil, fmt.Errorf("coalesce: interval %v must be positive", interval)
	}
	if log == nil {
		log = slog.Default()
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("coalesce: %w", os.NewSyscallError("epoll_create1", err))
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("coalesce: %w", os.NewSyscallError("eventfd", err))
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeID}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(wakefd)
		unix.Close(epfd)
		return nil, fmt.Errorf("coalesce: %w", os.NewSyscallError("epoll_ctl", err))
	}
	p := &Poller{
		interval: interval,
		log:      log,
		epfd:     epfd,
		wakefd:   wakefd,
		conns:    make(map[int32]*conn),
		done:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	go p.loop()
	return p, nil
}

// wakeID is the event data of wakefd; connections' IDs are positive.
const wakeID = 0

// Rounds is how many times the Poller has drained its ready connections.
func (p *Poller) Rounds() uint64 { return p.rounds.Load() }

func (p *Poller) loop() {
	defer close(p.loopDone)
	events := make([]unix.EpollEvent, 512)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		n, err := unix.EpollWait(p.epfd, events, -1) // blocks this thread, not a P
		if err == unix.EINTR {
			continue
		}
		select {
		case <-p.done:
			return
		default:
		}
		if err != nil {
			p.log.Error("coalesce: epoll_wait failed; closing the connections", "err", err)
			go p.Close() // it waits for this loop to end
			return
		}
		p.rounds.Add(1)
		p.deliver(events[:n])
		for n == len(events) { // more may be waiting
			if n, err = unix.EpollWait(p.epfd, events, 0); err != nil {
				break
			}
			p.deliver(events[:n])
		}
		// Let the next packets gather.
		timer.Reset(p.interval)
		select {
		case <-timer.C:
		case <-p.done:
			timer.Stop()
			return
		}
	}
}

// deliver wakes the readers and writers of the connections with events.
func (p *Poller) deliver(evs []unix.EpollEvent) {
	const (
		readable = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
		writable = unix.EPOLLOUT | unix.EPOLLHUP | unix.EPOLLERR
	)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ev := range evs {
		c := p.conns[ev.Fd]
		if c == nil {
			continue // closed since, or wakefd
		}
		if ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			c.hup.Store(true)
		}
		if ev.Events&readable != 0 {
			kick(c.rready)
		}
		if ev.Events&writable != 0 {
			kick(c.wready)
		}
	}
}

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Wrap takes over nc, which must be a TCP connection (anything that is not
// a socket is returned as it is), and returns a connection served by the
// Poller. nc must not be used afterwards. On error nc is closed.
func (p *Poller) Wrap(nc net.Conn) (net.Conn, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nc, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("coalesce: %w", err)
	}
	// A duplicate shares the socket, and closing the original takes it out
	// of Go's poller, which would otherwise wake for every packet anyway.
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		nc.Close()
		return nil, fmt.Errorf("coalesce: %w", err)
	}
	if derr != nil {
		nc.Close()
		return nil, fmt.Errorf("coalesce: %w", os.NewSyscallError("fcntl", derr))
	}
	c := &conn{
		p:      p,
		fd:     fd,
		laddr:  nc.LocalAddr(),
		raddr:  nc.RemoteAddr(),
		rready: make(chan struct{}, 1),
		wready: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	nc.Close()
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("coalesce: %w", os.NewSyscallError("fcntl", err))
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		unix.Close(fd)
		return nil, ErrClosed
	}
	for {
		p.next++
		if p.next <= 0 {
			p.next = 1
		}
		if p.conns[p.next] == nil {
			break
		}
	}
	c.id = p.next
	// Under p.mu, so that Close cannot close epfd in between.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: c.id}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.mu.Unlock()
		unix.Close(fd)
		return nil, fmt.Errorf("coalesce: %w", os.NewSyscallError("epoll_ctl", err))
	}
	p.conns[c.id] = c
	p.mu.Unlock()
	return c, nil
}

func (p *Poller) forget(c *conn) {
	p.mu.Lock()
	if p.conns[c.id] == c {
		delete(p.conns, c.id)
	}
	p.mu.Unlock()
}

// Close stops the Poller and closes every connection it still serves.
func (p *Poller) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	conns := make([]*conn, 0, len(p.conns))
	for _, c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	close(p.done)
	var one [8]byte
	one[0] = 1 // whatever the byte order, a nonzero count wakes epoll_wait
	if _, err := unix.Write(p.wakefd, one[:]); err != nil {
		p.log.Error("coalesce: cannot wake the poller to stop it", "err", err)
	}
	<-p.loopDone
	unix.Close(p.wakefd)
	return os.NewSyscallError("close", unix.Close(p.epfd))
}

// conn is a TCP connection served by a Poller.
type conn struct {
	p            *Poller
	id           int32
	laddr, raddr net.Addr

	// fdmu is held for reading around every system call on fd and for
	// writing by Close, so that fd is not closed (and its number reused)
	// under a call in flight.
	fdmu   sync.RWMutex
	fd     int
	closed atomic.Bool
	done   chan struct{} // closed by Close

	rready, wready chan struct{} // a token: look again
	rdl, wdl       atomic.Int64  // deadlines, Unix ns; 0 is none
	rwait, wwait   atomic.Bool   // a Read (Write) is in wait
	// drained is set when a read returned less than asked: the socket had
	// no more, and anything that arrives since raises an event, so the next
	// Read waits for the poller's token rather than try a read that would
	// only say EAGAIN. hup is set for good once an event said the peer
	// closed or the socket failed: the end may have come in the same event
	// as the last data, whose token is spent, so Read no longer waits first.
	drained, hup atomic.Bool
	wmu          sync.Mutex // one Write at a time, as net.Conn promises
}

func (c *conn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: err}
}

// sys runs f on the descriptor unless the connection is closed.
func (c *conn) sys(f func(fd int) (int, error)) (int, error) {
	c.fdmu.RLock()
	defer c.fdmu.RUnlock()
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	for {
		n, err := f(c.fd)
		if err != unix.EINTR {
			return n, err
		}
	}
}

func expired(dl *atomic.Int64) bool {
	d := dl.Load()
	return d != 0 && time.Now().UnixNano() >= d
}

// wait blocks until ready has a token, the deadline passes, or the
// connection closes. waiting tells the deadline's setter to send a token,
// so that a moved deadline is seen at once.
func (c *conn) wait(ready chan struct{}, dl *atomic.Int64, waiting *atomic.Bool) error {
	waiting.Store(true)
	defer waiting.Store(false)
	for {
		d := dl.Load()
		if d == 0 {
			select {
			case <-ready:
				return nil
			case <-c.done:
				return net.ErrClosed
			}
		}
		left := time.Until(time.Unix(0, d))
		if left <= 0 {
			return os.ErrDeadlineExceeded
		}
		t := time.NewTimer(left)
		select {
		case <-ready:
			t.Stop()
			return nil
		case <-c.done:
			t.Stop()
			return net.ErrClosed
		case <-t.C: // look at the deadline again: it may have moved
		}
	}
}

func (c *conn) Read(b []byte) (int, error) {
	for {
		if c.closed.Load() {
			return 0, c.opErr("read", net.ErrClosed)
		}
		if expired(&c.rdl) {
			return 0, c.opErr("read", os.ErrDeadlineExceeded)
		}
		if len(b) == 0 {
			return 0, nil
		}
		n, err := 0, error(unix.EAGAIN) // drained: what a read would say
		if !c.drained.Swap(false) || c.hup.Load() {
			n, err = c.sys(func(fd int) (int, error) { return unix.Read(fd, b) })
		}
		switch {
		case err == nil && n == 0:
			return 0, io.EOF
		case err == nil:
			if n < len(b) {
				c.drained.Store(true)
			}
			return n, nil
		case errors.Is(err, unix.EAGAIN):
			if err := c.wait(c.rready, &c.rdl, &c.rwait); err != nil {
				c.drained.Store(true) // still nothing read since
				return 0, c.opErr("read", err)
			}
		case errors.Is(err, net.ErrClosed):
			return 0, c.opErr("read", err)
		default:
			return 0, c.opErr("read", os.NewSyscallError("read", err))
		}
	}
}

func (c *conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	done := 0
	for {
		if c.closed.Load() {
			return done, c.opErr("write", net.ErrClosed)
		}
		if expired(&c.wdl) {
			return done, c.opErr("write", os.ErrDeadlineExceeded)
		}
		if done == len(b) {
			return done, nil
		}
		n, err := c.sys(func(fd int) (int, error) { return unix.Write(fd, b[done:]) })
		if n > 0 {
			done += n
		}
		switch {
		case err == nil:
		case errors.Is(err, unix.EAGAIN):
			if err := c.wait(c.wready, &c.wdl, &c.wwait); err != nil {
				return done, c.opErr("write", err)
			}
		case errors.Is(err, net.ErrClosed):
			return done, c.opErr("write", err)
		default:
			return done, c.opErr("write", os.NewSyscallError("write", err))
		}
	}
}

func (c *conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return c.opErr("close", net.ErrClosed)
	}
	close(c.done)
	c.p.forget(c)
	c.fdmu.Lock() // wait out system calls in flight
	defer c.fdmu.Unlock()
	// Closing the only descriptor of the socket also takes it out of the
	// epoll set.
	if err := unix.Close(c.fd); err != nil {
		return c.opErr("close", os.NewSyscallError("close", err))
	}
	return nil
}

func (c *conn) LocalAddr() net.Addr  { return c.laddr }
func (c *conn) RemoteAddr() net.Addr { return c.raddr }

func deadline(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	if n := t.UnixNano(); n > 0 {
		return n
	}
	return 1 // long past
}

func (c *conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *conn) SetReadDeadline(t time.Time) error {
	return c.setDeadline(t, &c.rdl, &c.rwait, c.rready)
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	return c.setDeadline(t, &c.wdl, &c.wwait, c.wready)
}

// setDeadline applies to a call in progress too: a token makes it look at
// the new deadline.
func (c *conn) setDeadline(t time.Time, dl *atomic.Int64, waiting *atomic.Bool, ready chan struct{}) error {
	if c.closed.Load() {
		return c.opErr("set", net.ErrClosed)
	}
	dl.Store(deadline(t))
	if waiting.Load() {
		kick(ready)
	}
	return nil
}
