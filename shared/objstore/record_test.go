package objstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

func TestRecordRoundTrip(t *testing.T) {
	ts := time.Date(2024, 12, 31, 23, 59, 59, 999999999, time.UTC)
	tests := []struct {
		name string
		m    Meta
		file bool
	}{
		{"zero", Meta{}, false},
		{"in a file", Meta{Status: 200, Size: 1 << 20}, true},
		{"no headers", Meta{Status: 200, Size: 1 << 40, RequestTime: ts, ResponseTime: ts}, false},
		{"headers", Meta{Status: 206, Size: 5, Header: http.Header{
			"Content-Type":  {"text/plain"},
			"Set-Cookie":    {"a=1", "b=2", ""},
			"X-Empty":       {},
			"Cache-Control": {"max-age=60"},
		}}, false},
		{"binary values", Meta{Status: 999, Header: http.Header{"X": {"\x00\xff\n"}}}, false},
		{"before 1970", Meta{RequestTime: time.Date(1900, 1, 1, 0, 0, 0, 1, time.UTC)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, err := encodeRecord(nil, &tt.m, 42, -7, tt.file)
			if err != nil {
				t.Fatal(err)
			}
			var got Meta
			h, err := decodeRecord(rec, &got)
			if err != nil {
				t.Fatal(err)
			}
			if h.id != 42 || h.atime != -7 || h.size != tt.m.Size || h.file != tt.file {
				t.Fatalf("head = %+v", h)
			}
			want := tt.m
			if len(want.Header) == 0 {
				want.Header = nil
			}
			if !got.RequestTime.Equal(want.RequestTime) || !got.ResponseTime.Equal(want.ResponseTime) ||
				got.RequestTime.IsZero() != want.RequestTime.IsZero() {
				t.Fatalf("times: got %v %v", got.RequestTime, got.ResponseTime)
			}
			got.RequestTime, got.ResponseTime, want.RequestTime, want.ResponseTime = time.Time{}, time.Time{}, time.Time{}, time.Time{}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %+v\nwant %+v", got, want)
			}
			// Appending to one header's values must not clobber another's.
			for k := range got.Header {
				got.Header[k] = append(got.Header[k], "extra")
			}
			for k, vs := range got.Header {
				if orig := tt.m.Header[k]; len(vs) != len(orig)+1 || !reflect.DeepEqual(vs[:len(orig)], orig[:len(orig):len(orig)]) {
					t.Fatalf("values of %q changed: %q", k, vs)
				}
			}
		})
	}
	if _, err := encodeRecord(nil, &Meta{Status: 1 << 16}, 1, 1, false); err == nil {
		t.Fatal("status 65536 encoded")
	}
}

// TestRecordGolden pins the on-disk record format: a change that breaks
// reading existing cache files shows here (go test -update rewrites it).
func TestRecordGolden(t *testing.T) {
	m := Meta{
		Status: 200,
		Size:   1234,
		Header: http.Header{
			"Content-Type": {"video/mp4"},
			"Etag":         {`"abc"`},
			"Vary":         {"Accept-Encoding", "Origin"},
		},
		RequestTime:  time.Date(2025, 6, 1, 10, 0, 0, 500, time.UTC),
		ResponseTime: time.Date(2025, 6, 1, 10, 0, 1, 0, time.UTC),
	}
	rec, err := encodeRecord(nil, &m, 0x0102030405060708, 1748772000000000000, true)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "meta_v2.bin")
	if *update {
		if err := os.WriteFile(path, rec, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rec, golden) {
		t.Fatalf("encoding changed:\n got %x\nwant %x", rec, golden)
	}
	var got Meta
	h, err := decodeRecord(golden, &got)
	if err != nil {
		t.Fatal(err)
	}
	if h.id != 0x0102030405060708 || !h.file || got.Size != 1234 || got.Header.Get("Etag") != `"abc"` ||
		!got.RequestTime.Equal(m.RequestTime) || len(got.Header["Vary"]) != 2 {
		t.Fatalf("decoded %+v %+v", h, got)
	}
}

