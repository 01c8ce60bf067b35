package objstore

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrLocked is returned by Open when another process holds the cache file.
var ErrLocked = errors.New("objstore: cache file is locked by another process")

const (
	defaultChunkSize   = 64 << 10
	minChunkSize       = 64
	maxChunkSize       = 16 << 20
	defaultAtimeFlush  = 30 * time.Second
	defaultLockTimeout = time.Second

	// fillTxnBytes is how much body a fill buffers before writing it in one
	// transaction: one fsync per MiB, not per chunk.
	fillTxnBytes = 1 << 20
	// readTxnBytes bounds what one read transaction copies, so no read
	// transaction is long enough to hold up bbolt's remap.
	readTxnBytes = 1 << 20
	// atimeBatchMax and atimeBatchBytes bound the batch of access times
	// kept in RAM (keys can be long URLs).
	atimeBatchMax   = 4096
	atimeBatchBytes = 512 << 10
	// deleteBatch is how many keys DeletePrefix removes per transaction.
	deleteBatch = 256

	// bbolt maps the whole file; on 32-bit systems the map is at most
	// 1 GiB (mips) or 2 GiB, and grows in 1 GiB steps past 1 GiB.
	max32BitBytes = 768 << 20
)

// Store is a bbolt-backed object cache. It is safe for concurrent use.
type Store struct {
	db         *bolt.DB
	path       string
	log        *slog.Logger
	max        int64
	chunk      int64
	fillBytes  int   // bytes a fill buffers per transaction (a multiple of chunk)
	evictSlack int64 // extra bytes an eviction frees, so a growing fill does not evict on every Write

	clock  atomic.Int64 // last access time handed out (Unix ns)
	closed atomic.Bool

	mu       sync.Mutex
	bytes    int64 // committed body bytes
	objects  int64
	reserved int64 // bytes written by fills in progress
	fills    map[*fill]struct{}

	evictMu sync.Mutex // one eviction at a time

	amu        sync.Mutex
	atimes     map[string]int64 // batched access times, key → Unix ns
	atimeBytes int              // key bytes in atimes

	kick      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// Open opens or creates the cache file at path. A file that is not a valid
// bbolt database or whose buckets or records are broken gives an error
// wrapping ErrCorrupt; the file is left as it is. Fills that did not commit
// before the last shutdown or crash are removed.
func Open(path string, opts Options) (*Store, error) {
	if opts.MaxBytes <= 0 {
		return nil, fmt.Errorf("objstore: MaxBytes must be > 0, got %d", opts.MaxBytes)
	}
	if strconv.IntSize == 32 && opts.MaxBytes > max32BitBytes {
		return nil, fmt.Errorf("objstore: MaxBytes %d too large for a 32-bit system (at most %d: bbolt maps the whole file into memory)",
			opts.MaxBytes, max32BitBytes)
	}
	if opts.ChunkSize != 0 && (opts.ChunkSize < minChunkSize || opts.ChunkSize > maxChunkSize) {
		return nil, fmt.Errorf("objstore: ChunkSize %d outside [%d, %d]", opts.ChunkSize, minChunkSize, maxChunkSize)
	}
	if opts.AtimeFlush < 0 || opts.LockTimeout < 0 {
		return nil, errors.New("objstore: negative AtimeFlush or LockTimeout")
	}
	flushEvery := opts.AtimeFlush
	if flushEvery == 0 {
		flushEvery = defaultAtimeFlush
	}
	lockTimeout := opts.LockTimeout
	if lockTimeout == 0 {
		lockTimeout = defaultLockTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}

	if err := preflight(path, lockTimeout); err != nil {
		return nil, err
	}
	bo := &bolt.Options{
		Timeout:        lockTimeout,
		NoFreelistSync: true, // no freelist write per commit (flash); rebuilt at Open
		FreelistType:   bolt.FreelistMapType,
	}
	if strconv.IntSize == 64 {
		// Map the file's expected size up front: address space is free on
		// 64-bit, and every remap waits for all read transactions.
		m := min(opts.MaxBytes, 1<<40)
		bo.InitialMmapSize = int(m + m/4 + 32<<20)
	}
	db, err := openBolt(path, bo)
	if err != nil {
		return nil, err
	}
	s := &Store{
		db:     db,
		path:   path,
		log:    log,
		max:    opts.MaxBytes,
		fills:  make(map[*fill]struct{}),
		atimes: make(map[string]int64),
		kick:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	if err := s.init(int64(opts.ChunkSize)); err != nil {
		db.Close()
		return nil, err
	}
	if s.max/s.chunk >= 1<<32 {
		db.Close()
		return nil, fmt.Errorf("objstore: MaxBytes %d needs more than 2^32 chunks of %d bytes", s.max, s.chunk)
	}
	s.fillBytes = int(max(s.chunk, fillTxnBytes/s.chunk*s.chunk))
	s.evictSlack = min(int64(s.fillBytes), s.max/64)
	if s.bytes > s.max {
		// MaxBytes was lowered since the last run.
		if err := s.evict(0); err != nil {
			s.log.Warn("objstore: cannot shrink cache to MaxBytes", "path", path, "err", err)
		}
	}
	go s.flusher(flushEvery)
	return s, nil
}

// preflight checks an existing file before bbolt opens it for writing (see
// checkFile), holding bbolt's shared lock so that a file another process is
// writing is reported as locked, not as corrupt.
func preflight(path string, lockTimeout time.Duration) error {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("objstore: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("objstore: %s is not a regular file", path)
	}
	if fi.Size() == 0 {
		return nil // bbolt initialises an empty file
	}
	ro, roErr := openBolt(path, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if errors.Is(roErr, ErrLocked) {
		return roErr
	}
	if ro != nil {
		defer ro.Close()
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("objstore: %w", err)
	}
	defer f.Close()
	fi, err = f.Stat()
	if err != nil {
		return fmt.Errorf("objstore: %w", err)
	}
	if err := checkFile(f, fi.Size()); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	}
	return roErr
}

// openBolt opens the file, turning bbolt's panics and faults on a damaged
// file into ErrCorrupt and a lock timeout into ErrLocked.
func openBolt(path string, o *bolt.Options) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: %s: bbolt: %v", ErrCorrupt, path, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, o)
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s (waited %v)", ErrLocked, path, o.Timeout)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum),
		errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrInvalidMapping):
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	default:
		return nil, fmt.Errorf("objstore: open %s: %w", path, err)
	}
}

