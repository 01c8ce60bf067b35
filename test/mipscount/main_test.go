package main

import (
	"strings"
	"testing"
)

// A log of two translated blocks (3 and 2 instructions) executed 2 and 1
// times, in the shape qemu writes it.
const sampleLog = `----------------
IN: main.loop
0x00400100:  addiu	v0,v0,1
0x00400104:  bne	v0,a0,0x400100
0x00400108:  nop

----------------
IN: main.done
0x00400200:  jr	ra
0x00400204:  nop

Trace 0: 0x7f0000 [00000000/00400100/00000000/00000000] main.loop
Trace 0: 0x7f0000 [00000000/00400100/00000000/00000000] main.loop
Trace 0: 0x7f0040 [00000000/00400200/00000000/00000000] main.done
Trace 0: garbage without brackets
`

func TestCountLog(t *testing.T) {
	n, err := countLog(strings.NewReader(sampleLog))
	if err != nil || n != 3+3+2 {
		t.Fatalf("counted %d, %v; want 8", n, err)
	}
}
