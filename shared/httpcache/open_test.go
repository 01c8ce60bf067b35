package httpcache

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestOpen: a miss is filled once however many Opens and GETs arrive
// together; the object comes back whole with its header and freshness,
// and a later Open is a hit that asks the origin nothing.
func TestOpen(t *testing.T) {
	body := strings.Repeat("multicast me ", 40000) // ~500 KB: a body file
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", httpDate(t0))
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Type", "video/mp2t")
		io.WriteString(w, body[:1000])
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, body[1000:])
	})
	e := newEnv(t, o.URL, 8<<20)
	const opens, gets = 8, 4
	var wg sync.WaitGroup
	errs := make([]error, opens)
	for i := range opens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			obj, exp, err := e.cache.Open(context.Background(), "/seg.ts")
			if err == nil {
				got := make([]byte, obj.Meta.Size)
				if _, err = obj.ReadAt(got, 0); err == nil && string(got) != body {
					err = errors.New("wrong body")
				}
				if err == nil && (obj.Meta.Header.Get("Content-Type") != "video/mp2t" || !exp.Equal(t0.Add(60*time.Second))) {
					err = errors.New("wrong header or expiry " + exp.String())
				}
			}
			errs[i] = err
		}()
	}
	for range gets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r, err := e.fetch("GET", "/seg.ts"); err != nil || r.body != body {
				t.Errorf("GET during Open: %v, %d bytes", err, len(r.body))
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
		}
	}
	if _, _, err := e.cache.Open(context.Background(), "/seg.ts"); err != nil {
		t.Fatal(err)
	}
	if n := o.n.Load(); n != 1 {
		t.Errorf("origin asked %d times, want 1", n)
	}
}

// TestOpenRefusals: what cannot be stored whole and fresh is an error the
// caller can branch on, never a partial object.
func TestOpenRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
		want error
	}{
		{"404", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, ErrNotStorable},
		{"no-store", fixed("x", "Cache-Control", "no-store"), ErrNotStorable},
		{"no lifetime", fixed("x", "Cache-Control", "max-age=0"), ErrNotStorable},
		{"500", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", 500) }, ErrUnavailable},
		{"cut midway", cutOrigin(true), ErrUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOrigin(t, tc.h)
			e := newEnv(t, o.URL, 1<<20)
			obj, _, err := e.cache.Open(context.Background(), "/x")
			if !errors.Is(err, tc.want) || obj != nil {
				t.Fatalf("Open = %v, %v; want %v", obj, err, tc.want)
			}
		})
	}
	o := newOrigin(t, fixed("x", "Cache-Control", "max-age=60"))
	e := newEnv(t, o.URL, 1<<20)
	if _, _, err := e.cache.Open(context.Background(), "/a/../etc/passwd"); err == nil {
		t.Error("Open took a key with dot segments")
	}
	// The origin is gone: ErrUnavailable, not a hang.
	o.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := e.cache.Open(ctx, "/gone"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("origin down: %v", err)
	}
}

// TestOpenContext: a caller that gives up gets its context's error at once;
// the fill goes on and lands for the next one.
func TestOpenContext(t *testing.T) {
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", httpDate(t0))
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "a")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "b")
	})
	e := newEnv(t, o.URL, 1<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, _, err := e.cache.Open(ctx, "/slow"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Open = %v, want the deadline", err)
	}
	close(release)
	obj, _, err := e.cache.Open(context.Background(), "/slow")
	if err != nil || obj.Meta.Size != 2 {
		t.Fatalf("Open after the fill: %v", err)
	}
}
