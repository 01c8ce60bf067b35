package mcrecv

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/blockcast/beacon/firmware/castclient"
	"github.com/blockcast/beacon/shared/httpcache"
	"github.com/blockcast/beacon/shared/objstore"
	"github.com/blockcast/beacon/shared/protocol"
)

// TestThroughCache runs the beacon's real fill path: an end user's GET
// misses the personal cache (httpcache over a bbolt store), castclient
// asks castd with the multicast header, castd (here an HTTP server with
// the in-test sender behind it) offers the object, the receiver streams
// it into the cache, and the next GET is a HIT with the same bytes. With a
// tampered manifest the offer is refused and the object comes by unicast.
func TestThroughCache(t *testing.T) {
	for _, tampered := range []bool{false, true} {
		name := "offer"
		if tampered {
			name = "tampered manifest"
		}
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, 9*blkLen*symLen+17, 1000, Native, nil)
			mpkt := manifestPacket(t, f.s.m)
			if tampered {
				m := *f.s.m
				m.ContentType = "text/html" // what an attacker on the path would change
				mpkt = manifestPacket(t, &m)
			} else {
				go func() {
					to := <-f.ch.addr
					var pkts [][]byte
					for sbn := range f.s.part.N {
						pkts = append(pkts, f.s.block(sbn)...)
					}
					send(t, "127.0.0.2", to, pkts)
				}()
			}
			var asked, unicast atomic.Int64
			castd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				key := strings.TrimPrefix(r.URL.Path, protocol.PathObjectPrefix)
				if key != f.s.m.URL {
					http.NotFound(w, r)
					return
				}
				if r.Header.Get(castclient.HeaderMulticast) == "1" && r.Header.Get("Range") == "" {
					asked.Add(1)
					resp := offerResponse(t, mpkt, f.castd.addr())
					w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
					io.Copy(w, resp.Body)
					return
				}
				unicast.Add(1)
				w.Header().Set("Etag", etag)
				w.Header().Set("Cache-Control", "max-age=600")
				http.ServeContent(w, r, "", f.s.m.LastModified, bytes.NewReader(f.s.obj))
			}))
			defer castd.Close()
			cc, err := castclient.New(castd.URL, f.beacon)
			if err != nil {
				t.Fatal(err)
			}
			cc.SetMulticast(f.r)
			store, err := objstore.Open(filepath.Join(t.TempDir(), "cache.db"), objstore.Options{MaxBytes: 64 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			cache, err := httpcache.New(httpcache.Options{Store: store, Upstream: cc})
			if err != nil {
				t.Fatal(err)
			}
			defer cache.Close()
			front := httptest.NewServer(cache)
			defer front.Close()

			for i, want := range []string{"MISS", "HIT"} {
				resp, err := http.Get(front.URL + f.s.m.URL)
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatal(err)
				}
				if got := resp.Header.Get(protocol.HeaderCache); got != want {
					t.Errorf("request %d: X-Cache %q, want %s", i, got, want)
				}
				if resp.Header.Get("Content-Type") != "video/mp4" && !tampered {
					t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
				}
				// The beacon's delivery receipts count a multicast fill
				// by this header (firmware/receipts Wrap).
				if d := resp.Header.Get(protocol.HeaderDelivery); i == 0 && (d == protocol.DeliveryMulticast) == tampered {
					t.Errorf("request %d (tampered %v): %s %q", i, tampered, protocol.HeaderDelivery, d)
				}
				sameBytes(t, body, f.s.obj)
				if i == 0 {
					waitIdle(t, f.r)
				}
			}
			st := f.r.Stats()
			if asked.Load() != 1 {
				t.Errorf("%d offers asked for", asked.Load())
			}
			if tampered {
				if st.Offers["bad_signature"] != 1 || unicast.Load() != 1 {
					t.Errorf("offers %v, %d unicast GETs", st.Offers, unicast.Load())
				}
			} else if st.Objects["multicast"] != 1 || st.Bytes[labelMulticast] == 0 || unicast.Load() != 0 {
				t.Errorf("objects %v, bytes %v, %d unicast GETs", st.Objects, st.Bytes, unicast.Load())
			}
		})
	}
}
