package amt

import (
	"fmt"
)

// AppendData appends a Multicast Data message carrying inner, a whole IP
// datagram, to dst. It does not look at inner: it is the relay's per-packet
// replication path and must not allocate when dst has room. Use
// MulticastData.AppendTo to check inner first.
func AppendData(dst, inner []byte) []byte {
	return append(append(dst, byte(TypeMulticastData), 0), inner...)
}

// ParseDataHeader returns the IP datagram inside a Multicast Data message,
// with the default (lenient) options. It does not allocate on success.
func ParseDataHeader(b []byte) (inner []byte, err error) {
	return Options{}.ParseDataHeader(b)
}

// ParseDataHeader returns the IP datagram inside a Multicast Data message,
// after checking the AMT header and that the datagram's IP length field
// matches the bytes present. It returns ErrType for any other AMT message,
// so a gateway can try it first; TypeOf dispatches without an error value.
func (o Options) ParseDataHeader(b []byte) (inner []byte, err error) {
	if len(b) < DataHeaderLen {
		return nil, fmt.Errorf("amt: multicast data of %d bytes: %w", len(b), ErrShort)
	}
	if b[0] != byte(TypeMulticastData) {
		if _, err := TypeOf(b); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("amt: %v is not multicast data: %w", Type(b[0]&0x0f), ErrType)
	}
	if o.Strict && b[1] != 0 {
		return nil, fmt.Errorf("amt: %v: %w", TypeMulticastData, ErrReserved)
	}
	inner = b[DataHeaderLen:]
	if err := ipPacketLen(inner); err != nil {
		return nil, fmt.Errorf("amt: %v: %w", TypeMulticastData, err)
	}
	return inner, nil
}
