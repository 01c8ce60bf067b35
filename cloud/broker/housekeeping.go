package broker

import (
	"reflect"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// slowHousekeeping makes mochi's once-a-second housekeeping (session,
// in-flight and retained-message expiry) run every d instead. Each pass
// copies a map of every client or every retained message, which at 10,000
// nodes is most of the idle broker's CPU; expiry a few seconds late costs
// nothing here. mochi has no option for it, so the tickers are reached by
// reflection; it reports false (and changes nothing) if mochi's internals
// are not as expected, which TestSlowHousekeeping catches on an upgrade.
func slowHousekeeping(srv *mqtt.Server, d time.Duration) bool {
	loop := reflect.ValueOf(srv).Elem().FieldByName("loop")
	if !loop.IsValid() || loop.Kind() != reflect.Pointer || loop.IsNil() {
		return false
	}
	l := loop.Elem()
	tickerType := reflect.TypeOf((*time.Ticker)(nil))
	var tickers []*time.Ticker
	for _, name := range []string{"clientExpiry", "inflightExpiry", "retainedExpiry"} {
		f := l.FieldByName(name)
		if !f.IsValid() || f.Type() != tickerType {
			return false
		}
		t := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Interface().(*time.Ticker)
		if t == nil {
			return false
		}
		tickers = append(tickers, t)
	}
	for _, t := range tickers {
		t.Reset(d)
	}
	return true
}
