package receipt

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Limits of an audit: indices asked for in one request (each answer, with
// its proof, is up to ~2.3 KB, and the reply must fit one control message),
// and receipts acknowledged in one ack.
const (
	MaxAuditItems = 16
	MaxAckSeqs    = 256
	MaxReplyBytes = 48 << 10
)

// Item is one record in an audit reply, with its inclusion proof.
type Item struct {
	I      uint64    `json:"i"`
	Record Record    `json:"r"`
	Proof  []HexHash `json:"proof"`
}

// Records is the beacon's reply to an audit: the records castd asked for
// from the receipt with sequence Seq, or why it cannot give them.
type Records struct {
	Seq   uint64  `json:"seq"`
	Root  HexHash `json:"root"`
	N     uint64  `json:"n"` // leaves under Root
	Items []Item  `json:"items,omitempty"`
	Error string  `json:"error,omitempty"` // e.g. the records are past the beacon's retention
}

// DecodeRecords parses an audit reply and checks its shape (not its proofs:
// Verify does, against the root castd stored).
func DecodeRecords(b []byte) (*Records, error) {
	if len(b) > MaxReplyBytes {
		return nil, fmt.Errorf("%w: records reply of %d bytes, limit %d", ErrMalformed, len(b), MaxReplyBytes)
	}
	var rs Records
	if err := jsonStrict(b, &rs); err != nil {
		return nil, err
	}
	if rs.Seq == 0 || rs.Seq > maxCount || rs.N > maxCount {
		return nil, fmt.Errorf("%w: records reply seq %d, n %d", ErrMalformed, rs.Seq, rs.N)
	}
	if len(rs.Items) > MaxAuditItems {
		return nil, fmt.Errorf("%w: %d records, limit %d", ErrMalformed, len(rs.Items), MaxAuditItems)
	}
	if len(rs.Error) > 512 {
		return nil, fmt.Errorf("%w: error of %d bytes", ErrMalformed, len(rs.Error))
	}
	for _, it := range rs.Items {
		if it.I >= rs.N || len(it.Proof) > MaxProofLen {
			return nil, fmt.Errorf("%w: record %d of %d with %d proof hashes", ErrMalformed, it.I, rs.N, len(it.Proof))
		}
		if err := it.Record.Validate(); err != nil {
			return nil, err
		}
	}
	return &rs, nil
}

// Verify checks every item's proof against root, a tree of n leaves (what
// the signed receipt said), and that the reply is about that tree.
func (rs *Records) Verify(root Hash, n uint64) error {
	if rs.Root != HexHash(root) || rs.N != n {
		return fmt.Errorf("%w: reply is about root %s of %d, receipt has %s of %d", ErrBadProof, rs.Root, rs.N, HexHash(root), n)
	}
	for _, it := range rs.Items {
		proof := make([]Hash, len(it.Proof))
		for i, p := range it.Proof {
			proof[i] = Hash(p)
		}
		if err := VerifyInclusion(it.Record.LeafHash(), it.I, n, proof, root); err != nil {
			return fmt.Errorf("record %d: %w", it.I, err)
		}
	}
	return nil
}

// FormatAck is the argument of a receipt-ack command: sequence numbers,
// comma separated.
func FormatAck(seqs []uint64) string {
	var b strings.Builder
	for i, s := range seqs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(s, 10))
	}
	return b.String()
}

// ParseAck reads a receipt-ack argument: 1 to MaxAckSeqs sequence numbers.
func ParseAck(arg string) ([]uint64, error) {
	if arg == "" {
		return nil, fmt.Errorf("%w: empty ack", ErrMalformed)
	}
	parts := strings.Split(arg, ",")
	if len(parts) > MaxAckSeqs {
		return nil, fmt.Errorf("%w: ack of %d receipts, limit %d", ErrMalformed, len(parts), MaxAckSeqs)
	}
	out := make([]uint64, 0, len(parts))
	for _, p := range parts {
		s, err := parseCount(p)
		if err != nil || s == 0 {
			return nil, fmt.Errorf("%w: ack seq %.24q", ErrMalformed, p)
		}
		out = append(out, s)
	}
	return out, nil
}

// FormatAudit is the argument of a receipt-records command: the receipt's
// sequence number, a colon, and record indices, comma separated.
func FormatAudit(seq uint64, idx []uint64) string {
	return strconv.FormatUint(seq, 10) + ":" + FormatAck(idx)
}

// ParseAudit reads a receipt-records argument: a sequence number and 1 to
// MaxAuditItems distinct record indices.
func ParseAudit(arg string) (seq uint64, idx []uint64, err error) {
	s, list, ok := strings.Cut(arg, ":")
	if !ok {
		return 0, nil, fmt.Errorf("%w: audit %.40q is not SEQ:I,I,...", ErrMalformed, arg)
	}
	if seq, err = parseCount(s); err != nil || seq == 0 {
		return 0, nil, fmt.Errorf("%w: audit seq %.24q", ErrMalformed, s)
	}
	parts := strings.Split(list, ",")
	if len(parts) > MaxAuditItems {
		return 0, nil, fmt.Errorf("%w: audit of %d records, limit %d", ErrMalformed, len(parts), MaxAuditItems)
	}
	for _, p := range parts {
		i, err := parseCount(p)
		if err != nil {
			return 0, nil, fmt.Errorf("%w: audit index %.24q", ErrMalformed, p)
		}
		if slices.Contains(idx, i) {
			return 0, nil, fmt.Errorf("%w: audit index %d twice", ErrMalformed, i)
		}
		idx = append(idx, i)
	}
	return seq, idx, nil
}

// parseCount reads a decimal counter: digits only (no sign, no spaces), no
// leading zero, at most 2^53.
func parseCount(s string) (uint64, error) {
	if s == "" || len(s) > 16 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("bad number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("bad number")
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > maxCount {
		return 0, fmt.Errorf("bad number")
	}
	return v, nil
}
