// Package objstore is the on-disk object cache shared by the beacon's personal
// cache and castd's mid-tier cache. It stores HTTP responses: metadata and
// small bodies in one bbolt file, larger bodies as write-once files in a
// directory beside it (<db>.bodies/, as nginx's cache does), so that a hit on a
// large object is sent with sendfile(2) straight from the page cache. The
// store is bounded in size with LRU-like eviction kept on disk (RAM does not
// grow with the number of objects; a small bounded RAM cache keeps hot small
// objects), access times are written in batches (flash wear), and fills can
// be followed by other readers while they are written. A fill that did not
// commit (crash, kill -9, abort) is never visible as an object and is removed
// at the next Open; a committed body is never modified, so a reader never
// sees bytes change under it.
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
	// file is never wiped automatically. (A missing or damaged body file is
	// not reported this way: that object is dropped, see Store.Get.)
	ErrCorrupt = errors.New("objstore: cache file is corrupt")
)

// Options configures a Store.
type Options struct {
	MaxBytes   int64         // bound on the stored objects' sizes plus their metadata charge (required, > 0)
	AtimeFlush time.Duration // how often batched access times are written (DefaultAtimeFlush)
	Logger     *slog.Logger  // nil means slog.Default()
	// LockTimeout is how long Open waits for another process to release
	// the file lock before failing with ErrLocked (DefaultLockTimeout).
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
	Objects int64
	Bytes   int64 // body bytes, including fills in progress
	// MetaBytes is the metadata charge of the stored objects (a fixed
	// overhead plus key and header bytes each); Bytes+MetaBytes stays
	// within MaxBytes.
	MetaBytes int64
	MaxBytes  int64
	// FullSince is when the file system last refused a write for lack of
	// space, while that lasts (zero otherwise); NoSpaceErrors counts the
	// fills that failed so.
	FullSince     time.Time
	NoSpaceErrors int64
}

// Object is a committed object. Meta.Header may be shared with other
// Objects of the same version: read it, never modify it.
//
// A small body (up to the inline limit, 32 KiB) is read by Get and stays
// readable. A larger one is a file that each ReadAt and WriteRange opens:
// once a later fill replaces the object, or Delete or eviction removes it,
// they fail with ErrNotFound, but a WriteRange already under way sends the
// whole version it started with. An Object holds no file descriptor between
// calls, so it needs no Close.
type Object struct {
	Meta Meta
	// unexported fields
	s    *Store
	id   uint64
	file bool   // the body is the file s.bodyPath(id)
	body []byte // the inline body (read-only: it may be shared)
}

// ReadAt reads body bytes at off, as io.ReaderAt.
func (o *Object) ReadAt(p []byte, off int64) (int, error) {
	return o.readAt(p, off)
}

// WriteRange copies n body bytes starting at off to w. For a body in a file,
// w gets an *io.LimitedReader of the *os.File through io.Copy, so that an
// http.ResponseWriter of a plain TCP connection sends it with sendfile(2);
// no bbolt transaction is held while w blocks.
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
// with meta; meta.Size is set to the number of bytes written. A body in a
// file is synced and given its final name before the record is committed,
// so a crash at any point leaves either the whole object or none.
func (w *Writer) Commit(meta Meta) error { return w.f.commit(meta) }

// Abort discards the fill; followers get ErrAborted. Abort after Commit is a no-op.
func (w *Writer) Abort() { w.f.abort() }

// NewReader returns a reader over the fill from byte 0 that blocks until more
// data is written, returns io.EOF after Commit, and ErrAborted after Abort.
// A reader started before Commit reads that version to its end even if it
// is replaced or evicted meanwhile. Close it (or read it to the end) to
// release its file.
func (w *Writer) NewReader() io.ReadCloser { return w.f.newReader() }
