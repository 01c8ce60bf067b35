//go:build !linux

package amtrelay

import "net"

// setDontFragment is a no-op where the relay has no portable way to set DF.
func setDontFragment(uc *net.UDPConn, is6 bool) error { return nil }
