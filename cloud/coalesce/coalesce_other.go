//go:build !linux

package coalesce

import (
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Poller is a no-op outside Linux.
type Poller struct{}

// New returns a Poller whose Wrap leaves connections as they are.
func New(interval time.Duration, log *slog.Logger) (*Poller, error) {
	if interval <= 0 {
		return nil, fmt.Errorf("coalesce: interval %v must be positive", interval)
	}
	return &Poller{}, nil
}

// Wrap returns c.
func (p *Poller) Wrap(c net.Conn) (net.Conn, error) { return c, nil }

// Rounds is always 0.
func (p *Poller) Rounds() uint64 { return 0 }

// Close does nothing.
func (p *Poller) Close() error { return nil }
