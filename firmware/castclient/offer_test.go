package castclient

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/mcproto"
)

// taker stands in for the multicast receiver (mcrecv's tests run the real one).
type taker struct {
	ready bool
	err   error
	taken atomic.Int64
}

func (t *taker) Ready() bool { return t.ready }

func (t *taker) Take(ctx context.Context, key string, offer *http.Response) (*http.Response, error) {
	offer.Body.Close()
	t.taken.Add(1)
	if t.err != nil {
		return nil, t.err
	}
	return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("by multicast"))}, nil
}

// offerServer answers with an offer when asked for one (or always), and
// with the object otherwise; it records the multicast header of each GET.
func offerServer(t *testing.T, always bool) (*httptest.Server, *[]string) {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get(HeaderMulticast)+"|"+r.Header.Get("Range"))
		if always || (r.Header.Get(HeaderMulticast) == "1" && r.Header.Get("Range") == "") {
			w.Header().Set("Content-Type", mcproto.OfferType+"; charset=utf-8")
			io.WriteString(w, `{"version":1}`)
			return
		}
		io.WriteString(w, "by unicast")
	}))
	t.Cleanup(srv.Close)
	return srv, &seen
}

func fetchBody(t *testing.T, c *Client, cond http.Header) (string, error) {
	resp, err := c.Fetch(context.Background(), "/a", cond)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestFetchOffer(t *testing.T) {
	key, _ := identity.Generate()
	for _, tc := range []struct {
		name   string
		taker  *taker
		always bool
		cond   http.Header
		want   string
		seen   []string
		err    bool
	}{
		{"no receiver", nil, false, nil, "by unicast", []string{"|"}, false},
		{"not ready", &taker{}, false, nil, "by unicast", []string{"|"}, false},
		{"offer taken", &taker{ready: true}, false, nil, "by multicast", []string{"1|"}, false},
		{"range never asks", &taker{ready: true}, false, http.Header{"Range": {"bytes=0-9"}}, "by unicast", []string{"|bytes=0-9"}, false},
		{"refused offer: unicast", &taker{ready: true, err: errors.New("bad signature")}, false, nil, "by unicast", []string{"1|", "|"}, false},
		{"unsolicited offer", &taker{}, true, nil, "", []string{"|"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, seen := offerServer(t, tc.always)
			c, err := New(srv.URL, key)
			if err != nil {
				t.Fatal(err)
			}
			if tc.taker != nil {
				c.SetMulticast(tc.taker)
			}
			got, err := fetchBody(t, c, tc.cond)
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("got %q, %v", got, err)
			}
			if strings.Join(*seen, ",") != strings.Join(tc.seen, ",") {
				t.Errorf("requests %q, want %q", *seen, tc.seen)
			}
		})
	}
}
