//go:build unix

package identity

import (
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestLoadFileRefusesFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo.json")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := LoadFile(path)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrMalformedKey) {
			t.Errorf("error = %v, want ErrMalformedKey", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("LoadFile hung on a FIFO")
	}
}
