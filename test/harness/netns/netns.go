// Package netns builds throwaway Linux network namespaces joined by veth
// links, for tests that need several hosts: it runs programs inside them
// (through `ip netns exec`) and opens sockets inside them from the calling
// process, so a test can send, receive and make HTTP requests as any of its
// hosts without helper processes.
//
// Everything a Lab creates carries a random suffix, so concurrent runs never
// collide, and Close removes it all: the processes still running in its
// namespaces (which only the lab's user put there), then the namespaces,
// which takes their veths and addresses with them. Nothing is configured
// in the caller's own namespace.
//
// It needs Linux, root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2.
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrUnavailable: namespaces cannot be made here (not root, not Linux, or no
// `ip`). Tests skip on it.
var ErrUnavailable = errors.New("netns: network namespaces unavailable")

// Available reports whether a Lab can be created, wrapping ErrUnavailable
// with the reason if not.
func Available() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("%w: not Linux", ErrUnavailable)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root", ErrUnavailable)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("%w: iproute2: %v", ErrUnavailable, err)
	}
	return nil
}

// Lab is a set of namespaces that live and die together.
type Lab struct {
	prefix string

	mu     sync.Mutex
	spaces []*NS
	closed bool
}

// NewLab returns an empty lab whose namespaces are named
// "PREFIX-RANDOM-NAME". prefix should be short: names appear in
// /run/netns and in error messages.
func NewLab(prefix string) (*Lab, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	return &Lab{prefix: prefix + "-" + hex.EncodeToString(b[:])}, nil
}

// NS is one network namespace of a lab.
type NS struct {
	lab  *Lab
	name string // short name given to Add
	full string // name under /run/netns
}

// Add creates a namespace with its loopback up.
func (l *Lab) Add(name string) (*NS, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("netns: lab closed")
	}
	n := &NS{lab: l, name: name, full: l.prefix + "-" + name}
	if err := run("ip", "netns", "add", n.full); err != nil {
		return nil, err
	}
	// Registered before anything else can fail, so Close removes it.
	l.spaces = append(l.spaces, n)
	if err := n.IP("link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	return n, nil
}

// Close kills what still runs in the lab's namespaces and deletes them. It
// is safe to call more than once.
func (l *Lab) Close() error {
	l.mu.Lock()
	spaces := l.spaces
	l.spaces, l.closed = nil, true
	l.mu.Unlock()
	var errs []error
	for _, n := range spaces {
		n.killAll()
	}
	for _, n := range spaces {
		if err := run("ip", "netns", "del", n.full); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killAll SIGKILLs the processes in n: only the lab's owner started any
// there, and a namespace's veths outlive `ip netns del` while a process
// holds it.
func (n *NS) killAll() {
	out, err := exec.Command("ip", "netns", "pids", n.full).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// Name is the namespace's name for `ip netns` and `ip -n`.
func (n *NS) Name() string { return n.full }

func (n *NS) String() string { return n.name }

// Link joins a and b with a veth pair, aIf in a and bIf in b, both up. The
// pair is created inside a, so its names never appear in the caller's
// namespace.
func (l *Lab) Link(a *NS, aIf string, b *NS, bIf string) error {
	if err := a.IP("link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.full); err != nil {
		return err
	}
	if err := a.IP("link", "set", aIf, "up"); err != nil {
		return err
	}
	return b.IP("link", "set", bIf, "up")
}

// IP runs `ip -n NS args...`.
func (n *NS) IP(args ...string) error {
	return run("ip", append([]string{"-n", n.full}, args...)...)
}

// Addr adds prefix (e.g. "10.200.1.1/30" or "fd00:200:1::1/64") to ifname.
// IPv6 addresses skip duplicate address detection, so they are usable at
// once.
func (n *NS) Addr(ifname, prefix string) error {
	args := []string{"addr", "add", prefix, "dev", ifname}
	if strings.Contains(prefix, ":") {
		args = append(args, "nodad")
	}
	return n.IP(args...)
}

// Sysctl sets key (dotted, e.g. "net.ipv4.conf.all.rp_filter") inside n.
func (n *NS) Sysctl(key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	return n.Do(func() error {
		// /proc/sys/net shows the namespace of the thread that opens it.
		return os.WriteFile(path, []byte(value), 0o644)
	})
}

// NoRPFilter turns reverse-path filtering off in n (all and default
// interfaces): datagrams re-emitted by an AMT gateway or forwarded from a
// multicast source keep a source that is not on the link they arrive on,
// and SSM receivers must not drop them for it.
func (n *NS) NoRPFilter() error {
	for _, k := range []string{"all", "default"} {
		if err := n.Sysctl("net.ipv4.conf."+k+".rp_filter", "0"); err != nil {
			return err
		}
	}
	return nil
}

// Command returns a command that runs name inside n. It is killed if the
// caller dies (unless it changes user, which clears that); Close kills
// what is left in the namespace.
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.full, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Wrap returns the program and arguments that run bin with args inside n,
// for starters that take a binary and its arguments.
func (n *NS) Wrap(bin string, args ...string) (string, []string) {
	return "ip", append([]string{"netns", "exec", n.full, bin}, args...)
}

// Do runs f on an OS thread that has joined n, then returns the thread to
// the caller's namespace. Sockets f creates stay in n for their whole life,
// whatever thread later uses them, so f should only create them: anything
// f starts that outlives it runs outside n.
func (n *NS) Do(f func() error) error {
	target, err := os.Open("/run/netns/" + n.full)
	if err != nil {
		return fmt.Errorf("netns %s: %w", n.name, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	// A fresh goroutine: if the thread cannot be switched back, it stays
	// locked and the runtime retires it when the goroutine exits.
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns %s: setns: %w", n.name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("netns: returning from %s: %w", n.name, err))
			return // still locked: the thread dies with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// ListenUDP opens a UDP socket in n ("udp", "udp4" or "udp6").
func (n *NS) ListenUDP(network string, laddr *net.UDPAddr) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := n.Do(func() (err error) {
		c, err = net.ListenUDP(network, laddr)
		return err
	})
	return c, err
}

// ListenPacket is net.ListenPacket in n (raw IP sockets included).
func (n *NS) ListenPacket(network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.Do(func() (err error) {
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}

// DialContext dials from n. The connect completes on the thread that made
// the socket, but that does not matter: the socket belongs to n.
func (n *NS) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// HTTPClient returns a client whose connections are made from n.
func (n *NS) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:             nil,
			DialContext:       n.DialContext,
			DisableKeepAlives: true,
		},
	}
}

func run(name string, args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// InterfaceByName looks ifname up in n.
func (n *NS) InterfaceByName(ifname string) (*net.Interface, error) {
	var ifi *net.Interface
	err := n.Do(func() (err error) {
		ifi, err = net.InterfaceByName(ifname)
		return err
	})
	return ifi, err
}

// ReadFile reads a file whose contents depend on the reader's network
// namespace, such as /proc/net/mcfilter (read it as
// /proc/thread-self/net/mcfilter: /proc/net follows the process's main
// thread, not the one that joined n).
func (n *NS) ReadFile(path string) ([]byte, error) {
	var b []byte
	err := n.Do(func() (err error) {
		b, err = os.ReadFile(path)
		return err
	})
	return b, err
}
