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

// errOldFormat is what init reports for a format 1 file (see Open).
var errOldFormat = errors.New("objstore: cache file has format 1")

const (
	DefaultAtimeFlush  = 30 * time.Second
	DefaultLockTimeout = time.Second

	// defaultInlineMax is the largest body kept in bbolt. Larger bodies are
	// files, sent with sendfile. Measured (BenchmarkServeBody): below about
	// 32 KiB, open+sendfile+close costs more than copying from memory.
	defaultInlineMax = 32 << 10
	// maxEvictSlack bounds the extra bytes an eviction frees.
	maxEvictSlack = 1 << 20
	// atimeBatchMax and atimeBatchBytes bound the batch of access times
	// kept in RAM (keys can be long URLs).
	atimeBatchMax   = 4096
	atimeBatchBytes = 512 << 10
	// deleteBatch is how many keys DeletePrefix removes per transaction.
	deleteBatch = 256
	// dirBatch is how many directory entries Open checks per transaction.
	dirBatch = 256

	// bbolt maps the whole file; on 32-bit systems the map is at most
	// 1 GiB (mips) or 2 GiB, and grows in 1 GiB steps past 1 GiB.
	max32BitBytes = 768 << 20
)

// Store is an object cache: metadata and small bodies in a bbolt file,
// larger bodies in files beside it. It is safe for concurrent use.
type Store struct {
	db         *bolt.DB
	path       string
	dir        string // body files
	log        *slog.Logger
	max        int64
	inlineMax  int64 // largest body stored in bbolt
	evictSlack int64 // extra bytes an eviction frees, so a growing fill does not evict on every Write
	noSync     bool  // tests: no fsync of body files (the db has its own NoSync)

	lastID atomic.Uint64 // highest object id handed out
	clock  atomic.Int64  // last access time handed out (Unix ns)
	closed atomic.Bool

	hot hotCache

	mu       sync.Mutex
	bytes    int64 // committed body bytes
	meta     int64 // metadata charge of committed objects (see metaCharge)
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

	fullSince   atomic.Int64 // Unix ns the file system last refused a write; 0: not full
	noSpaceErrs atomic.Int64 // fills failed with ErrNoSpace
}

