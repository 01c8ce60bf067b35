// Package mcamt tests castd's multicast sender (cloud/mcsend) through the
// real AMT relay (cloud/amtrelay) to the beacon's real AMT gateway
// (firmware/amtgw) on loopback: the one place where both sides meet in one
// process, kept out of cloud/ so that cloud never imports firmware.
package mcamt
