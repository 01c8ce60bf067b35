package amtrelay

import (
	"net"
	"syscall"
)

// setDontFragment makes the kernel set DF on everything the socket sends
// and refuse (EMSGSIZE) what exceeds the path MTU: an AMT relay never
// fragments (RFC 7450).
func setDontFragment(uc *net.UDPConn, is6 bool) error {
	rc, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if is6 {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_MTU_DISCOVER, syscall.IP_PMTUDISC_DO)
			return
		}
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_MTU_DISCOVER, syscall.IP_PMTUDISC_DO)
	})
	if err != nil {
		return err
	}
	return serr
}