func (s *Store) corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, s.path, fmt.Sprintf(format, args...))
}

// init checks the buckets and records of an existing file, or creates the
// buckets of a new one, then removes unfinished fills. Nothing is written
// before the checks pass: a damaged file is left exactly as it was.
func (s *Store) init(chunkOpt int64) error {
	var fresh, unfinished bool
	err := s.view(func(tx *bolt.Tx) error {
		st := tx.Bucket(bucketState)
		if st == nil {
			var names []string
			_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
				names = append(names, strconv.Quote(string(name)))
				return nil
			})
			if len(names) > 0 {
				return s.corruptf("no %q bucket, but buckets %v: not an objstore file, or damaged", bucketState, names)
			}
			fresh = true
			return nil
		}
		if v := st.Get(stateFormat); len(v) != 1 {
			return s.corruptf("bad format record %x", v)
		} else if v[0] != recordVersion {
			return fmt.Errorf("objstore: %s: format version %d is not supported (want %d)", s.path, v[0], recordVersion)
		}
		v := st.Get(stateChunk)
		if len(v) != 4 {
			return s.corruptf("bad chunk size record %x", v)
		}
		cs := int64(v[0])<<24 | int64(v[1])<<16 | int64(v[2])<<8 | int64(v[3])
		if cs < minChunkSize || cs > maxChunkSize {
			return s.corruptf("chunk size %d", cs)
		}
		if chunkOpt != 0 && chunkOpt != cs {
			s.log.Warn("objstore: file was created with another chunk size; keeping it", "path", s.path, "chunk", cs, "option", chunkOpt)
		}
		s.chunk = cs
		for _, name := range [][]byte{bucketMeta, bucketLRU, bucketChunks, bucketFills} {
			if tx.Bucket(name) == nil {
				return s.corruptf("bucket %q is missing", name)
			}
		}
		k, _ := tx.Bucket(bucketFills).Cursor().First()
		unfinished = k != nil
		return s.scan(tx)
	})
	if err != nil {
		return err
	}
	if fresh {
		s.chunk = chunkOpt
		if s.chunk == 0 {
			s.chunk = defaultChunkSize
		}
		s.clock.Store(time.Now().UnixNano())
		return s.update(func(tx *bolt.Tx) error {
			for _, name := range [][]byte{bucketState, bucketMeta, bucketLRU, bucketChunks, bucketFills} {
				if _, err := tx.CreateBucket(name); err != nil {
					return err
				}
			}
			st := tx.Bucket(bucketState)
			if err := st.Put(stateFormat, []byte{recordVersion}); err != nil {
				return err
			}
			return st.Put(stateChunk, be32(uint32(s.chunk)))
		})
	}
	if unfinished {
		return s.update(s.removeUnfinished)
	}
	return nil
}