// ensureDefaults gives every zero field its default.
func (o *Options) ensureDefaults() {
	if o.AtimeFlush == 0 {
		o.AtimeFlush = DefaultAtimeFlush
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// check validates the options after ensureDefaults.
func (o *Options) check() error {
	if o.MaxBytes <= 0 {
		return fmt.Errorf("objstore: Options.MaxBytes must be > 0, got %d", o.MaxBytes)
	}
	if strconv.IntSize == 32 && o.MaxBytes > max32BitBytes {
		return fmt.Errorf("objstore: Options.MaxBytes %d too large for a 32-bit system (at most %d: bbolt maps the whole file into memory)",
			o.MaxBytes, max32BitBytes)
	}
	if o.AtimeFlush < 0 || o.LockTimeout < 0 {
		return errors.New("objstore: negative Options.AtimeFlush or Options.LockTimeout")
	}
	return nil
}

// Open opens or creates the cache file at path and its body directory
// path+".bodies". A file that is not a valid bbolt database or whose
// buckets or records are broken gives an error wrapping ErrCorrupt; the file
// is left as it is. Fills that did not commit before the last shutdown or
// crash, and body files no record refers to, are removed. A valid file of
// the older format 1 (bodies in bbolt) is deleted and the cache starts empty:
// its large bodies cannot be kept, and bbolt cannot give their space back.
func Open(path string, opts Options) (*Store, error) {
	opts.ensureDefaults()
	if err := opts.check(); err != nil {
		return nil, err
	}
	flushEvery, lockTimeout, log := opts.AtimeFlush, opts.LockTimeout, opts.Logger

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
	s := &Store{
		path:      path,
		dir:       path + ".bodies",
		log:       log,
		max:       opts.MaxBytes,
		inlineMax: defaultInlineMax,
		fills:     make(map[*fill]struct{}),
		atimes:    make(map[string]int64),
		kick:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	s.hot.init(hotMaxBytes)
	s.evictSlack = min(maxEvictSlack, s.max/64)
	for attempt := 0; ; attempt++ {
		db, err := openBolt(path, bo)
		if err != nil {
			return nil, err
		}
		s.db = db
		err = s.init()
		if errors.Is(err, errOldFormat) && attempt == 0 {
			// Unlink while bbolt still holds the lock: a process that opens
			// the path meanwhile creates a new file, and one of us then
			// gets ErrLocked on it, as with any other race for the cache.
			rmErr := os.Remove(path)
			db.Close()
			if rmErr != nil {
				return nil, fmt.Errorf("objstore: %s has the old format 1 and cannot be removed: %w", path, rmErr)
			}
			log.Warn("objstore: cache file had the old format 1 (bodies in bbolt); removed it, the cache starts empty", "path", path)
			continue
		}
		if err != nil {
			db.Close()
			return nil, err
		}
		break
	}
	if err := s.cleanDir(); err != nil {
		s.db.Close()
		return nil, err
	}
	if s.bytes+s.meta > s.max {
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

var dataBuckets = [][]byte{bucketMeta, bucketLRU, bucketInline, bucketFiles}

// init checks the buckets and records of an existing file, or creates the
// buckets of a new one. Nothing is written before the checks pass: a
// damaged file is left exactly as it was.
func (s *Store) init() error {
	var fresh bool
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
		v := st.Get(stateFormat)
		switch {
		case len(v) != 1:
			return s.corruptf("bad format record %x", v)
		case v[0] == 1:
			return errOldFormat
		case v[0] != formatVersion:
			return fmt.Errorf("objstore: %s: format version %d is not supported (want %d)", s.path, v[0], formatVersion)
		}
		for _, name := range dataBuckets {
			if tx.Bucket(name) == nil {
				return s.corruptf("bucket %q is missing", name)
			}
		}
		return s.scan(tx)
	})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("objstore: body directory: %w", err)
	}
	if !fresh {
		return nil
	}
	s.clock.Store(time.Now().UnixNano())
	return s.update(func(tx *bolt.Tx) error {
		for _, name := range append([][]byte{bucketState}, dataBuckets...) {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketState).Put(stateFormat, []byte{formatVersion})
	})
}

// scan validates every meta record, its body record and LRU entry, and
// computes the counters. It streams: RAM does not grow with the objects.
func (s *Store) scan(tx *bolt.Tx) error {
	mb, lb, ib, fb := tx.Bucket(bucketMeta), tx.Bucket(bucketLRU), tx.Bucket(bucketInline), tx.Bucket(bucketFiles)
	seq := mb.Sequence()
	var objects, total, meta, inline, files int64
	var ik [8]byte
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
		switch {
		case h.file:
			if fk := fb.Get(idKey(&ik, h.id)); !bytes.Equal(fk, k) {
				return s.corruptf("meta record %q: file entry of object %d is %q", k, h.id, fk)
			}
			files++
		case h.size > 0:
			if body := ib.Get(idKey(&ik, h.id)); int64(len(body)) != h.size {
				return s.corruptf("meta record %q: inline body of object %d has %d bytes, want %d", k, h.id, len(body), h.size)
			}
			inline++
		}
		objects++
		total += h.size
		meta += metaCharge(len(k), len(v))
	}
	if n := int64(ib.Stats().KeyN); n != inline {
		return s.corruptf("%d inline bodies for %d objects that have one", n, inline)
	}
	if n := int64(fb.Stats().KeyN); n != files {
		return s.corruptf("%d file entries for %d objects stored in files", n, files)
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
	s.bytes, s.meta, s.objects = total, meta, objects
	s.lastID.Store(seq)
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
		s.hot.clear()
		err := s.flushAtimes()
		if cerr := s.db.Close(); err == nil {
			err = cerr
		}
		s.closeErr = err
	})
	return s.closeErr
}

