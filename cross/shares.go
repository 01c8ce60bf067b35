package cross

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
)

// Share is what one package (or one linker-made group such as type:* or
// go:func.*) costs in a binary's file.
type Share struct {
	Package string
	Bytes   int64
}

// ErrNoSymbols is returned for a binary built with -s: shares need the
// symbol table (build without -s to measure, ship with it).
var ErrNoSymbols = errors.New("cross: binary has no symbol table (built with -s?)")

// Shares sums the sizes of an unstripped ELF binary's symbols by package,
// largest first, as `go tool nm -size` would but counting only symbols in
// sections that occupy the file (what flash pays for): .bss and .noptrbss
// are left out (crypto/internal/fips140/drbg.memory alone is 32 MiB of
// bss). The bytes of those sections that no symbol covers are shares named
// "[section]". total is the sum over all shares: the stripped file's size
// less its headers, notes and page padding.
func Shares(r io.ReaderAt) (shares []Share, total int64, err error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, 0, fmt.Errorf("cross: %w", err)
	}
	syms, err := f.Symbols()
	if err != nil {
		if errors.Is(err, elf.ErrNoSymbols) {
			return nil, 0, ErrNoSymbols
		}
		return nil, 0, fmt.Errorf("cross: %w", err)
	}
	sum := map[string]int64{}
	covered := map[elf.SectionIndex]int64{}
	for _, s := range syms {
		if s.Size == 0 || s.Section == elf.SHN_UNDEF || int(s.Section) >= len(f.Sections) {
			continue
		}
		sec := f.Sections[s.Section]
		if sec.Type != elf.SHT_PROGBITS || sec.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		sum[SymbolPackage(s.Name)] += int64(s.Size)
		covered[s.Section] += int64(s.Size)
	}
	// What no symbol covers: chiefly .gopclntab (function names, PC-value
	// tables; it grows with every function and every inlined call), and
	// alignment. Listed by section so the table adds up to the file.
	for i, sec := range f.Sections {
		if sec.Type != elf.SHT_PROGBITS || sec.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		if gap := int64(sec.Size) - covered[elf.SectionIndex(i)]; gap > 0 {
			sum["["+sec.Name+"]"] += gap
		}
	}
	for p, n := range sum {
		shares = append(shares, Share{p, n})
		total += n
	}
	sort.Slice(shares, func(i, j int) bool {
		if shares[i].Bytes != shares[j].Bytes {
			return shares[i].Bytes > shares[j].Bytes
		}
		return shares[i].Package < shares[j].Package
	})
	return shares, total, nil
}

// SymbolPackage returns the import path of the package a Go symbol belongs
// to: "net/http" for "net/http.(*Transport).dialConn", "sync/atomic" for
// "sync/atomic.(*Pointer[net/http.x]).Load". Linker-made symbols keep their
// group: "type:*", "go:func.*", "go:string.*" (trailing names dropped).
func SymbolPackage(name string) string {
	if strings.HasPrefix(name, "type:") {
		return "type:*"
	}
	if strings.HasPrefix(name, "go:") {
		if i := strings.IndexByte(name, '.'); i >= 0 {
			name = name[:i]
		}
		return name + ".*"
	}
	head := name
	if i := strings.IndexByte(head, '['); i >= 0 {
		head = head[:i] // type arguments carry other packages' paths
	}
	slash := strings.LastIndexByte(head, '/')
	dot := strings.IndexByte(head[slash+1:], '.')
	if dot < 0 {
		return unescapePath(head)
	}
	return unescapePath(head[:slash+1+dot])
}

// unescapePath undoes the linker's %-escaping of dots in the last element
// (github.com/eclipse/paho%2emqtt%2egolang).
func unescapePath(p string) string {
	if !strings.Contains(p, "%") {
		return p
	}
	if u, err := url.PathUnescape(p); err == nil {
		return u
	}
	return p
}

// Group sums shares by the longest prefix in prefixes that matches each
// package (a prefix matches the path itself and everything under it);
// packages no prefix matches keep their own line.
func Group(shares []Share, prefixes []string) []Share {
	sum := map[string]int64{}
	for _, s := range shares {
		key := s.Package
		best := ""
		for _, p := range prefixes {
			if (s.Package == p || strings.HasPrefix(s.Package, p+"/")) && len(p) > len(best) {
				best = p
			}
		}
		if best != "" {
			key = best + "/..."
		}
		sum[key] += s.Bytes
	}
	out := make([]Share, 0, len(sum))
	for p, n := range sum {
		out = append(out, Share{p, n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Bytes != out[j].Bytes {
			return out[i].Bytes > out[j].Bytes
		}
		return out[i].Package < out[j].Package
	})
	return out
}

// WriteShares prints the top n shares (all when n <= 0) with their percent
// of total; when before is not nil, each line also shows the package's
// bytes in before and the change.
func WriteShares(w io.Writer, shares []Share, total int64, before []Share, n int) error {
	prev := map[string]int64{}
	for _, s := range before {
		prev[s.Package] = s.Bytes
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if before != nil {
		fmt.Fprintln(tw, "bytes\tshare\tbefore\tchange\t package")
	} else {
		fmt.Fprintln(tw, "bytes\tshare\t package")
	}
	shown := map[string]bool{}
	line := func(s Share) {
		pct := 100 * float64(s.Bytes) / float64(max(total, 1))
		if before != nil {
			fmt.Fprintf(tw, "%d\t%.1f%%\t%d\t%+d\t %s\n", s.Bytes, pct, prev[s.Package], s.Bytes-prev[s.Package], s.Package)
		} else {
			fmt.Fprintf(tw, "%d\t%.1f%%\t %s\n", s.Bytes, pct, s.Package)
		}
	}
	for i, s := range shares {
		if n > 0 && i >= n {
			break
		}
		shown[s.Package] = true
		line(s)
	}
	// Packages that were among the largest before and shrank out of the
	// list (or out of the binary) are the point of a before/after table.
	for i, s := range before {
		if n > 0 && i >= n {
			break
		}
		if !shown[s.Package] {
			var now int64
			for _, c := range shares {
				if c.Package == s.Package {
					now = c.Bytes
				}
			}
			line(Share{s.Package, now})
		}
	}
	fmt.Fprintf(tw, "%d\t100%%\t total (loaded sections)\n", total)
	return tw.Flush()
}
