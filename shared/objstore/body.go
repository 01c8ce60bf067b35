package objstore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Body files. A body larger than the inline limit is written once, to
// <dir>/<id>.part while it is filled, fsynced and renamed to <dir>/<id> at
// Commit, before the transaction that adds its record. It is unlinked after
// the transaction that removes its record. Readers keep an open file
// descriptor, so a body being read stays whole after an unlink, and ids are
// never reused while the store is open, so a name never means another
// version. A crash between the two steps leaves a file without a record,
// which the next Open removes; a record whose file is missing or has the
// wrong size (a file system that lost the rename or the data) is dropped
// when Get finds it.

const partSuffix = ".part"

func (s *Store) bodyPath(id uint64) string {
	return filepath.Join(s.dir, idName(id))
}

func (s *Store) partPath(id uint64) string {
	return filepath.Join(s.dir, idName(id)+partSuffix)
}

// idName is the file name of object id: 16 hex digits, so names sort by id.
func idName(id uint64) string {
	const hex = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = hex[id&0xf]
		id >>= 4
	}
	return string(b[:])
}

// parseIDName is the inverse of idName; ok is false for other names.
func parseIDName(name string) (uint64, bool) {
	if len(name) != 16 {
		return 0, false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return 0, false
		}
	}
	id, err := strconv.ParseUint(name, 16, 64)
	return id, err == nil && id != 0
}

// cleanDir removes what a crash or an abort left in the body directory:
// unfinished fills (.part files) and bodies that no record refers to. It
// reads the directory in batches, so RAM does not grow with the objects.
// Files it does not recognise are left alone.
func (s *Store) cleanDir() error {
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("objstore: body directory: %w", err)
	}
	defer d.Close()
	var parts, orphans, unknown int
	var orphanBytes int64
	for {
		ents, rerr := d.ReadDir(dirBatch)
		var check []uint64
		for _, e := range ents {
			name := e.Name()
			if base, isPart := strings.CutSuffix(name, partSuffix); isPart {
				if _, ok := parseIDName(base); ok {
					if s.removeStray(filepath.Join(s.dir, name)) {
						parts++
					}
					continue
				}
			}
			id, ok := parseIDName(name)
			if !ok || !e.Type().IsRegular() {
				unknown++
				if unknown == 1 {
					s.log.Warn("objstore: unexpected entry in the body directory; left alone", "dir", s.dir, "name", name)
				}
				continue
			}
			check = append(check, id)
		}
		var stray []uint64
		if len(check) > 0 {
			err := s.view(func(tx *bolt.Tx) error {
				fb := tx.Bucket(bucketFiles)
				var ik [8]byte
				for _, id := range check {
					if fb.Get(idKey(&ik, id)) == nil {
						stray = append(stray, id)
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		for _, id := range stray {
			p := s.bodyPath(id)
			var size int64
			if fi, err := os.Stat(p); err == nil {
				size = fi.Size()
			}
			if s.removeStray(p) {
				orphans++
				orphanBytes += size
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("objstore: body directory: %w", rerr)
		}
	}
	if parts > 0 || orphans > 0 {
		s.log.Info("objstore: removed unfinished fills and unreferenced bodies",
			"dir", s.dir, "unfinished", parts, "unreferenced", orphans, "unreferenced_bytes", orphanBytes)
	}
	return nil
}

func (s *Store) removeStray(path string) bool {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("objstore: cannot remove a stray body file", "path", path, "err", err)
		return false
	}
	return true
}

// checkBodyFile makes sure the body file of o exists with o's size; if not,
// the record goes (see dropBroken) and Get answers ErrNotFound.
func (s *Store) checkBodyFile(o *Object) error {
	fi, err := os.Stat(s.bodyPath(o.id))
	switch {
	case err == nil && fi.Size() == o.Meta.Size:
		return nil
	case err == nil:
		err = fmt.Errorf("body file has %d bytes, want %d", fi.Size(), o.Meta.Size)
	case !errors.Is(err, os.ErrNotExist):
		// Not proof of damage (EMFILE, EACCES...): keep the record.
		return fmt.Errorf("objstore: body of %q: %w", o.Meta.Key, err)
	}
	return s.dropBroken(o.Meta.Key, o.id, err)
}

// dropBroken removes the record of key if it still is object id, whose
// body is missing or damaged (why), and returns ErrNotFound. A body that
// went with a concurrent delete or replacement is not damage: nothing is
// logged then.
func (s *Store) dropBroken(key string, id uint64, why error) error {
	var d deletion
	hw := s.hotWrite()
	err := s.update(func(tx *bolt.Tx) error {
		d = deletion{}
		v := tx.Bucket(bucketMeta).Get([]byte(key))
		if v == nil {
			return nil
		}
		if h, err := parseHead(v); err != nil || h.id != id {
			return nil
		}
		if _, _, err := s.deleteKey(tx, []byte(key), &d); err != nil {
			return err
		}
		hw.change(d.keys...)
		return nil
	})
	hw.done()
	if err != nil {
		return fmt.Errorf("objstore: removing the record of a damaged body: %w", err)
	}
	if d.objects > 0 {
		s.log.Warn("objstore: body file missing or damaged; object dropped", "path", s.path, "key", key, "id", id, "err", why)
		s.deleted(&d)
	}
	return fmt.Errorf("objstore: body of %q: %w", key, ErrNotFound)
}