// removeUnfinished deletes the chunks of fills that never committed.
func (s *Store) removeUnfinished(tx *bolt.Tx) error {
	fb := tx.Bucket(bucketFills)
	var ids [][]byte
	if err := fb.ForEach(func(k, _ []byte) error {
		if len(k) != 8 {
			return s.corruptf("fills: bad key %x", k)
		}
		ids = append(ids, bytes.Clone(k))
		return nil
	}); err != nil {
		return err
	}
	ch := tx.Bucket(bucketChunks)
	chunks := 0
	for _, k := range ids {
		n, err := deleteChunks(ch, k)
		if err != nil {
			return err
		}
		chunks += n
		if err := fb.Delete(k); err != nil {
			return err
		}
	}
	if len(ids) > 0 {
		s.log.Info("objstore: removed unfinished fills", "path", s.path, "fills", len(ids), "chunks", chunks)
	}
	return nil
}

// scan validates every meta record and the LRU index against it, and
// computes the counters. It streams: RAM does not grow with the objects.
func (s *Store) scan(tx *bolt.Tx) error {
	mb, lb := tx.Bucket(bucketMeta), tx.Bucket(bucketLRU)
	seq := tx.Bucket(bucketChunks).Sequence()
	var objects, total int64
	c := mb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v == nil {
			return s.corruptf("meta: %q is a bucket", k)
		}
		h, err := validateRecord(v)
		if err != nil {
			return s.corruptf("meta record %q: %v", k, err)
		}
		if h.id > seq {
			return s.corruptf("meta record %q: object id %d beyond the id sequence %d", k, h.id, seq)
		}
		objects++
		total += h.size
	}
	var entries int64
	var last int64
	c = lb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		atime, id, ok := parseLRUKey(k)
		if !ok || len(v) == 0 {
			return s.corruptf("lru: bad entry %x", k)
		}
		mv := mb.Get(v)
		if mv == nil {
			return s.corruptf("lru: entry for %q, which has no meta record", v)
		}
		if h, _ := parseHead(mv); h.id != id || h.atime != atime {
			return s.corruptf("lru: entry for %q does not match its meta record", v)
		}
		entries++
		last = atime
	}
	if entries != objects {
		return s.corruptf("lru index has %d entries for %d objects", entries, objects)
	}
	s.bytes, s.objects = total, objects
	// Access times never go backwards, even if the wall clock does (a
	// router without an RTC boots in 1970 until NTP answers).
	s.clock.Store(max(last, time.Now().UnixNano()))
	return nil
}

// view and update run bbolt transactions, mapping a closed database to
// ErrClosed and a bbolt panic (a damaged page found at run time) to
// ErrCorrupt; bbolt rolls the transaction back on the way out.
func (s *Store) view(fn func(*bolt.Tx) error) (err error) {
	defer s.recoverTx(&err)
	return mapErr(s.db.View(fn))
}

func (s *Store) update(fn func(*bolt.Tx) error) (err error) {
	defer s.recoverTx(&err)
	return mapErr(s.db.Update(fn))
}

func (s *Store) recoverTx(err *error) {
	if r := recover(); r != nil {
		s.log.Error("objstore: bbolt panic", "path", s.path, "panic", r, "stack", string(debug.Stack()))
		*err = fmt.Errorf("%w: %s: bbolt: %v", ErrCorrupt, s.path, r)
	}
}

func mapErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// Close stops the store: fills in progress fail with ErrClosed (their
// followers too), batched access times are written, and the file is
// closed. Reads in flight finish or get ErrClosed. Close is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed.Store(true)
		fills := make([]*fill, 0, len(s.fills))
		for f := range s.fills {
			fills = append(fills, f)
		}
		s.mu.Unlock()
		close(s.stop)
		<-s.done
		for _, f := range fills {
			f.shutdown()
		}
		err := s.flushAtimes()
		if cerr := s.db.Close(); err == nil {
			err = cerr
		}
		s.closeErr = err
	})
	return s.closeErr
}

