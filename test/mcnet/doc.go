// Package mcnet tests issue 12's multicast object transport end to end on
// real castd and beacon processes in network namespaces: a bridged segment
// that carries native SSM from castd to many beacons, beacons reachable only
// by unicast that join through castd's AMT relay, loss injected in-process
// (shared/lossconn), and attacks from a third host on the segment.
//
// The tests need root; they skip without it (and with -short) except under
// CI=true, where they fail instead.
package mcnet
