// Command wirebench runs one receive-path operation of the multicast
// object transport n times, for counting instructions under qemu user
// emulation (qemu-mipsel-static -singlestep -d exec,nochain counts one log
// line per guest instruction): run it with -n 0 and -n N and divide the
// difference by N. Setup (building the test object and its manifest) is
// the same in both runs, so it cancels out.
//
//	GOOS=linux GOARCH=mipsle GOMIPS=softfloat CGO_ENABLED=0 go build -o wb.mipsle ./test/wirebench
//	qemu-mipsel-static -singlestep -d exec,nochain ./wb.mipsle -op check -n 10 2>&1 | grep -c Trace
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"time"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/fec"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/manifest"
)

func main() {
	op := flag.String("op", "check", "check (SHA-256 of one symbol + compare), hashpart (verify one hash-part packet), decode1 or decode20 (RS (200,20) block decode with 1 or 20 source symbols lost), encode20 (make 20 parity symbols of a 200-symbol block), newenc (build a Cauchy (200,20) encoder), parse (decode one ALC data packet)")
	n := flag.Int("n", 1, "repetitions")
	flag.Parse()

	const e = alc.MaxSymbolSize
	k := 200
	if *op == "check" || *op == "parse" {
		k = 2 // the cost is per symbol: keep the setup small
	}
	obj := make([]byte, k*e)
	for i := range obj {
		obj[i] = byte(i * 31 >> 3)
	}
	codec := fec.NewCodec()
	p, _ := fec.Partition(uint64(len(obj)), e, k)
	src, _ := p.Source(obj, 0)
	var all [][]byte
	var m *manifest.Manifest
	var lists []*manifest.HashList
	switch *op {
	case "check", "hashpart":
		key, err := identity.FromSeed(bytes.Repeat([]byte{1}, identity.SeedSize))
		if err != nil {
			log.Fatal(err)
		}
		ch, _ := manifest.ChannelOf("192.0.2.1", "232.1.1.1", 5000)
		now := time.Unix(1_800_000_000, 0)
		size := int64(len(obj))
		if *op == "hashpart" {
			size = 1 << 20 // a 1 MB object: 4 blocks, 16 chunks, 4-node paths
		}
		m, lists, err = manifest.Build(bytes.NewReader(make([]byte, size)), size, manifest.Params{
			URL: "/o", Issued: now, Expires: now.Add(time.Hour), TSI: 1, TOI: 1, Channel: ch, MaxBlockLen: k, MaxParity: 1,
		}, key, codec)
		if err != nil {
			log.Fatal(err)
		}
		if *op == "check" {
			lists[0].Check(1, make([]byte, e)) // warm up
		}
	case "decode1", "decode20", "encode20":
		parity, err := codec.Parity(src, k, k+20)
		if err != nil {
			log.Fatal(err)
		}
		all = append(append([][]byte{}, src...), parity...)
		if _, err := codec.NewDecoder(k, 20, e); err != nil { // warm the cache
			log.Fatal(err)
		}
	}
	pkt := alc.Packet{TSI: 1, TOI: 1, SBN: 0, SBL: uint16(k), ESI: 1, Payload: src[1]}
	wire, _ := pkt.AppendTo(nil)
	zero := make([]byte, e)

	ok := true
	for range *n {
		switch *op {
		case "check":
			ok = ok && lists[0].Check(1, zero)
		case "hashpart":
			ok = ok && lists[1].Parts()[1].Verify(m) == nil
		case "parse":
			var q alc.Packet
			ok = ok && q.Decode(wire) == nil
		case "encode20":
			_, err := codec.Parity(src, k, k+20)
			ok = ok && err == nil
		case "newenc":
			_, err := fec.NewEncoder(k, 20)
			ok = ok && err == nil
		case "decode1", "decode20":
			lost := 1
			if *op == "decode20" {
				lost = 20
			}
			d, _ := codec.NewDecoder(k, 20, e)
			for esi := lost; esi < k+lost; esi++ {
				d.Add(esi, all[esi])
			}
			_, err := d.Decode()
			ok = ok && err == nil
		default:
			log.Fatalf("unknown -op %q", *op)
		}
	}
	if !ok {
		log.Fatal("operation failed")
	}
	fmt.Println(*op, *n, "ok")
}
