//go:build !linux

package amtgw

import (
	"fmt"
	"log/slog"
)

// newReemitter: re-emission relies on Linux's IP_HDRINCL semantics (BSDs
// want some header fields in host byte order), so it is Linux only.
func newReemitter(iface string, ttl uint8, qlen, size int, log *slog.Logger) (*reemitter, error) {
	return nil, fmt.Errorf("amtgw: re-emission on %s: only on Linux: %w", iface, ErrReemit)
}
