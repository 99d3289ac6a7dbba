//go:build linux && race

package sockio

import (
	"runtime"
	"unsafe"
)

// The race detector does not see what the kernel reads and writes in a raw system call;
// package syscall tells it for its own reads and writes, and so do these.

func raceWrite(p []byte) {
	if len(p) > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&p[0]), len(p))
	}
}

func raceRead(p []byte) {
	if len(p) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(&p[0]), len(p))
	}
}
