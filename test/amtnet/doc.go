// Package amtnet tests AMT (RFC 7450) between the real castd relay and the
// real beacon gateway running as processes in separate Linux network
// namespaces, reached from one another only by unicast, with third-party
// software at the ends of the tunnel: ffmpeg as the SSM source, VLC as the
// player on the beacon's LAN, and Wireshark's dissector (tshark) as the
// judge of every message on the wire.
//
// The tests need root and iproute2 (plus tshark, ffmpeg, ffprobe and VLC
// for the tests that drive them); without them they skip, or fail when
// CI=true. They are skipped with -short. BenchmarkBeaconRSS measures the
// beacon's memory with ten channels joined.
package amtnet
