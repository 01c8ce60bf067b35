package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/blockcast/beacon/shared/protocol"
)

func TestDo(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(protocol.Error{Error: "the operator's token is required"})
			return
		}
		switch r.URL.Path {
		case "/echo":
			if r.Header.Get("Content-Type") != "application/json" {
				http.Error(w, "no JSON", http.StatusBadRequest)
				return
			}
			io.Copy(w, r.Body)
		case "/big":
			w.Write([]byte(strings.Repeat("x", 101)))
		default:
			http.Error(w, "not JSON at all", http.StatusTeapot)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	c := &Client{URL: srv.URL + "/", Token: "tok"}

	b, err := c.Do(ctx, http.MethodPost, "/echo", map[string]int{"a": 1}, 100)
	if err != nil || strings.TrimSpace(string(b)) != `{"a":1}` {
		t.Fatalf("echo: %q, %v", b, err)
	}
	if _, err := c.Do(ctx, http.MethodGet, "/big", nil, 100); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("101 bytes with a bound of 100: %v", err)
	}
	if b, err := c.Do(ctx, http.MethodGet, "/big", nil, 101); err != nil || len(b) != 101 {
		t.Fatalf("101 bytes with a bound of 101: %d, %v", len(b), err)
	}
	_, err = (&Client{URL: srv.URL, Token: "wrong"}).Do(ctx, http.MethodGet, "/echo", nil, 100)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "the operator's token is required") {
		t.Fatalf("wrong token: %v", err)
	}
	if _, err := c.Do(ctx, http.MethodGet, "/teapot", nil, 100); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "is "+c.URL+" a castd?") {
		t.Fatalf("a non-castd answer: %v", err)
	}
	if _, err := (&Client{URL: "http://127.0.0.1:1", Token: "tok"}).Do(ctx, http.MethodGet, "/", nil, 100); err == nil || !strings.Contains(err.Error(), "cannot reach castd") {
		t.Fatalf("nothing listening: %v", err)
	}
}
