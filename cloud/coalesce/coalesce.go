// Package coalesce serves many mostly idle TCP connections from one epoll
// instance that is drained at most once per interval, so that a server
// whose thousands of clients each send a little now and then wakes up a few
// dozen times a second instead of once per message. Go's own poller wakes a
// thread for every packet that arrives; on a VM, where a wake-up costs tens
// of microseconds, that can cost more than handling the packet.
//
// The price is latency: what a client sends waits up to one interval before
// the connection's reader sees it. That suits a control plane (castd's MQTT
// broker, where nodes report every 30 s), not a data path. Writes are not
// delayed.
//
// A wrapped connection is a full net.Conn: deadlines, concurrent Close, and
// the errors the net package gives (net.ErrClosed, os.ErrDeadlineExceeded,
// io.EOF). Only Linux has the poller; elsewhere Wrap returns the connection
// as it is.
package coalesce

import "errors"

// ErrClosed is returned by Wrap once the Poller is closed.
var ErrClosed = errors.New("coalesce: poller closed")
