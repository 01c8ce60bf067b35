package identity

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

func TestCreateFileAndLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "new", "sub", "node-key.json")
	k, err := CreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %04o, want 0600", perm)
	}
	for _, d := range []string{filepath.Join(dir, "new"), filepath.Join(dir, "new", "sub")} {
		di, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if perm := di.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("created directory %s mode %04o, want 0700", d, perm)
		}
	}
	if err := CheckPermissions(path); err != nil {
		t.Errorf("CheckPermissions: %v", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, k.MarshalSolana()) {
		t.Errorf("file holds %s", data)
	}
	got, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Public() != k.Public() || got.ID() != k.ID() {
		t.Errorf("loaded %s, created %s", got.ID(), k.ID())
	}
	// No temporary file is left behind.
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only the key", names)
	}
}

func TestCreateFileNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	existing := []byte("precious, not a key")

	file := filepath.Join(dir, "file.json")
	if err := os.WriteFile(file, existing, 0o600); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(dir, "dangling.json")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}
	subdir := filepath.Join(dir, "adir")
	if err := os.Mkdir(subdir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{file, dangling, subdir} {
		if _, err := CreateFile(path); !errors.Is(err, ErrExists) {
			t.Errorf("CreateFile(%s) error = %v, want ErrExists", path, err)
		}
	}
	if data, _ := os.ReadFile(file); !bytes.Equal(data, existing) {
		t.Errorf("existing file changed to %q", data)
	}
	if _, err := os.Lstat(filepath.Join(dir, "nowhere")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("CreateFile wrote through a dangling symlink: %v", err)
	}

	// A key file is not replaced by a second CreateFile either.
	keyPath := filepath.Join(dir, "key.json")
	k1, err := CreateFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CreateFile(keyPath); !errors.Is(err, ErrExists) {
		t.Fatalf("second CreateFile error = %v, want ErrExists", err)
	}
	k2, err := LoadFile(keyPath)
	if err != nil || k2.Public() != k1.Public() {
		t.Fatalf("key changed: %v", err)
	}
}

func TestLoadFileErrors(t *testing.T) {
	dir := t.TempDir()
	k, _ := Generate()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	raw := k.PrivateKey()
	raw[63] ^= 1 // last byte of the public half
	mismatch := []byte(solanaArray(raw))
	big := append(bytes.Repeat([]byte(" "), maxKeyFileSize), k.MarshalSolana()...)

	tests := []struct {
		name string
		path string
		want error
	}{
		{"missing", filepath.Join(dir, "missing.json"), fs.ErrNotExist},
		{"missing dir", filepath.Join(dir, "nodir", "k.json"), fs.ErrNotExist},
		{"directory", dir, ErrMalformedKey},
		{"empty", write("empty.json", nil), ErrMalformedKey},
		{"half written", write("half.json", k.MarshalSolana()[:100]), ErrMalformedKey},
		{"not json", write("text.json", []byte("hello")), ErrMalformedKey},
		{"too big", write("big.json", big), ErrMalformedKey},
		{"mismatched halves", write("mismatch.json", mismatch), ErrKeyMismatch},
	}
	for _, tt := range tests {
		if _, err := LoadFile(tt.path); !errors.Is(err, tt.want) {
			t.Errorf("%s: error = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestCheckPermissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("modes mean little on Windows")
	}
	path := filepath.Join(t.TempDir(), "k.json")
	if _, err := CreateFile(path); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true}, {0o400, true}, {0o700, true},
		{0o644, false}, {0o640, false}, {0o604, false}, {0o620, false}, {0o666, false},
	} {
		if err := os.Chmod(path, tt.mode); err != nil {
			t.Fatal(err)
		}
		err := CheckPermissions(path)
		if tt.ok && err != nil {
			t.Errorf("mode %04o: %v", tt.mode, err)
		}
		if !tt.ok && !errors.Is(err, ErrInsecurePermissions) {
			t.Errorf("mode %04o: error = %v, want ErrInsecurePermissions", tt.mode, err)
		}
		// Loading is not refused; the caller decides whether to warn.
		if _, err := LoadFile(path); err != nil && tt.mode&0o400 != 0 {
			t.Errorf("mode %04o: LoadFile: %v", tt.mode, err)
		}
	}
	if err := CheckPermissions(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: error = %v", err)
	}
}

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "etc", "blockcast", "key.json")
	k1, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreate: created=%v err=%v", created, err)
	}
	k2, created, err := LoadOrCreate(path)
	if err != nil || created {
		t.Fatalf("second LoadOrCreate: created=%v err=%v", created, err)
	}
	if k1.Public() != k2.Public() {
		t.Fatal("second LoadOrCreate returned another key")
	}

	// A broken key file is reported, never silently replaced.
	if err := os.WriteFile(path, []byte("[1,2,3"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreate(path); !errors.Is(err, ErrMalformedKey) {
		t.Fatalf("broken file: error = %v, want ErrMalformedKey", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "[1,2,3" {
		t.Fatalf("broken file was replaced by %q", data)
	}
}

// A crash between writing the temporary file and linking it leaves only a
// stray temporary file, which does not disturb the next start.
func TestLoadOrCreateAfterCrash(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key.json")
	stray := filepath.Join(dir, ".key.json.tmp-123")
	if err := os.WriteFile(stray, []byte("[12,34,"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("LoadOrCreate: created=%v err=%v", created, err)
	}
	if got, err := LoadFile(path); err != nil || got.Public() != k.Public() {
		t.Fatalf("reload: %v", err)
	}
}

func TestLoadOrCreateConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key.json")
	const n = 16
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		ids     = map[string]int{}
		creates int
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, created, err := LoadOrCreate(path)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			ids[k.ID()]++
			if created {
				creates++
			}
		}()
	}
	wg.Wait()
	if len(ids) != 1 || creates != 1 {
		t.Fatalf("%d distinct keys, %d creations; want 1 and 1", len(ids), creates)
	}
}

// solanaArray writes bytes the way solana-keygen does, without checking them.
func solanaArray(b []byte) string {
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, v := range b {
		if i > 0 {
			buf.WriteByte(',')
		}
		fmt.Fprint(&buf, v)
	}
	buf.WriteByte(']')
	return buf.String()
}

// Without hard links (FAT), CreateFile still creates the key exclusively.
func TestCreateFileWithoutHardLinks(t *testing.T) {
	linkFile = func(string, string) error { return &os.LinkError{Op: "link", Err: errors.ErrUnsupported} }
	defer func() { linkFile = os.Link }()
	dir := t.TempDir()
	path := filepath.Join(dir, "key.json")
	k, err := CreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := LoadFile(path); err != nil || got.Public() != k.Public() {
		t.Fatalf("LoadFile: %v", err)
	}
	if err := CheckPermissions(path); err != nil {
		t.Error(err)
	}
	if _, err := CreateFile(path); !errors.Is(err, ErrExists) {
		t.Errorf("second CreateFile error = %v, want ErrExists", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("%d directory entries, want only the key", len(ents))
	}
}
