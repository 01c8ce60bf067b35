package amt

import (
	"net/netip"
	"testing"
)

// benchDatagram is a full-size inner datagram: 1500-byte path minus the
// AMT/UDP/IPv4 encapsulation.
func benchDatagram(tb testing.TB, src, group netip.Addr) []byte {
	tb.Helper()
	hdr := 28
	if src.Is6() {
		hdr = 48
	}
	payload := make([]byte, 1500-Overhead4-hdr)
	for i := range payload {
		payload[i] = byte(i)
	}
	b, err := AppendInnerUDP(nil, Datagram{Src: src, Dst: group, SrcPort: 5000, DstPort: 5001, Payload: payload})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func BenchmarkAppendData(b *testing.B) {
	inner := benchDatagram(b, fxSrc4, fxGroup4)
	buf := make([]byte, 0, 1500)
	b.SetBytes(int64(len(inner)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		buf = AppendData(buf[:0], inner)
	}
}

func BenchmarkParseDataHeader(b *testing.B) {
	msg := AppendData(nil, benchDatagram(b, fxSrc4, fxGroup4))
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ParseDataHeader(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseInnerUDP(b *testing.B) {
	for _, tt := range []struct {
		name       string
		src, group netip.Addr
	}{{"v4", fxSrc4, fxGroup4}, {"v6", fxSrc6, fxGroup6}} {
		b.Run(tt.name, func(b *testing.B) {
			inner := benchDatagram(b, tt.src, tt.group)
			b.SetBytes(int64(len(inner)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := ParseInnerUDP(inner); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendInnerUDP(b *testing.B) {
	payload := make([]byte, 1400)
	d := Datagram{Src: fxSrc4, Dst: fxGroup4, SrcPort: 5000, DstPort: 5001, Payload: payload}
	buf := make([]byte, 0, 1500)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var err error
		if buf, err = AppendInnerUDP(buf[:0], d); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkComputeMAC(b *testing.B) {
	secret := make([]byte, 32)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		ComputeMAC(secret, fxGW4, uint32(i))
	}
}

// TestHotPathsDoNotAllocate keeps the data path allocation-free.
func TestHotPathsDoNotAllocate(t *testing.T) {
	inner4 := benchDatagram(t, fxSrc4, fxGroup4)
	inner6 := benchDatagram(t, fxSrc6, fxGroup6)
	msg := AppendData(nil, inner4)
	buf := make([]byte, 0, 1500)
	d := Datagram{Src: fxSrc6, Dst: fxGroup6, Payload: make([]byte, 1000)}
	for name, f := range map[string]func(){
		"AppendData":       func() { buf = AppendData(buf[:0], inner4) },
		"ParseDataHeader":  func() { _, _ = ParseDataHeader(msg) },
		"ParseInnerUDP v4": func() { _, _ = ParseInnerUDP(inner4) },
		"ParseInnerUDP v6": func() { _, _ = ParseInnerUDP(inner6) },
		"AppendInnerUDP":   func() { buf, _ = AppendInnerUDP(buf[:0], d) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations per run", name, n)
		}
	}
}
