package receipt

import (
	"cmp"
	"slices"
)

// Overflow counts requests over the beacon's per-interval record bound:
// counted in the receipt's totals (under Other), not recorded one by one.
type Overflow struct {
	Requests uint64    `json:"requests"`
	ByPath   PathBytes `json:"by_path"`
}

// Summarize builds the unsigned receipt of node's interval [start, end)
// from its records (in the order they are leaves) and overflow.
func Summarize(node string, seq uint64, start, end int64, recs []Record, over Overflow) Receipt {
	r := Receipt{V: Version, Node: node, Seq: seq, Start: start, End: end, Records: uint64(len(recs))}
	leaves := make([]Hash, len(recs))
	objs := make(map[HexHash]*Object)
	for i, rec := range recs {
		leaves[i] = rec.LeafHash()
		r.ByPath.Add(rec.Path, rec.Bytes)
		o := objs[rec.Key]
		if o == nil {
			o = &Object{Key: rec.Key}
			objs[rec.Key] = o
		}
		o.Requests++
		o.Bytes += rec.Bytes
	}
	r.Root = HexHash(Root(leaves))
	r.ByPath.Hit += over.ByPath.Hit
	r.ByPath.Fill += over.ByPath.Fill
	r.ByPath.Multicast += over.ByPath.Multicast
	r.Requests = uint64(len(recs)) + over.Requests
	r.Bytes = r.ByPath.Sum()
	r.Objects = uint64(len(objs))
	all := make([]Object, 0, len(objs))
	for _, o := range objs {
		all = append(all, *o)
	}
	// Most bytes first, then most requests, then by key: deterministic.
	slices.SortFunc(all, func(a, b Object) int {
		if c := cmp.Compare(b.Bytes, a.Bytes); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Requests, a.Requests); c != 0 {
			return c
		}
		return slices.Compare(a.Key[:], b.Key[:])
	})
	if len(all) > MaxObjects {
		for _, o := range all[MaxObjects:] {
			r.Other.Requests += o.Requests
			r.Other.Bytes += o.Bytes
		}
		all = all[:MaxObjects]
	}
	r.Top = all
	r.Other.Requests += over.Requests
	r.Other.Bytes += over.ByPath.Sum()
	return r
}