// Get returns the committed object for key, or ErrNotFound, and records
// the access (batched; see Options.AtimeFlush).
func (s *Store) Get(key string) (*Object, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	o := &Object{s: s}
	err := s.view(func(tx *bolt.Tx) error {
		// bbolt does not keep or modify a lookup key: no copy needed.
		v := tx.Bucket(bucketMeta).Get(unsafe.Slice(unsafe.StringData(key), len(key)))
		if v == nil {
			return ErrNotFound
		}
		h, err := decodeRecord(v, &o.Meta)
		if err != nil {
			return s.corruptf("meta record for %q: %v", key, err)
		}
		o.id = h.id
		if h.size > 0 && h.size <= smallBody {
			o.body = make([]byte, h.size)
			if _, err := s.copyChunks(tx.Bucket(bucketChunks), h.id, 0, o.body); err != nil {
				// Record and chunks go together: one without the other is damage.
				return s.corruptf("body of %q: %v", key, err)
			}
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			s.log.Error("objstore: damaged meta record", "path", s.path, "key", key, "err", err)
		}
		return nil, err
	}
	o.Meta.Key = key
	s.touch(key)
	return o, nil
}

// Create starts a fill of key. sizeHint is the expected body size, or -1
// if unknown; a hint larger than MaxBytes fails at once with ErrTooLarge.
// The object becomes visible to Get when the Writer commits.
func (s *Store) Create(key string, sizeHint int64) (*Writer, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	if sizeHint > s.max {
		return nil, fmt.Errorf("%w: %q is %d bytes, the cache holds %d", ErrTooLarge, key, sizeHint, s.max)
	}
	f := &fill{s: s, key: key, hint: sizeHint}
	f.cond.L = &f.mu
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil, ErrClosed
	}
	s.fills[f] = struct{}{}
	w := &Writer{f: f}
	// A Writer dropped without Commit or Abort (a handler that panicked or
	// forgot) would leave its followers waiting and its bytes reserved.
	runtime.SetFinalizer(w, func(w *Writer) {
		if w.f.abandon() {
			s.log.Warn("objstore: fill abandoned without Commit or Abort", "path", s.path, "key", w.f.key)
		}
	})
	return w, nil
}

func checkKey(key string) error {
	if len(key) == 0 || len(key) > bolt.MaxKeySize {
		return fmt.Errorf("objstore: key length %d outside [1, %d]", len(key), bolt.MaxKeySize)
	}
	return nil
}

// UpdateMeta rewrites the metadata of a committed object (revalidation:
// new headers and times for the same body). fn runs inside the write
// transaction, so it must be quick and must not call the Store; changes it
// makes to Key or Size are ignored.
func (s *Store) UpdateMeta(key string, fn func(*Meta)) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := checkKey(key); err != nil {
		return err
	}
	kb := []byte(key)
	return s.update(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketMeta)
		v := mb.Get(kb)
		if v == nil {
			return ErrNotFound
		}
		var m Meta
		h, err := decodeRecord(v, &m)
		if err != nil {
			return s.corruptf("meta record for %q: %v", key, err)
		}
		m.Key = key
		fn(&m)
		m.Key, m.Size = key, h.size
		rec, err := encodeRecord(nil, &m, h.id, h.atime)
		if err != nil {
			return err
		}
		return mb.Put(kb, rec)
	})
}

// Delete removes key; ErrNotFound if it is not stored. Readers of the
// object get ErrNotFound from then on. Fills of key in progress are
// aborted first: what they fetched may predate the delete.
func (s *Store) Delete(key string) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := checkKey(key); err != nil {
		return err
	}
	s.abortFills(func(k string) bool { return k == key })
	var h recordHead
	err := s.update(func(tx *bolt.Tx) error {
		var found bool
		var err error
		h, found, err = s.deleteKey(tx, []byte(key))
		if err == nil && !found {
			err = ErrNotFound
		}
		return err
	})
	if err != nil {
		return err
	}
	s.committed(-h.size, -1)
	return nil
}

// DeletePrefix removes every object whose key starts with prefix (all of
// them for ""), a batch per transaction, and returns how many it removed.
// Fills of such keys in progress are aborted first (a purge must not be
// undone by a fill that started before it).
func (s *Store) DeletePrefix(prefix string) (int, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	s.abortFills(func(k string) bool { return strings.HasPrefix(k, prefix) })
	p := []byte(prefix)
	total := 0
	for {
		if s.closed.Load() {
			return total, ErrClosed
		}
		var n int
		var freed int64
		err := s.update(func(tx *bolt.Tx) error {
			n, freed = 0, 0
			var keys [][]byte
			c := tx.Bucket(bucketMeta).Cursor()
			for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p) && len(keys) < deleteBatch; k, _ = c.Next() {
				keys = append(keys, bytes.Clone(k))
			}
			for _, k := range keys {
				h, found, err := s.deleteKey(tx, k)
				if err != nil {
					return err
				}
				if found {
					n++
					freed += h.size
				}
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		s.committed(-freed, -int64(n))
		total += n
		if n < deleteBatch {
			return total, nil
		}
	}
}

// abortFills aborts the fills in progress whose key matches. A fill that
// is committing finishes first (abort waits for it), so the caller's
// delete that follows removes what it committed.
func (s *Store) abortFills(match func(key string) bool) {
	var hit []*fill
	s.mu.Lock()
	for f := range s.fills {
		if match(f.key) {
			hit = append(hit, f)
		}
	}
	s.mu.Unlock()
	for _, f := range hit {
		f.abort()
	}
}

// Stats returns the current counters. Bytes includes fills in progress.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Objects: s.objects, Bytes: s.bytes + s.reserved, MaxBytes: s.max}
}

// Sync writes the batched access times now.
func (s *Store) Sync() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return s.flushAtimes()
}

