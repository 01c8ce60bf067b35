package castd

import (
	"strconv"
	"unicode/utf8"
)

// Bounds on what a caller's input may add to an answer or a log line.
const (
	maxQuoted = 64  // a caller's value (an op, an argument, an ID) quoted back
	maxReason = 512 // a whole refusal message
)

// quoteClip quotes s for an error message or a log line, cut to at most n
// bytes of it: callers choose what they send, and castd must not echo or
// log a caller's 15 KB whole.
func quoteClip(s string, n int) string {
	if len(s) <= n {
		return strconv.Quote(s)
	}
	return strconv.Quote(cutRunes(s, n)) + "…(" + strconv.Itoa(len(s)) + " bytes)"
}

// clipText cuts s to at most n bytes on a rune boundary, marking the cut.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return cutRunes(s, n) + "…"
}

func cutRunes(s string, n int) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
