package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sync"

	"github.com/blockcast/beacon/test/harness"
)

// object is one URL of the origin whose bytes the checker knows.
type object struct {
	Path string
	Size int64
	// Body is kept for hot objects only, to cut expected Range answers.
	Body []byte
	hash string
}

// SHA256 is the hex digest of the whole body, computed once.
func (o *object) SHA256() string {
	if o.hash == "" {
		o.hash = harness.ContentSHA256(o.Path, o.Size)
	}
	return o.hash
}

// catalog is the soak's key space: a hot set fetched again and again
// (hits, ranges, conditional requests, purges) and a larger cold set
// (misses until cached, evicted and fetched again later).
type catalog struct {
	Hot     []*object
	coldMu  sync.Mutex
	cold    map[int]*object
	ColdN   int
	coldSzs []string
}

var (
	hotSizes  = []string{"1k", "4k", "16k", "64k", "256k", "1M", "1k", "16k", "256k", "1M", "4M", "4k", "64k", "1M", "2M", "4M"}
	coldSizes = []string{"1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k"}
)

func newCatalog(coldKeys int) (*catalog, error) {
	c := &catalog{cold: map[int]*object{}, ColdN: coldKeys, coldSzs: coldSizes}
	for i, s := range hotSizes {
		size, err := harness.ParseSize(s)
		if err != nil {
			return nil, err
		}
		// Some hot objects go stale every second and are revalidated
		// by ETag between the beacon, castd and the origin.
		kind := "obj"
		if i%5 == 4 {
			kind = "short"
		}
		o := &object{Path: fmt.Sprintf("/%s/%s/hot-%02d.bin", kind, s, i), Size: size}
		var buf bytes.Buffer
		if _, err := io.Copy(&buf, harness.Content(o.Path, size)); err != nil {
			return nil, err
		}
		o.Body = buf.Bytes()
		sum := sha256.Sum256(o.Body)
		o.hash = hex.EncodeToString(sum[:])
		c.Hot = append(c.Hot, o)
	}
	return c, nil
}

// Cold returns cold key n (0 <= n < ColdN).
func (c *catalog) Cold(n int) *object {
	c.coldMu.Lock()
	defer c.coldMu.Unlock()
	if o, ok := c.cold[n]; ok {
		return o
	}
	s := c.coldSzs[n%len(c.coldSzs)]
	size, _ := harness.ParseSize(s)
	o := &object{Path: fmt.Sprintf("/obj/%s/cold-%05d.bin", s, n), Size: size}
	o.SHA256()
	c.cold[n] = o
	return o
}

// rangeSHA256 is the digest of bytes [first, last] of a hot object.
func rangeSHA256(o *object, first, last int64) string {
	sum := sha256.Sum256(o.Body[first : last+1])
	return hex.EncodeToString(sum[:])
}
