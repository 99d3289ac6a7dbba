// Copyright 2026 The gatekeeper authors. Tests of GATEKEEPER PATCH 9
// (kexLoop runs only while a key exchange is wanted) and 19 (no read
// loop goroutine).

package ssh

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// kexLoopRunning reports whether t has a kexLoop goroutine.
func kexLoopRunning(t *handshakeTransport) bool {
	t.loopMu.Lock()
	defer t.loopMu.Unlock()
	return t.loopRunning
}

// TestKexLoopOnDemand: between key exchanges neither side runs a kexLoop
// goroutine; a key exchange asked for by either side starts them,
// completes, with packets flowing before and after it, and they end
// again; Close then returns.
func TestKexLoopOnDemand(t *testing.T) {
	kexes := make(chan struct{}, 10)
	conf := &ClientConfig{HostKeyCallback: func(string, net.Addr, PublicKey) error {
		kexes <- struct{}{} // the client checks the host key in every key exchange
		return nil
	}}
	trC, trS, err := handshakePair(conf, "addr", false)
	if err != nil {
		t.Fatal(err)
	}
	<-kexes
	// Each side reads all the time, as the mux's loop does: a reader takes
	// part in the key exchanges the peer starts (GATEKEEPER PATCH 19: no
	// read loop goroutine reads for it).
	go func() {
		for {
			if _, err := trC.readPacket(); err != nil {
				return
			}
		}
	}()
	serverGot := make(chan []byte, 10)
	go func() {
		defer close(serverGot)
		for {
			p, err := trS.readPacket()
			if err != nil {
				return
			}
			serverGot <- p
		}
	}()
	idle := func(when string) {
		t.Helper()
		for start := time.Now(); kexLoopRunning(trC) || kexLoopRunning(trS); runtime.Gosched() {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("%s: kexLoop still runs (client %v, server %v)", when, kexLoopRunning(trC), kexLoopRunning(trS))
			}
		}
	}
	idle("after the first key exchange")

	for round, asker := range []*handshakeTransport{trC, trS, trC} {
		asker.requestKeyExchange()
		for i := range 3 {
			p := []byte{msgRequestSuccess, byte(round), byte(i)}
			if err := trC.writePacket(p); err != nil {
				t.Fatal(err)
			}
			var got []byte
			select {
			case got = <-serverGot:
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: packet %d not read", round, i)
			}
			if string(got) != string(p) {
				t.Fatalf("round %d: read %x, want %x", round, got, p)
			}
		}
		select {
		case <-kexes:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: no key exchange", round)
		}
		idle("after a key exchange")
	}

	closed := make(chan error, 2)
	go func() { closed <- trC.Close() }()
	go func() { closed <- trS.Close() }()
	for range 2 {
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not return")
		}
	}
}

// connGoroutines counts the goroutines of conns: their mux loops, and
// anything running their handshake transports' code (upstream's read
// loop, kexLoop). Goroutines are told apart by the receiver in their
// stacks: other tests may leave connections behind.
func connGoroutines(conns ...*connection) int {
	var marks []*regexp.Regexp
	for _, c := range conns {
		marks = append(marks,
			regexp.MustCompile(regexp.QuoteMeta(fmt.Sprintf("ssh.(*mux).loop(%p", c.mux))),
			regexp.MustCompile(`ssh\.\(\*handshakeTransport\)\.\w+\(`+fmt.Sprintf("%p", c.transport)))
	}
	buf := make([]byte, 1<<20)
	n := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		for _, m := range marks {
			if m.MatchString(g) {
				n++
				break
			}
		}
	}
	return n
}

// TestNoReadLoop: an idle connection has one goroutine, its mux's loop,
// which reads its packets (GATEKEEPER PATCH 19; upstream had a read loop
// beside it); after key exchanges started by either side, with data
// flowing, it is still one.
func TestNoReadLoop(t *testing.T) {
	c1, c2, err := netPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	defer c2.Close()
	serverConf := &ServerConfig{NoClientAuth: true}
	serverConf.AddHostKey(testSigners["ed25519"])
	type server struct {
		conn  *ServerConn
		chans <-chan NewChannel
		err   error
	}
	done := make(chan server, 1)
	go func() {
		conn, chans, reqs, err := NewServerConn(c1, serverConf)
		if err == nil {
			go DiscardRequests(reqs)
		}
		done <- server{conn, chans, err}
	}()
	conn, chans, reqs, err := NewClientConn(c2, "", &ClientConfig{HostKeyCallback: InsecureIgnoreHostKey()})
	if err != nil {
		t.Fatal(err)
	}
	client := NewClient(conn, chans, reqs)
	defer client.Close()
	s := <-done
	if s.err != nil {
		t.Fatal(s.err)
	}
	defer s.conn.Close()
	clientConn, serverConn := conn.(*connection), s.conn.Conn.(*connection)
	wantIdle := func(when string) {
		t.Helper()
		const want = 2 // a mux loop per side
		for start := time.Now(); connGoroutines(clientConn, serverConn) != want; time.Sleep(time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				buf := make([]byte, 1<<20)
				t.Fatalf("%s: %d goroutines of the connections, want %d\n%s", when, connGoroutines(clientConn, serverConn), want, buf[:runtime.Stack(buf, true)])
			}
		}
	}
	wantIdle("after the handshake")

	echoed := make(chan error, 1)
	go func() {
		nc := <-s.chans
		ch, reqs, err := nc.Accept()
		if err != nil {
			echoed <- err
			return
		}
		go DiscardRequests(reqs)
		_, err = io.Copy(ch, ch)
		ch.Close()
		echoed <- err
	}()
	ch, creqs, err := client.OpenChannel("echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	go DiscardRequests(creqs)
	for round, asker := range []*handshakeTransport{
		clientConn.transport.(*handshakeTransport),
		serverConn.transport.(*handshakeTransport),
	} {
		asker.requestKeyExchange()
		msg := bytes.Repeat([]byte{byte(round)}, 100000)
		if _, err := ch.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(ch, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("round %d: echo %v", round, err)
		}
	}
	ch.CloseWrite()
	if _, err := io.ReadAll(ch); err != nil {
		t.Fatal(err)
	}
	if err := <-echoed; err != nil {
		t.Fatal(err)
	}
	ch.Close()
	wantIdle("after two key exchanges and an echo")
}
