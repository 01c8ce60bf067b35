package brokertest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// RawClient is a bare MQTT 3.1.1 client on one TCP connection, for tests
// and benchmarks that need thousands of clients and none of a client
// library's goroutines: it logs in (with a will), publishes at QoS 0 or 1,
// and reads nothing after CONNACK.
type RawClient struct {
	Conn net.Conn
	pid  uint16 // last packet identifier; one goroutine at a time publishes
}

// Will is a CONNECT's last will.
type Will struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
}

// ErrRefused is returned by DialRaw when the broker answers CONNECT with a
// return code other than 0.
var ErrRefused = errors.New("brokertest: connection refused by broker")

// DialRaw connects to addr, sends CONNECT (clean session, the given
// keepalive in seconds, a login when user is not empty, will if not nil)
// and waits up to timeout for CONNACK.
func DialRaw(addr, clientID, user, pass string, keepalive uint16, will *Will, timeout time.Duration) (*RawClient, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	flags := byte(0x02) // clean session
	if will != nil {
		flags |= 0x04 | will.QoS&3<<3
		if will.Retain {
			flags |= 0x20
		}
	}
	if user != "" {
		flags |= 0x80 | 0x40
	}
	vh := appendStr(nil, "MQTT")
	vh = append(vh, 4, flags)
	vh = binary.BigEndian.AppendUint16(vh, keepalive)
	vh = appendStr(vh, clientID)
	if will != nil {
		vh = appendStr(vh, will.Topic)
		vh = binary.BigEndian.AppendUint16(vh, uint16(len(will.Payload)))
		vh = append(vh, will.Payload...)
	}
	if user != "" {
		vh = appendStr(vh, user)
		vh = appendStr(vh, pass)
	}
	if _, err := c.Write(appendPacket(nil, 0x10, vh)); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil {
		c.Close()
		return nil, fmt.Errorf("brokertest: connack: %w", err)
	}
	if ack[0] != 0x20 || ack[1] != 2 {
		c.Close()
		return nil, fmt.Errorf("brokertest: want CONNACK, got % x", ack)
	}
	if ack[3] != 0 {
		c.Close()
		return nil, fmt.Errorf("%w: return code %d", ErrRefused, ack[3])
	}
	_ = c.SetReadDeadline(time.Time{})
	return &RawClient{Conn: c}, nil
}

// Publish sends a PUBLISH at qos (0 or 1, with the next packet identifier).
func (c *RawClient) Publish(topic string, payload []byte, qos byte, retain bool) error {
	if qos > 1 {
		return fmt.Errorf("brokertest: QoS %d unsupported", qos)
	}
	h := byte(0x30) | qos<<1
	if retain {
		h |= 1
	}
	body := appendStr(make([]byte, 0, 4+len(topic)+len(payload)), topic)
	if qos > 0 {
		c.pid++
		if c.pid == 0 {
			c.pid = 1
		}
		body = binary.BigEndian.AppendUint16(body, c.pid)
	}
	body = append(body, payload...)
	_, err := c.Conn.Write(appendPacket(make([]byte, 0, 5+len(body)), h, body))
	return err
}

// Deafen asks the kernel (Linux) to wake nobody for what the broker sends
// until a mebibyte of it is queued, for a client that never reads and
// publishes a handful of messages. A benchmark that
// simulates a fleet on the broker's own host needs it: a simulated node
// woken for every acknowledgement takes the CPU from the broker, which a
// node across the network would not.
func (c *RawClient) Deafen() error {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return errors.New("brokertest: not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, 1<<20)
	}); err != nil {
		return err
	}
	return serr
}

// Close closes the connection.
func (c *RawClient) Close() error { return c.Conn.Close() }

func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// appendPacket appends a fixed header (type byte, variable-length
// remaining length) and the rest.
func appendPacket(b []byte, typ byte, rest []byte) []byte {
	b = append(b, typ)
	n := len(rest)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			break
		}
	}
	return append(b, rest...)
}
