package amt

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// IGMPv3 message types (RFC 3376 §4).
const (
	igmpTypeQuery    = 0x11
	igmpTypeReportV3 = 0x22

	igmpQueryMinLen  = 12
	igmpReportMinLen = 8
	igmpRecordMinLen = 8
	mldRecordMinLen  = 20
	qrvMask          = 0x07
	suppressFlag     = 0x08
)

// RecordType is the type of an IGMPv3 group record or MLDv2 multicast
// address record; both protocols use the same values (RFC 3376 §4.2.12,
// RFC 3810 §5.2.12).
type RecordType uint8

// Record types. 1–2 are current-state records (the answer to a query), 3–4
// filter-mode changes, 5–6 source-list changes.
const (
	ModeIsInclude   RecordType = 1
	ModeIsExclude   RecordType = 2
	ChangeToInclude RecordType = 3
	ChangeToExclude RecordType = 4
	AllowNewSources RecordType = 5
	BlockOldSources RecordType = 6
)

func (t RecordType) String() string {
	switch t {
	case ModeIsInclude:
		return "MODE_IS_INCLUDE"
	case ModeIsExclude:
		return "MODE_IS_EXCLUDE"
	case ChangeToInclude:
		return "CHANGE_TO_INCLUDE_MODE"
	case ChangeToExclude:
		return "CHANGE_TO_EXCLUDE_MODE"
	case AllowNewSources:
		return "ALLOW_NEW_SOURCES"
	case BlockOldSources:
		return "BLOCK_OLD_SOURCES"
	}
	return fmt.Sprintf("RecordType(%d)", uint8(t))
}

// Known reports whether t is one of the six defined record types. Decoders
// keep records of other types; RFC 3376 and RFC 3810 tell receivers to
// ignore them, so callers skip them.
func (t RecordType) Known() bool { return t >= ModeIsInclude && t <= BlockOldSources }

// GroupRecord is one record of an IGMPv3 or MLDv2 report. Auxiliary data is
// never sent and is skipped on receipt, as both RFCs require.
type GroupRecord struct {
	Type    RecordType
	Group   netip.Addr
	Sources []netip.Addr
}

// Query is an IGMPv3 or MLDv2 Membership Query; the family of Group says
// which. AMT relays send general queries: Group unspecified, no sources.
type Query struct {
	// MaxRespCode is the raw Max Resp Code: 8 bits in IGMPv3 (tenths of a
	// second), 16 in MLDv2 (milliseconds), both with a floating-point form
	// for large values. See MaxResponse.
	MaxRespCode uint16
	// Group is 0.0.0.0 or :: for a general query. Encoders treat an invalid
	// Group as the unspecified address of their family.
	Group netip.Addr
	// SuppressRouterProcessing is the S flag.
	SuppressRouterProcessing bool
	// QRV is the querier's robustness variable, 0–7 (0: use the default 2).
	QRV uint8
	// QQIC is the querier's query interval code. Keep it below 128 so that
	// gateways reading it literally (VLC) agree; see QueryInterval.
	QQIC    uint8
	Sources []netip.Addr
}

// QueryInterval decodes QQIC (RFC 3376 §4.1.7, RFC 3810 §5.1.9); a zero
// code means the default 125 s.
func (q Query) QueryInterval() time.Duration {
	if q.QQIC == 0 {
		return 125 * time.Second
	}
	return time.Duration(DecodeCode8(q.QQIC)) * time.Second
}

// MaxResponse decodes MaxRespCode: tenths of a second for IGMPv3 (an IPv4
// or invalid Group), milliseconds for MLDv2.
func (q Query) MaxResponse() time.Duration {
	if q.Group.Is6() && !q.Group.Is4In6() {
		return time.Duration(DecodeCode16(q.MaxRespCode)) * time.Millisecond
	}
	return time.Duration(DecodeCode8(uint8(q.MaxRespCode))) * 100 * time.Millisecond
}

// EncodeCode8 encodes v in the 8-bit form of the IGMPv3 Max Resp Code
// (tenths of a second) and of QQIC (seconds) (RFC 3376 §4.1.1, §4.1.7;
// MLDv2's QQIC is the same, RFC 3810 §5.1.9): values below 128 as is,
// larger ones as 1|exp(3)|mant(4) meaning (mant|0x10) << (exp+3). Values
// that the form cannot hold exactly round down; above 31744 it saturates.
func EncodeCode8(v uint32) uint8 {
	if v < 128 {
		return uint8(v)
	}
	exp := uint32(0)
	for v>>(exp+3) > 0x1f {
		exp++
		if exp > 7 {
			return 0xff
		}
	}
	mant := v>>(exp+3) - 0x10
	return uint8(0x80 | exp<<4 | mant)
}

