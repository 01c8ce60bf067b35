package objstore

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

// smallStore stores n objects of 1 KiB for the Get benchmarks.
func smallStore(b *testing.B, n int) (*Store, []string) {
	s := openTest(b, "", Options{MaxBytes: 64 << 20}, 0)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("/videos/seg%04d.ts?x=1", i)
		put(b, s, keys[i], body(keys[i], 1024), 0)
	}
	return s, keys
}

// BenchmarkGetSmall is the cache-hit path: Get plus WriteRange of a 1 KiB
// body, over 100 keys (all in the hot cache), or 1000 keys with the hot
// cache off (a bbolt read transaction per Get).
func BenchmarkGetSmall(b *testing.B) {
	for _, hot := range []bool{true, false} {
		b.Run(fmt.Sprintf("hot=%v", hot), func(b *testing.B) {
			n := 1000
			if hot {
				n = 100
			}
			s, keys := smallStore(b, n)
			if !hot {
				s.hot.init(0)
			}
			b.ReportAllocs()
			b.SetBytes(1024)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				o, err := s.Get(keys[i%n])
				if err != nil {
					b.Fatal(err)
				}
				if _, err := o.WriteRange(io.Discard, 0, o.Meta.Size); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkGetSmallParallel(b *testing.B) {
	const n = 100
	s, keys := smallStore(b, n)
	b.ReportAllocs()
	b.SetBytes(1024)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			o, err := s.Get(keys[i%n])
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := o.WriteRange(io.Discard, 0, o.Meta.Size); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkGetFile is Get of an object whose body is a file (a bbolt read
// and a stat of the file).
func BenchmarkGetFile(b *testing.B) {
	s := openTest(b, "", Options{MaxBytes: 64 << 20}, 0)
	put(b, s, "/big", body("big", 1<<20), 0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Get("/big"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteRange1MiB copies a 1 MiB file body to a writer with
// ReadFrom (io.Discard; an HTTP response would use sendfile instead).
func BenchmarkWriteRange1MiB(b *testing.B) {
	s := openTest(b, "", Options{MaxBytes: 64 << 20}, 0)
	put(b, s, "/big", body("big", 1<<20), 0)
	o, err := s.Get("/big")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(1 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := o.WriteRange(io.Discard, 0, o.Meta.Size); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFill1MiB stores 1 MiB objects written in 32 KiB pieces, over 32
// keys, so that every fill also replaces an older version; with fsync of
// the body file and of the bbolt commit.
func BenchmarkFill1MiB(b *testing.B) {
	s := openTest(b, "", Options{MaxBytes: 256 << 20}, 0)
	s.db.NoSync, s.noSync = false, false // measure real commits
	data := body("fill", 1<<20)
	b.ReportAllocs()
	b.SetBytes(1 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w, err := s.Create(fmt.Sprintf("/fill/%d", i%32), 1<<20)
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < len(data); off += 32 << 10 {
			if _, err := w.Write(data[off : off+32<<10]); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Commit(Meta{Status: 200}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServeBody serves one object over loopback HTTP (keep-alive), the
// body inline (copied from memory) or in a file (sendfile), to choose the
// inline limit: below it, memory wins.
func BenchmarkServeBody(b *testing.B) {
	for _, size := range []int{4 << 10, 16 << 10, 32 << 10, 64 << 10, 256 << 10} {
		for _, inFile := range []bool{false, true} {
			b.Run(fmt.Sprintf("size=%dK/file=%v", size>>10, inFile), func(b *testing.B) {
				s := openTest(b, "", Options{MaxBytes: 64 << 20}, 0)
				s.inlineMax = int64(size)
				if inFile {
					s.inlineMax = 1
				}
				put(b, s, "/o", body("o", size), 0)
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					o, err := s.Get("/o")
					if err != nil {
						http.Error(w, err.Error(), 500)
						return
					}
					w.Header()["Content-Length"] = []string{strconv.FormatInt(o.Meta.Size, 10)}
					o.WriteRange(w, 0, o.Meta.Size)
				}))
				defer srv.Close()
				client := srv.Client()
				buf := make([]byte, 64<<10)
				b.SetBytes(int64(size))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					resp, err := client.Get(srv.URL)
					if err != nil {
						b.Fatal(err)
					}
					n, _ := io.CopyBuffer(io.Discard, struct{ io.Reader }{resp.Body}, buf)
					resp.Body.Close()
					if n != int64(size) {
						b.Fatalf("got %d bytes", n)
					}
				}
			})
		}
	}
}
