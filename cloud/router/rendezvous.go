package router

import (
	"math"
)

// chooser picks among candidate nodes by weighted rendezvous hashing
// (highest random weight): every node scores each path with
// -weight/ln(h), h uniform in (0,1) from hashing the path with the node, and
// the highest score wins. The winner for a path changes only when the
// winner itself goes or the weights change, so a URL sticks to the node
// that cached it; and a node wins a share of paths proportional to its
// weight (Schindelhauer and Schomaker, "Weighted distributed hash tables").
//
// Most lookups have a single candidate, which is taken without hashing.
type chooser struct {
	nodes     *nodeStore
	path      string
	pathHash  uint64
	best      uint32 // none until a candidate is offered
	bestScore float64
	n         int
}

func (c *chooser) offer(i uint32) {
	if !c.nodes.at(i).eligible.Load() {
		return
	}
	c.n++
	if c.n == 1 {
		c.best = i
		return
	}
	if c.n == 2 {
		c.pathHash = hashString(c.path)
		c.bestScore = c.score(c.best)
	}
	s := c.score(i)
	// Ties (equal hashes) go to the smaller ID, so the choice does not
	// depend on the order nodes registered in.
	if s > c.bestScore || s == c.bestScore && c.nodes.at(i).id < c.nodes.at(c.best).id {
		c.best, c.bestScore = i, s
	}
}

func (c *chooser) score(i uint32) float64 {
	h := mix64(c.pathHash ^ c.nodes.cold(i).seed)
	u := (float64(h>>11) + 0.5) / (1 << 53) // in (0,1), never 0 or 1
	return -float64(math.Float32frombits(c.nodes.at(i).weight.Load())) / math.Log(u)
}

// hashString is FNV-1a finished with a mixer: fixed (not seeded per
// process), so that replicas and restarts make the same choices.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix64(h)
}

// mix64 is the splitmix64 finalizer.
func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}