// DecodeCode8 is the inverse of EncodeCode8.
func DecodeCode8(c uint8) uint32 {
	if c < 128 {
		return uint32(c)
	}
	exp, mant := uint32(c>>4&0x7), uint32(c&0x0f)
	return (mant | 0x10) << (exp + 3)
}

// EncodeCode16 encodes v milliseconds as an MLDv2 Maximum Response Code
// (RFC 3810 §5.1.3): below 32768 as is, larger as 1|exp(3)|mant(12) meaning
// (mant|0x1000) << (exp+3). It rounds down and saturates at 8387584.
func EncodeCode16(v uint32) uint16 {
	if v < 32768 {
		return uint16(v)
	}
	exp := uint32(0)
	for v>>(exp+3) > 0x1fff {
		exp++
		if exp > 7 {
			return 0xffff
		}
	}
	mant := v>>(exp+3) - 0x1000
	return uint16(0x8000 | exp<<12 | mant)
}

// DecodeCode16 is the inverse of EncodeCode16.
func DecodeCode16(c uint16) uint32 {
	if c < 32768 {
		return uint32(c)
	}
	exp, mant := uint32(c>>12&0x7), uint32(c&0x0fff)
	return (mant | 0x1000) << (exp + 3)
}

// ParseIGMPQuery decodes an IGMPv3 Membership Query, the payload of an IPv4
// packet, verifying its checksum (RFC 3376 §4.1). Octets after the source
// list are covered by the checksum and otherwise ignored (§4.1.10). An
// 8-byte IGMPv1/v2 query is refused with ErrShort.
func ParseIGMPQuery(b []byte) (Query, error) {
	if len(b) < igmpQueryMinLen {
		return Query{}, fmt.Errorf("igmp: query of %d bytes: %w", len(b), ErrShort)
	}
	if b[0] != igmpTypeQuery {
		return Query{}, fmt.Errorf("igmp: type %#x, want query %#x: %w", b[0], igmpTypeQuery, ErrType)
	}
	if checksum(b) != 0 {
		return Query{}, fmt.Errorf("igmp: query: %w", ErrChecksum)
	}
	n := int(binary.BigEndian.Uint16(b[10:12]))
	if igmpQueryMinLen+4*n > len(b) {
		return Query{}, fmt.Errorf("igmp: query with %d sources in %d bytes: %w", n, len(b), ErrShort)
	}
	q := Query{
		MaxRespCode:              uint16(b[1]),
		Group:                    netip.AddrFrom4([4]byte(b[4:8])),
		SuppressRouterProcessing: b[8]&suppressFlag != 0,
		QRV:                      b[8] & qrvMask,
		QQIC:                     b[9],
	}
	if n > 0 {
		q.Sources = make([]netip.Addr, n)
		for i := range q.Sources {
			off := igmpQueryMinLen + 4*i
			q.Sources[i] = netip.AddrFrom4([4]byte(b[off : off+4]))
		}
	}
	return q, nil
}

// AppendIGMPQuery appends an IGMPv3 Membership Query with its checksum.
func AppendIGMPQuery(dst []byte, q Query) ([]byte, error) {
	group := q.Group
	if !group.IsValid() {
		group = netip.IPv4Unspecified()
	}
	if group = group.Unmap(); !group.Is4() {
		return dst, fmt.Errorf("igmp: query group %v: %w", q.Group, ErrAddress)
	}
	if q.MaxRespCode > 0xff || q.QRV > qrvMask {
		return dst, fmt.Errorf("igmp: query max resp code %d / QRV %d out of range: %w", q.MaxRespCode, q.QRV, ErrMalformed)
	}
	if len(q.Sources) > 0xffff {
		return dst, fmt.Errorf("igmp: %d sources: %w", len(q.Sources), ErrLength)
	}
	start := len(dst)
	dst = append(dst, igmpTypeQuery, uint8(q.MaxRespCode), 0, 0)
	g := group.As4()
	dst = append(dst, g[:]...)
	flags := q.QRV
	if q.SuppressRouterProcessing {
		flags |= suppressFlag
	}
	dst = append(dst, flags, q.QQIC)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(q.Sources)))
	var err error
	if dst, err = appendAddrs4(dst, q.Sources); err != nil {
		return dst[:start], fmt.Errorf("igmp: query: %w", err)
	}
	binary.BigEndian.PutUint16(dst[start+2:], checksum(dst[start:]))
	return dst, nil
}