// Get returns the committed object for key, or ErrNotFound, and records
// the access (batched; see Options.AtimeFlush). An object whose body file
// is missing or has the wrong size is removed (and logged): the cache
// loses it rather than serve other bytes.
func (s *Store) Get(key string) (*Object, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	e, gen := s.hot.get(key)
	if e != nil {
		s.touch(key)
		return &Object{Meta: e.meta, s: s, id: e.id, body: e.body}, nil
	}
	o := &Object{s: s}
	var rec, txid int
	err := s.view(func(tx *bolt.Tx) error {
		txid = tx.ID()
		// bbolt does not keep or modify a lookup key: no copy needed.
		v := tx.Bucket(bucketMeta).Get(unsafe.Slice(unsafe.StringData(key), len(key)))
		if v == nil {
			return ErrNotFound
		}
		h, err := decodeRecord(v, &o.Meta)
		if err != nil {
			return s.corruptf("meta record for %q: %v", key, err)
		}
		o.id, o.file, rec = h.id, h.file, len(v)
		if h.file || h.size == 0 {
			return nil
		}
		var ik [8]byte
		b := tx.Bucket(bucketInline).Get(idKey(&ik, h.id))
		if int64(len(b)) != h.size {
			// Record and body are written together: one without the other is damage.
			return s.corruptf("inline body of %q: %d bytes, want %d", key, len(b), h.size)
		}
		o.body = bytes.Clone(b)
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			s.log.Error("objstore: damaged meta record", "path", s.path, "key", key, "err", err)
		}
		return nil, err
	}
	o.Meta.Key = key
	if o.file {
		if err := s.checkBodyFile(o); err != nil {
			return nil, err
		}
	} else {
		s.hot.add(gen, txid, key, o, rec)
	}
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
	f := &fill{s: s, key: key, hint: sizeHint, refs: 1}
	f.cond.L = &f.mu
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil, ErrClosed
	}
	// Ids are never reused while the store is open, so a body file name
	// always means one object version.
	f.id = s.lastID.Add(1)
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
	hw := s.hotWrite()
	var grew int64 // change of the metadata charge
	err := s.update(func(tx *bolt.Tx) error {
		grew = 0
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
		rec, err := encodeRecord(nil, &m, h.id, h.atime, h.file)
		if err != nil {
			return err
		}
		if err := mb.Put(kb, rec); err != nil {
			return err
		}
		grew = int64(len(rec) - len(v))
		hw.change(key)
		return nil
	})
	hw.done()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.meta += grew
	over := s.bytes+s.meta+s.reserved > s.max
	s.mu.Unlock()
	if over {
		// Larger headers: evict to stay within the bound.
		if err := s.evict(0); err != nil {
			s.log.Warn("objstore: evicting after a metadata update", "path", s.path, "err", err)
		}
	}
	return nil
}

// Delete removes key; ErrNotFound if it is not stored. Readers of the
// object get ErrNotFound from then on (a read already under way finishes).
// Fills of key in progress are aborted first: what they fetched may predate
// the delete.
func (s *Store) Delete(key string) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := checkKey(key); err != nil {
		return err
	}
	s.abortFills(func(k string) bool { return k == key })
	var d deletion
	hw := s.hotWrite()
	err := s.update(func(tx *bolt.Tx) error {
		d = deletion{}
		_, found, err := s.deleteKey(tx, []byte(key), &d)
		if err == nil && !found {
			err = ErrNotFound
		}
		if err == nil {
			hw.change(key)
		}
		return err
	})
	hw.done()
	if err != nil {
		return err
	}
	s.deleted(&d)
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
		var d deletion
		hw := s.hotWrite()
		err := s.update(func(tx *bolt.Tx) error {
			d = deletion{}
			var keys [][]byte
			c := tx.Bucket(bucketMeta).Cursor()
			for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p) && len(keys) < deleteBatch; k, _ = c.Next() {
				keys = append(keys, bytes.Clone(k))
			}
			for _, k := range keys {
				if _, _, err := s.deleteKey(tx, k, &d); err != nil {
					return err
				}
			}
			hw.change(d.keys...)
			return nil
		})
		hw.done()
		if err != nil {
			return total, err
		}
		s.deleted(&d)
		total += int(d.objects)
		if d.objects < deleteBatch {
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
	return Stats{Objects: s.objects, Bytes: s.bytes + s.reserved, MetaBytes: s.meta, MaxBytes: s.max,
		FullSince: s.FullSince(), NoSpaceErrors: s.noSpaceErrs.Load()}
}

