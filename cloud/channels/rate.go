package channels

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrBadRate is wrapped by ParseRate's errors.
var ErrBadRate = errors.New("bad rate")

// MaxRate bounds a rate: 1 TB/s (8 Tbit/s) is past any uplink.
const MaxRate = 1e12

// rateUnits are the units ParseRate knows, in bytes a second per unit;
// SI multiples, as network rates are (1 Mbit = 10^6 bits). Exact spellings
// only: "MB" (bytes) and "Mb" (bits) differ by 8, so no guessing.
var rateUnits = map[string]float64{
	"": 1, "B": 1, "B/s": 1,
	"kB": 1e3, "kB/s": 1e3, "MB": 1e6, "MB/s": 1e6, "GB": 1e9, "GB/s": 1e9,
	"bit": 1.0 / 8, "bit/s": 1.0 / 8, "bps": 1.0 / 8,
	"kbit": 1e3 / 8, "kbit/s": 1e3 / 8, "kbps": 1e3 / 8,
	"Mbit": 1e6 / 8, "Mbit/s": 1e6 / 8, "Mbps": 1e6 / 8,
	"Gbit": 1e9 / 8, "Gbit/s": 1e9 / 8, "Gbps": 1e9 / 8,
}

// ParseRate reads a rate flag (--multicast-rate, --multicast-rate-total)
// into bytes a second: a decimal number and an optional unit, spelled
// exactly: none, "B" or "B/s" for bytes; "kB", "MB", "GB" (SI bytes);
// "bit", "kbit", "Mbit", "Gbit" (SI bits), each also with "/s", and
// "bps", "kbps", "Mbps", "Gbps". "0" means no cap.
func ParseRate(s string) (float64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("%w: empty", ErrBadRate)
	}
	if len(t) > 64 {
		return 0, fmt.Errorf("%w: %d bytes long", ErrBadRate, len(t))
	}
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	if num == "" {
		return 0, fmt.Errorf("%w %q: no number", ErrBadRate, s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("%w %q: %w", ErrBadRate, s, err)
	}
	mul, ok := rateUnits[unit]
	if !ok {
		return 0, fmt.Errorf("%w %q: unknown unit %q (B, kB, MB, GB, bit, kbit, Mbit, Gbit, optionally with /s; bps, kbps, Mbps, Gbps)", ErrBadRate, s, unit)
	}
	r := v * mul
	if math.IsNaN(r) || math.IsInf(r, 0) || r > MaxRate {
		return 0, fmt.Errorf("%w %q: more than %g bytes/s", ErrBadRate, s, float64(MaxRate))
	}
	return r, nil
}
