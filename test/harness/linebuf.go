package harness

import (
	"bytes"
	"strings"
	"sync"
)

// LineBuffer collects a child process's output (as its Stdout or Stderr)
// so a test can poll it while the child runs.
type LineBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (w *LineBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// String is everything written so far.
func (w *LineBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// Lines returns the complete lines written so far.
func (w *LineBuffer) Lines() []string {
	s := w.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.Split(s[:i], "\n")
	}
	return nil
}
