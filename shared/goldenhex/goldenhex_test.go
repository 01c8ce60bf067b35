package goldenhex

import (
	"bytes"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	b := make([]byte, 37)
	for i := range b {
		b[i] = byte(i * 7)
	}
	f := Format("vector", b)
	if !bytes.HasPrefix(f, []byte("# vector (37 bytes)\n00 07 0e")) {
		t.Fatalf("format:\n%s", f)
	}
	got, err := Parse(f)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("parse: %x %v", got, err)
	}
	if _, err := Parse([]byte("0g")); err == nil {
		t.Fatal("bad hex accepted")
	}
}
