package identity

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// File errors callers branch on. A missing file is reported with an error
// wrapping fs.ErrNotExist.
var (
	// ErrExists means CreateFile found a file (or anything else) at the path;
	// it never overwrites a key.
	ErrExists = errors.New("identity: key file already exists")
	// ErrInsecurePermissions is returned by CheckPermissions for a key file
	// that group or others may access. It is worth a warning, not a refusal:
	// solana-keygen itself writes 0644 on some systems.
	ErrInsecurePermissions = errors.New("identity: key file is accessible by group or others")
)

// linkFile is os.Link; tests replace it to exercise the fallback.
var linkFile = os.Link

// maxKeyFileSize bounds what LoadFile reads. The compact form is at most 258
// bytes; this leaves room for pretty-printed JSON.
const maxKeyFileSize = 16 << 10

// LoadFile reads a Solana CLI keypair file (see ParseSolana). It refuses
// anything that is not a regular file, so a FIFO or device at the path
// cannot hang or flood it. It does not look at permissions: call
// CheckPermissions and log what it returns.
func LoadFile(path string) (*Keypair, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("identity: load key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrMalformedKey, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity: load key: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("identity: load key %s: %w", path, err)
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrMalformedKey, path, maxKeyFileSize)
	}
	k, err := ParseSolana(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// CheckPermissions returns an error wrapping ErrInsecurePermissions if the
// file at path is readable, writable or executable by group or others, nil
// if it is private to its owner (or on Windows, where modes mean little),
// and the stat error otherwise.
func CheckPermissions(path string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("identity: check permissions: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o, want 0600", ErrInsecurePermissions, path, perm)
	}
	return nil
}

// CreateFile generates a new keypair and writes it to path with mode 0600,
// creating the parent directory with mode 0700 if it is missing. It never
// overwrites: if anything exists at path it returns ErrExists. The key is
// written to a temporary file in the same directory, synced, and then
// hard-linked into place (link fails rather than replace an existing file),
// so a crash leaves either no key file or a complete one. On filesystems
// without hard links (FAT) it falls back to an exclusive create of the file
// itself; a crash there can leave a truncated file, which LoadFile refuses.
func CreateFile(path string) (*Keypair, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("identity: create key directory: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("%w: %s", ErrExists, path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("identity: create key: %w", err)
	}
	k, err := Generate()
	if err != nil {
		return nil, err
	}
	data := k.MarshalSolana()

	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("identity: create key: %w", err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName)
	if err := writeSync(tmp, data); err != nil {
		return nil, fmt.Errorf("identity: write key: %w", err)
	}
	if err := linkFile(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%w: %s", ErrExists, path)
		}
		// No hard links here: create the file itself, exclusively.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			if errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("%w: %s", ErrExists, path)
			}
			return nil, fmt.Errorf("identity: create key: %w", err)
		}
		if err := writeSync(f, data); err != nil {
			os.Remove(path) // ours, and incomplete
			return nil, fmt.Errorf("identity: write key: %w", err)
		}
	}
	syncDir(dir)
	return k, nil
}

// LoadOrCreate loads the key file at path, or creates it if there is none.
// created reports whether a new key was made. Two processes racing to create
// the same file end up with the same key.
func LoadOrCreate(path string) (kp *Keypair, created bool, err error) {
	kp, err = LoadFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return kp, false, err
	}
	kp, err = CreateFile(path)
	if errors.Is(err, ErrExists) {
		kp, err = LoadFile(path)
		return kp, false, err
	}
	if err != nil {
		return nil, false, err
	}
	return kp, true, nil
}

// writeSync writes data to f, syncs and closes it.
func writeSync(f *os.File, data []byte) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes a new directory entry durable. Best effort: some
// filesystems refuse to sync a directory, and the file itself is synced.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
