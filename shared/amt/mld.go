package amt

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// MLDv2 ICMPv6 types (RFC 3810 §5).
const (
	mldTypeQuery    = 130
	mldTypeReportV2 = 143

	mldQueryMinLen  = 28
	mldReportMinLen = 8
)

// ParseMLDQuery decodes an MLDv2 Query (ICMPv6 type 130), the upper-layer
// payload of an IPv6 packet from src to dst, verifying the ICMPv6 checksum
// over the pseudo-header (RFC 3810 §5.1). A 24-byte MLDv1 query is refused
// with ErrShort; octets after the source list are ignored.
func ParseMLDQuery(b []byte, src, dst netip.Addr) (Query, error) {
	if len(b) < mldQueryMinLen {
		return Query{}, fmt.Errorf("mld: query of %d bytes: %w", len(b), ErrShort)
	}
	if b[0] != mldTypeQuery {
		return Query{}, fmt.Errorf("mld: type %d, want query %d: %w", b[0], mldTypeQuery, ErrType)
	}
	if err := mldChecksum(b, src, dst); err != nil {
		return Query{}, err
	}
	n := int(binary.BigEndian.Uint16(b[26:28]))
	if mldQueryMinLen+16*n > len(b) {
		return Query{}, fmt.Errorf("mld: query with %d sources in %d bytes: %w", n, len(b), ErrShort)
	}
	q := Query{
		MaxRespCode:              binary.BigEndian.Uint16(b[4:6]),
		Group:                    netip.AddrFrom16([16]byte(b[8:24])),
		SuppressRouterProcessing: b[24]&suppressFlag != 0,
		QRV:                      b[24] & qrvMask,
		QQIC:                     b[25],
	}
	if n > 0 {
		q.Sources = make([]netip.Addr, n)
		for i := range q.Sources {
			off := mldQueryMinLen + 16*i
			q.Sources[i] = netip.AddrFrom16([16]byte(b[off : off+16]))
		}
	}
	return q, nil
}

// AppendMLDQuery appends an MLDv2 Query with its checksum for an IPv6
// packet from src to dst.
func AppendMLDQuery(dst []byte, src, to netip.Addr, q Query) ([]byte, error) {
	if err := checkPseudo6(src, to); err != nil {
		return dst, fmt.Errorf("mld: query: %w", err)
	}
	group := q.Group
	if !group.IsValid() {
		group = netip.IPv6Unspecified()
	}
	if !group.Is6() {
		return dst, fmt.Errorf("mld: query group %v: %w", q.Group, ErrAddress)
	}
	if q.QRV > qrvMask {
		return dst, fmt.Errorf("mld: query QRV %d out of range: %w", q.QRV, ErrMalformed)
	}
	if len(q.Sources) > 0xffff {
		return dst, fmt.Errorf("mld: %d sources: %w", len(q.Sources), ErrLength)
	}
	start := len(dst)
	dst = append(dst, mldTypeQuery, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, q.MaxRespCode)
	dst = append(dst, 0, 0)
	g := group.As16()
	dst = append(dst, g[:]...)
	flags := q.QRV
	if q.SuppressRouterProcessing {
		flags |= suppressFlag
	}
	dst = append(dst, flags, q.QQIC)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(q.Sources)))
	var err error
	if dst, err = appendAddrs16(dst, q.Sources); err != nil {
		return dst[:start], fmt.Errorf("mld: query: %w", err)
	}
	binary.BigEndian.PutUint16(dst[start+2:], upperChecksum(src, to, ProtoICMPv6, dst[start:]))
	return dst, nil
}

// ParseMLDReport decodes an MLDv2 Report (ICMPv6 type 143) sent from src to
// dst, verifying its checksum (RFC 3810 §5.2). Reserved fields and auxiliary
// data are ignored, as are bytes after the last record.
func ParseMLDReport(b []byte, src, dst netip.Addr) ([]GroupRecord, error) {
	if len(b) < mldReportMinLen {
		return nil, fmt.Errorf("mld: report of %d bytes: %w", len(b), ErrShort)
	}
	if b[0] != mldTypeReportV2 {
		return nil, fmt.Errorf("mld: type %d, want report %d: %w", b[0], mldTypeReportV2, ErrType)
	}
	if err := mldChecksum(b, src, dst); err != nil {
		return nil, err
	}
	recs, err := parseRecords(b[mldReportMinLen:], int(binary.BigEndian.Uint16(b[6:8])), 16)
	if err != nil {
		return nil, fmt.Errorf("mld: report: %w", err)
	}
	return recs, nil
}

// AppendMLDReport appends an MLDv2 Report of recs with its checksum for an
// IPv6 packet from src to dst. Every group and source must be IPv6.
func AppendMLDReport(dst []byte, src, to netip.Addr, recs []GroupRecord) ([]byte, error) {
	if err := checkPseudo6(src, to); err != nil {
		return dst, fmt.Errorf("mld: report: %w", err)
	}
	start := len(dst)
	dst = append(dst, mldTypeReportV2, 0, 0, 0, 0, 0)
	dst, err := appendRecords(dst, recs, 16)
	if err != nil {
		return dst[:start], fmt.Errorf("mld: report: %w", err)
	}
	binary.BigEndian.PutUint16(dst[start+2:], upperChecksum(src, to, ProtoICMPv6, dst[start:]))
	return dst, nil
}

func mldChecksum(b []byte, src, dst netip.Addr) error {
	if err := checkPseudo6(src, dst); err != nil {
		return fmt.Errorf("mld: %w", err)
	}
	if upperChecksum(src, dst, ProtoICMPv6, b) != 0 {
		return fmt.Errorf("mld: %w", ErrChecksum)
	}
	return nil
}

func checkPseudo6(src, dst netip.Addr) error {
	if !src.Is6() || !dst.Is6() {
		return fmt.Errorf("pseudo-header addresses %v -> %v: %w", src, dst, ErrAddress)
	}
	return nil
}
