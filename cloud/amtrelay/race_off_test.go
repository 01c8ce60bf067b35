//go:build !race

package amtrelay

const raceEnabled = false
