//go:build !linux

package amtrelay

import (
	"fmt"
	"log/slog"
)

func newNative(name string, log *slog.Logger) (nativeReceiver, error) {
	return nil, fmt.Errorf("%w (interface %q)", ErrNativeUnsupported, name)
}
