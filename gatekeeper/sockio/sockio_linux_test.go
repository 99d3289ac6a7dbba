package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"
)

// TestWrapped: TCP connections, accepted or dialled, are wrapped.
func TestWrapped(t *testing.T) {
	a, b := pair(t)
	if _, ok := a.(*tcpConn); !ok {
		t.Errorf("accepted %T, want *tcpConn", a)
	}
	if c, ok := Conn(b).(*tcpConn); !ok || c.TCPConn != b {
		t.Errorf("dialled %T, want a *tcpConn around it", Conn(b))
	}
}

// TestBlockingFile: File().Fd() makes the socket blocking (for both
// descriptors); a raw read that then blocked would hold its processor and
// stop the process at the next garbage collection. Reads and writes still
// wait in the poller: the deadline holds, and a collection completes.
func TestBlockingFile(t *testing.T) {
	a, _ := pair(t)
	f, err := a.(*tcpConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_ = f.Fd() // sets the shared file description to blocking
	go runtime.GC()
	a.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := a.Read(make([]byte, 16)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on a silent blocking socket: %v; want a timeout", err)
	}
	runtime.GC()
}

// TestNoAllocation: reading and writing allocate nothing.
func TestNoAllocation(t *testing.T) {
	a, b := pair(t)
	go io.Copy(b, b) // echo
	p := make([]byte, 1024)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := a.Write(p); err != nil {
			t.Fatal(err)
		}
		for n := 0; n < len(p); {
			m, err := a.(*tcpConn).Read(p[n:]) // the echo below
			if err != nil {
				t.Fatal(err)
			}
			n += m
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per write and read, want 0", allocs)
	}
}

var _ net.Conn = (*tcpConn)(nil)
