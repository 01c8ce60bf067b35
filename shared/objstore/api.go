// Package objstore is the on-disk object cache shared by the beacon's personal
// cache and castd's mid-tier cache: HTTP response bodies stored in chunks in one
// bbolt file, with their metadata, bounded in size with LRU-like eviction kept
// on disk (RAM does not grow with the number of objects), access times written
// in batches (flash wear), and fills that other readers can follow while they
// are written. A fill that did not commit (crash, kill -9, abort) is never
// visible as an object and is removed at the next Open.
package objstore

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// Sentinel errors callers branch on.
var (
	ErrNotFound = errors.New("objstore: not found")
	ErrTooLarge = errors.New("objstore: object larger than the cache")
	ErrAborted  = errors.New("objstore: fill aborted")
	ErrClosed   = errors.New("objstore: store closed")
	// ErrCorrupt wraps any error that shows the bbolt file is damaged; the
	// file is never wiped automatically.
	ErrCorrupt = errors.New("objstore: cache file is corrupt")
)

// Options configures a Store.
type Options struct {
	MaxBytes   int64         // bound on the sum of stored object sizes (required, > 0)
	ChunkSize  int           // bytes per stored chunk; 0 means 64 KiB
	AtimeFlush time.Duration // how often batched access times are written; 0 means 30 s
	Logger     *slog.Logger  // nil means slog.Default()
	// LockTimeout is how long Open waits for another process to release
	// the file lock before failing with ErrLocked; 0 means 1 s.
	LockTimeout time.Duration
}

// Meta is what the cache keeps about one stored HTTP response.
type Meta struct {
	Key          string      `json:"key"`
	Status       int         `json:"status"`
	Header       http.Header `json:"header"` // end-to-end response headers as received
	Size         int64       `json:"size"`   // body length in bytes
	RequestTime  time.Time   `json:"request_time"`
	ResponseTime time.Time   `json:"response_time"`
}

// Stats are the store's counters.
type Stats struct {
	Objects  int64
	Bytes    int64
	MaxBytes int64
}

// Object is a committed object. Its body stays readable after a later fill
// replaces it or eviction removes it only until then: readers get
// ErrNotFound from ReadAt/WriteRange once the data is gone. (Bodies of up
// to 16 KiB are copied by Get and stay readable.)
type Object struct {
	Meta Meta
	// unexported fields
	s    *Store
	id   uint64
	body []byte // the whole body, if small enough for Get to copy it
}

// ReadAt reads body bytes at off, as io.ReaderAt.
func (o *Object) ReadAt(p []byte, off int64) (int, error) {
	return o.readAt(p, off)
}

// WriteRange copies n body bytes starting at off to w, in bounded pieces,
// without holding a bbolt transaction open while w blocks.
func (o *Object) WriteRange(w io.Writer, off, n int64) (int64, error) {
	return o.writeRange(w, off, n)
}

// Writer fills one object. Data written is readable by followers (NewReader)
// as soon as it is written; the object becomes visible to Get only on Commit.
type Writer struct {
	// unexported fields
	f *fill
}

// Write appends body bytes.
func (w *Writer) Write(p []byte) (int, error) { return w.f.write(p) }

// Commit makes the object visible (replacing any older version of the key)
// with meta; meta.Size is set to the number of bytes written.
func (w *Writer) Commit(meta Meta) error { return w.f.commit(meta) }

// Abort discards the fill; followers get ErrAborted. Abort after Commit is a no-op.
func (w *Writer) Abort() { w.f.abort() }

// NewReader returns a reader over the fill from byte 0 that blocks until more
// data is written, returns io.EOF after Commit, and ErrAborted after Abort.
func (w *Writer) NewReader() io.ReadCloser { return w.f.newReader() }