func (s *Store) committed(bytes, objects int64) {
	s.mu.Lock()
	s.bytes += bytes
	s.objects += objects
	s.mu.Unlock()
}

// deleteKey removes key's record, LRU entry and chunks in tx.
func (s *Store) deleteKey(tx *bolt.Tx, key []byte) (recordHead, bool, error) {
	mb := tx.Bucket(bucketMeta)
	v := mb.Get(key)
	if v == nil {
		return recordHead{}, false, nil
	}
	h, err := parseHead(v)
	if err != nil {
		return h, false, s.corruptf("meta record for %q: %v", key, err)
	}
	var ik [8]byte
	if _, err := deleteChunks(tx.Bucket(bucketChunks), idKey(&ik, h.id)); err != nil {
		return h, false, err
	}
	var lk [lruKeyLen]byte
	if err := tx.Bucket(bucketLRU).Delete(lruKey(&lk, h.atime, h.id)); err != nil {
		return h, false, err
	}
	return h, true, mb.Delete(key)
}

// deleteChunks deletes every chunk whose key starts with the 8-byte id
// prefix. It seeks again after each delete rather than trusting a cursor
// across deletes.
func deleteChunks(b *bolt.Bucket, prefix []byte) (int, error) {
	c := b.Cursor()
	n := 0
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		if err := c.Delete(); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// reserve accounts n more bytes for a fill, evicting least recently used
// objects first if they would not fit, so that committed plus in-progress
// bytes never exceed MaxBytes.
func (s *Store) reserve(n int64) error {
	for {
		s.mu.Lock()
		if s.closed.Load() {
			s.mu.Unlock()
			return ErrClosed
		}
		if s.bytes+s.reserved+n <= s.max {
			s.reserved += n
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		if err := s.evict(n); err != nil {
			return err
		}
	}
}

func (s *Store) unreserve(n int64) {
	s.mu.Lock()
	s.reserved -= n
	s.mu.Unlock()
}

// evict removes least recently used objects until n more bytes fit (plus
// evictSlack), in one transaction that first applies the batched access
// times so that the order is current.
func (s *Store) evict(n int64) error {
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	s.mu.Lock()
	over := s.bytes + s.reserved + n - s.max
	s.mu.Unlock()
	if over <= 0 {
		return nil // another eviction made room
	}
	target := max(over, s.evictSlack)
	batch := s.takeAtimes()
	var freed, count int64
	err := s.update(func(tx *bolt.Tx) error {
		freed, count = 0, 0
		if err := s.applyAtimes(tx, batch); err != nil {
			return err
		}
		lb := tx.Bucket(bucketLRU)
		c := lb.Cursor()
		for freed < target {
			k, v := c.First()
			if k == nil {
				break
			}
			_, id, ok := parseLRUKey(k)
			if !ok {
				return s.corruptf("lru: bad entry %x", k)
			}
			key := bytes.Clone(v)
			h, found, err := s.deleteKey(tx, key)
			if err != nil {
				return err
			}
			if !found || h.id != id {
				// An index entry without its object: drop the entry alone.
				s.log.Error("objstore: stale lru entry", "path", s.path, "key", string(key))
				if err := lb.Delete(bytes.Clone(k)); err != nil {
					return err
				}
				if found {
					freed += h.size
					count++
				}
				continue
			}
			freed += h.size
			count++
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.bytes -= freed
	s.objects -= count
	over = s.bytes + s.reserved + n - s.max
	held := s.reserved
	s.mu.Unlock()
	if count > 0 {
		s.log.Debug("objstore: evicted", "objects", count, "bytes", freed)
	}
	if over > 0 && count == 0 {
		return fmt.Errorf("%w: no room for %d more bytes: %d bytes are held by fills in progress", ErrTooLarge, n, held)
	}
	return nil
}

func be32(v uint32) []byte {
	return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}
