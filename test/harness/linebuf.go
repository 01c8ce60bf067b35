package harness

import (
	"bytes"
	"strings"
	"sync"
)

// LineBuffer collects a child process's output (as its Stdout or Stderr),
// or a logger's, so a test can read it while the writer runs.
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

// Reset forgets what was written.
func (w *LineBuffer) Reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Reset()
}

// Lines returns the complete lines written so far.
func (w *LineBuffer) Lines() []string {
	s := w.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.Split(s[:i], "\n")
	}
	return nil
}