func TestDecodeRecordErrors(t *testing.T) {
	good, _ := encodeRecord(nil, &Meta{Status: 200, Header: http.Header{"A": {"1", "2"}, "B": {"3"}}}, 1, 1, false)
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	hdr := func(parts ...[]byte) []byte { // good's fixed part + a header block
		b := bytes.Clone(good[:recordFixedLen])
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	tests := []struct {
		name string
		rec  []byte
	}{
		{"empty", nil},
		{"short", good[:recordFixedLen-1]},
		{"no header block", good[:recordFixedLen]},
		{"format 1 record", mod(func(b []byte) []byte { b[0] = 1; return b })},
		{"version", mod(func(b []byte) []byte { b[0] = 3; return b })},
		{"unknown flag", mod(func(b []byte) []byte { b[offFlags] = 2; return b })},
		{"id zero", mod(func(b []byte) []byte { binary.BigEndian.PutUint64(b[offID:], 0); return b })},
		{"negative size", mod(func(b []byte) []byte { b[offSize] = 0x80; return b })},
		{"nanoseconds", mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[offReq+8:], 1e9); return b })},
		{"trailing byte", append(bytes.Clone(good), 0)},
		{"truncated headers", good[:len(good)-1]},
		{"huge name count", hdr([]byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0})},
		{"huge value count", hdr([]byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f})},
		{"bad varint", hdr([]byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})},
		{"fewer values than declared", hdr([]byte{1, 2, 1, 'A', 1, 1, 'x'})},
		{"more values than declared", hdr([]byte{1, 1, 1, 'A', 2, 1, 'x', 1, 'y'})},
		{"duplicate name", hdr([]byte{2, 2, 1, 'A', 1, 1, 'x', 1, 'A', 1, 1, 'y'})},
		{"names out of order", hdr([]byte{2, 2, 1, 'B', 1, 1, 'x', 1, 'A', 1, 1, 'y'})},
		{"name past end", hdr([]byte{1, 0, 9, 'A'})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Meta
			if _, err := decodeRecord(tt.rec, &m); !errors.Is(err, errRecord) {
				t.Fatalf("decodeRecord = %v, want errRecord", err)
			}
		})
	}
	var m Meta
	if _, err := decodeRecord(good, &m); err != nil {
		t.Fatalf("good record: %v", err)
	}
	// A record of format 1 (bodies in bbolt chunks) is refused.
	v1, err := os.ReadFile(filepath.Join("testdata", "meta_v1.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeRecord(v1, &m); !errors.Is(err, errRecord) || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("format 1 record: %v", err)
	}
}

// FuzzDecodeRecord: decoding any bytes returns an error or a Meta that
// encodes and decodes back to itself; validateRecord agrees with decode.
func FuzzDecodeRecord(f *testing.F) {
	if golden, err := os.ReadFile(filepath.Join("testdata", "meta_v2.bin")); err == nil {
		f.Add(golden)
	}
	seed, _ := encodeRecord(nil, &Meta{Status: 200, Header: http.Header{"A": {"1", "2"}, "B": {}}}, 1, 1, false)
	f.Add(seed)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, rec []byte) {
		var m Meta
		h, err := decodeRecord(rec, &m)
		_, verr := validateRecord(rec)
		if (err == nil) != (verr == nil) {
			t.Fatalf("decode: %v, validate: %v", err, verr)
		}
		if err != nil {
			return
		}
		again, err := encodeRecord(nil, &m, h.id, h.atime, h.file)
		if err != nil {
			t.Fatal(err)
		}
		var m2 Meta
		h2, err := decodeRecord(again, &m2)
		if err != nil {
			t.Fatal(err)
		}
		if h2 != h {
			t.Fatalf("head: %+v != %+v", h2, h)
		}
		if !m.RequestTime.Equal(m2.RequestTime) || !m.ResponseTime.Equal(m2.ResponseTime) {
			t.Fatalf("times: %v %v != %v %v", m.RequestTime, m.ResponseTime, m2.RequestTime, m2.ResponseTime)
		}
		m.RequestTime, m.ResponseTime, m2.RequestTime, m2.ResponseTime = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip: %+v != %+v", m, m2)
		}
	})
}