// ParseIGMPReport decodes an IGMPv3 Version 3 Membership Report (RFC 3376
// §4.2), verifying its checksum. Reserved fields and auxiliary data are
// ignored, as are bytes after the last record.
func ParseIGMPReport(b []byte) ([]GroupRecord, error) {
	if len(b) < igmpReportMinLen {
		return nil, fmt.Errorf("igmp: report of %d bytes: %w", len(b), ErrShort)
	}
	if b[0] != igmpTypeReportV3 {
		return nil, fmt.Errorf("igmp: type %#x, want report %#x: %w", b[0], igmpTypeReportV3, ErrType)
	}
	if checksum(b) != 0 {
		return nil, fmt.Errorf("igmp: report: %w", ErrChecksum)
	}
	return parseRecords(b[igmpReportMinLen:], int(binary.BigEndian.Uint16(b[6:8])), 4)
}

// AppendIGMPReport appends an IGMPv3 report of recs with its checksum.
// Every group and source must be IPv4.
func AppendIGMPReport(dst []byte, recs []GroupRecord) ([]byte, error) {
	start := len(dst)
	dst = append(dst, igmpTypeReportV3, 0, 0, 0, 0, 0)
	dst, err := appendRecords(dst, recs, 4)
	if err != nil {
		return dst[:start], fmt.Errorf("igmp: report: %w", err)
	}
	binary.BigEndian.PutUint16(dst[start+2:], checksum(dst[start:]))
	return dst, nil
}

// parseRecords decodes n group records of an IGMPv3 (alen 4) or MLDv2
// (alen 16) report. Memory is bounded by len(b): counts are checked against
// the bytes present before anything is allocated.
func parseRecords(b []byte, n, alen int) ([]GroupRecord, error) {
	minRec := 4 + alen
	if n*minRec > len(b) {
		return nil, fmt.Errorf("%d records in %d bytes: %w", n, len(b), ErrShort)
	}
	recs := make([]GroupRecord, n)
	for i := range recs {
		if len(b) < minRec {
			return nil, fmt.Errorf("record %d: %w", i, ErrShort)
		}
		ns := int(binary.BigEndian.Uint16(b[2:4]))
		size := minRec + ns*alen + int(b[1])*4
		if size > len(b) {
			return nil, fmt.Errorf("record %d with %d sources and %d aux words in %d bytes: %w",
				i, ns, b[1], len(b), ErrShort)
		}
		r := GroupRecord{Type: RecordType(b[0]), Group: addrFrom(b[4 : 4+alen])}
		if ns > 0 {
			r.Sources = make([]netip.Addr, ns)
			for j := range r.Sources {
				off := minRec + j*alen
				r.Sources[j] = addrFrom(b[off : off+alen])
			}
		}
		recs[i] = r
		b = b[size:]
	}
	return recs, nil
}

// appendRecords appends the record count and the records, each address of
// length alen (4 or 16).
func appendRecords(dst []byte, recs []GroupRecord, alen int) ([]byte, error) {
	if len(recs) > 0xffff {
		return dst, fmt.Errorf("%d records: %w", len(recs), ErrLength)
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(recs)))
	var err error
	for _, r := range recs {
		if len(r.Sources) > 0xffff {
			return dst, fmt.Errorf("%d sources: %w", len(r.Sources), ErrLength)
		}
		dst = append(dst, byte(r.Type), 0)
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(r.Sources)))
		if alen == 4 {
			if dst, err = appendAddrs4(dst, []netip.Addr{r.Group}); err != nil {
				return dst, err
			}
			if dst, err = appendAddrs4(dst, r.Sources); err != nil {
				return dst, err
			}
			continue
		}
		if dst, err = appendAddrs16(dst, []netip.Addr{r.Group}); err != nil {
			return dst, err
		}
		if dst, err = appendAddrs16(dst, r.Sources); err != nil {
			return dst, err
		}
	}
	return dst, nil
}

func appendAddrs4(dst []byte, addrs []netip.Addr) ([]byte, error) {
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() {
			return dst, fmt.Errorf("address %v is not IPv4: %w", a, ErrAddress)
		}
		v := a.As4()
		dst = append(dst, v[:]...)
	}
	return dst, nil
}

func appendAddrs16(dst []byte, addrs []netip.Addr) ([]byte, error) {
	for _, a := range addrs {
		if !a.Is6() {
			return dst, fmt.Errorf("address %v is not IPv6: %w", a, ErrAddress)
		}
		v := a.As16()
		dst = append(dst, v[:]...)
	}
	return dst, nil
}

func addrFrom(b []byte) netip.Addr {
	if len(b) == 4 {
		return netip.AddrFrom4([4]byte(b))
	}
	return netip.AddrFrom16([16]byte(b))
}
