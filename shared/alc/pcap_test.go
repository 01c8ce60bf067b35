package alc_test

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/blockcast/beacon/shared/amt"
)

// writePcap writes datagrams as a classic pcap file (microsecond
// timestamps, LINKTYPE_RAW: each record an IPv4 or IPv6 packet). The
// format: a 24-byte global header (magic a1b2c3d4, version 2.4, zone 0,
// sigfigs 0, snaplen, link type), then per packet a 16-byte record header
// (seconds, microseconds, captured length, original length) and the bytes.
func writePcap(path string, pkts [][]byte) error {
	const linkTypeRaw = 101
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, 0xa1b2c3d4)
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, 4)
	b = binary.LittleEndian.AppendUint32(b, 0) // thiszone
	b = binary.LittleEndian.AppendUint32(b, 0) // sigfigs
	b = binary.LittleEndian.AppendUint32(b, 65535)
	b = binary.LittleEndian.AppendUint32(b, linkTypeRaw)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, p := range pkts {
		ts := t0.Add(time.Duration(i) * time.Millisecond)
		b = binary.LittleEndian.AppendUint32(b, uint32(ts.Unix()))
		b = binary.LittleEndian.AppendUint32(b, uint32(ts.Nanosecond()/1000))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return os.WriteFile(path, b, 0o644)
}

// udpDatagram wraps payload as the multicast UDP datagram a sender puts on
// its channel, with the IP and UDP checksums filled in.
func udpDatagram(src, group string, port uint16, payload []byte) ([]byte, error) {
	d := amt.Datagram{
		Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(group),
		SrcPort: 40000, DstPort: port, Payload: payload,
	}
	b, err := amt.AppendInnerUDP(nil, d)
	if err != nil {
		return nil, fmt.Errorf("datagram %v -> %v: %w", d.Src, d.Dst, err)
	}
	return b, nil
}
