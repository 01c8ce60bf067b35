package objstore

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const crashEnv = "OBJSTORE_CRASH_HELPER"

// TestCrashHelper is the child of TestCrashMidFill: it commits one object,
// starts a fill of another, writes a few MiB, says READY and waits to be
// killed. It does nothing in a normal test run.
func TestCrashHelper(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("helper process for TestCrashMidFill")
	}
	s, err := Open(path, Options{MaxBytes: 64 << 20, Logger: quietLog})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	keep := body("keep", 100000)
	w, _ := s.Create("/keep", -1)
	w.Write(keep)
	if err := w.Commit(Meta{Status: 200}); err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	s.Get("/keep") // a batched access time, lost with the process
	w, _ = s.Create("/partial", -1)
	data := body("partial", 3<<20+5000)
	for off := 0; off < len(data); off += 32 << 10 {
		if _, err := w.Write(data[off:min(off+32<<10, len(data))]); err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
	}
	fmt.Println("READY")
	time.Sleep(time.Minute)
	os.Exit(2) // not reached: the parent kills us
}

func TestCrashMidFill(t *testing.T) {
	if os.Getenv(crashEnv) != "" {
		t.Skip("in helper")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.v")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.ENOEXEC) {
			t.Skipf("cannot re-exec the test binary (qemu-user without binfmt?): %v", err)
		}
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l := sc.Text(); l == "READY" || strings.HasPrefix(l, "ERR") {
				ready <- l
				return
			}
		}
		ready <- "EOF"
	}()
	select {
	case l := <-ready:
		if l != "READY" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child: %s", l)
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("child did not get ready")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child exit: %v", err)
	}

	// The unfinished fill's body is on disk: the test really crashed with
	// data to clean up.
	parts, bodies := dirCounts(t, path)
	if parts < 3<<20 || bodies != 1 {
		t.Fatalf("before reopen: %d bytes in .part files, %d bodies; the child did not leave a fill behind", parts, bodies)
	}

	s := openTest(t, path, Options{MaxBytes: 64 << 20}, 0)
	mustNotFound(t, s, "/partial")
	if got := readAll(t, s, "/keep"); !bytes.Equal(got, body("keep", 100000)) {
		t.Fatal("committed object damaged")
	}
	if st := s.Stats(); st.Objects != 1 || st.Bytes != 100000 {
		t.Fatalf("Stats = %+v", st)
	}
	checkInvariants(t, s) // no .part file, no body but /keep's
	s.Close()
	if parts, bodies := dirCounts(t, path); parts != 0 || bodies != 1 {
		t.Fatalf("after reopen: %d bytes in .part files, %d bodies", parts, bodies)
	}
}

// dirCounts sums the sizes of the .part files in the body directory of the
// store at path and counts the other files.
func dirCounts(t *testing.T, path string) (partBytes int64, bodies int) {
	t.Helper()
	ents, err := os.ReadDir(path + ".bodies")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), partSuffix) {
			bodies++
			continue
		}
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		partBytes += fi.Size()
	}
	return partBytes, bodies
}
