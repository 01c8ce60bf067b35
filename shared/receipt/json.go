package receipt

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// rawJSONBytes keeps an object's bytes exactly as received (the signature
// covers them), refusing anything but an object.
type rawJSONBytes []byte

func (r *rawJSONBytes) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] != '{' {
		return fmt.Errorf("%w: receipt is not a JSON object", ErrMalformed)
	}
	*r = append((*r)[:0], b...)
	return nil
}

// marshal encodes v without HTML escaping (nothing here needs it, and the
// bytes are signed as they are).
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("receipt: encode: %w", err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