// Sync writes the batched access times now.
func (s *Store) Sync() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return s.flushAtimes()
}

// deletion is what one transaction removed: counters to apply and body
// files to unlink once it has committed.
type deletion struct {
	objects int64
	bytes   int64
	meta    int64    // metadata charge
	keys    []string // for the hot cache (hotWrite.change)
	files   []uint64
}

func (s *Store) hotWrite() *hotWrite { return &hotWrite{h: &s.hot} }

// deleteKey removes key's record, LRU entry and body record in tx, and
// notes what to do after the commit in d.
func (s *Store) deleteKey(tx *bolt.Tx, key []byte, d *deletion) (recordHead, bool, error) {
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
	body := tx.Bucket(bucketInline)
	if h.file {
		body = tx.Bucket(bucketFiles)
		d.files = append(d.files, h.id)
	}
	if err := body.Delete(idKey(&ik, h.id)); err != nil {
		return h, false, err
	}
	var lk [lruKeyLen]byte
	if err := tx.Bucket(bucketLRU).Delete(lruKey(&lk, h.atime, h.id)); err != nil {
		return h, false, err
	}
	d.objects++
	d.bytes += h.size
	d.meta += metaCharge(len(key), len(v))
	d.keys = append(d.keys, string(key))
	return h, true, mb.Delete(key)
}

// deleted applies a committed deletion: counters and body files. A file
// that cannot be unlinked now is removed by the next Open.
func (s *Store) deleted(d *deletion) {
	s.mu.Lock()
	s.bytes -= d.bytes
	s.meta -= d.meta
	s.objects -= d.objects
	s.mu.Unlock()
	for _, id := range d.files {
		if err := os.Remove(s.bodyPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("objstore: removing a body file; the next Open will", "path", s.bodyPath(id), "err", err)
		}
	}
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
		if s.bytes+s.meta+s.reserved+n <= s.max {
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

// evict removes least recently used objects until n more bytes fit (plus
// evictSlack), in one transaction that first applies the batched access
// times so that the order is current.
func (s *Store) evict(n int64) error {
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	s.mu.Lock()
	over := s.bytes + s.meta + s.reserved + n - s.max
	s.mu.Unlock()
	if over <= 0 {
		return nil // another eviction made room
	}
	d, err := s.evictLocked(max(over, s.evictSlack))
	if err != nil {
		return err
	}
	s.mu.Lock()
	over = s.bytes + s.meta + s.reserved + n - s.max
	held := s.reserved
	s.mu.Unlock()
	if d.objects > 0 {
		s.log.Debug("objstore: evicted", "objects", d.objects, "bytes", d.bytes, "meta_bytes", d.meta)
	}
	if over > 0 && d.objects == 0 {
		return fmt.Errorf("%w: no room for %d more bytes: %d bytes are held by fills in progress", ErrTooLarge, n, held)
	}
	return nil
}

// evictLocked removes least recently used objects until their bodies and
// metadata add up to target bytes or none is left (evictMu held).
func (s *Store) evictLocked(target int64) (deletion, error) {
	batch := s.takeAtimes()
	var d deletion
	hw := s.hotWrite()
	err := s.update(func(tx *bolt.Tx) error {
		d = deletion{}
		if err := s.applyAtimes(tx, batch); err != nil {
			return err
		}
		lb := tx.Bucket(bucketLRU)
		c := lb.Cursor()
		for d.bytes+d.meta < target {
			k, v := c.First()
			if k == nil {
				break
			}
			_, id, ok := parseLRUKey(k)
			if !ok {
				return s.corruptf("lru: bad entry %x", k)
			}
			key := bytes.Clone(v)
			h, found, err := s.deleteKey(tx, key, &d)
			if err != nil {
				return err
			}
			if !found || h.id != id {
				// An index entry without its object: drop the entry alone.
				s.log.Error("objstore: stale lru entry", "path", s.path, "key", string(key))
				if err := lb.Delete(bytes.Clone(k)); err != nil {
					return err
				}
			}
		}
		hw.change(d.keys...)
		return nil
	})
	hw.done()
	if err != nil {
		return deletion{}, err
	}
	s.deleted(&d)
	return d, nil
}
