// Copyright 2026 The gatekeeper authors. Tests of GATEKEEPER PATCH 9
// (kexLoop runs only while a key exchange is wanted) and 19 (no read
// loop goroutine).

package ssh

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
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

// readAheadLen is how many packets kexLoop has read ahead for t.
func readAheadLen(t *handshakeTransport) int {
	t.aheadMu.Lock()
	defer t.aheadMu.Unlock()
	return len(t.readAhead)
}

// pendingLen is how many packets t's writers queued during a key exchange.
func pendingLen(t *handshakeTransport) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pendingPackets)
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for start := time.Now(); !cond(); time.Sleep(time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("waiting for %s: timed out", what)
		}
	}
}

// TestReadAheadAgainAfterTaken (found by review): this side starts a key
// exchange; kexLoop reads ahead as many packets as it may; the owner
// takes them, then stops reading while its writer waits for the key
// exchange (pending queue full). The peer's KEXINIT, next on the wire,
// must still be read: kexLoop reads ahead again once the owner took its
// packets, as upstream's read loop did once its queue had room.
func TestReadAheadAgainAfterTaken(t *testing.T) {
	trC, trS, err := handshakePair(&ClientConfig{HostKeyCallback: InsecureIgnoreHostKey()}, "addr", false)
	if err != nil {
		t.Fatal(err)
	}
	defer trC.Close()
	defer trS.Close()
	if p, err := trC.readPacket(); err != nil || p[0] != msgExtInfo {
		t.Fatalf("ext info: %x %v", p, err)
	}
	// The peer writes readAheadMax packets without reading, then its
	// KEXINIT once it reads ours.
	for i := range readAheadMax {
		if err := trS.writePacket([]byte{msgChannelData, 0, 0, 0, 0, byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	trC.requestKeyExchange()
	waitFor(t, "kexLoop to read ahead", func() bool { return readAheadLen(trC) == readAheadMax })
	for i := range readAheadMax {
		p, err := trC.readPacket()
		if err != nil || p[5] != byte(i) {
			t.Fatalf("read %d: %x %v", i, p, err)
		}
	}
	// From now on the owner does not read (a mux loop busy handing a
	// packet over to a caller that waits for the writes below).
	go func() {
		for {
			if _, err := trS.readPacket(); err != nil {
				return
			}
		}
	}()
	wrote := make(chan error, 1)
	go func() {
		for range maxPendingPackets + 5 {
			if err := trC.writePacket([]byte{msgChannelData, 0, 0, 0, 0, 1}); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("writes wait for a key exchange whose KEXINIT nobody reads")
	}
}

// TestReadersBeforeFlush (found by review): both ends start a key exchange
// at once while their owners are busy, so each kexLoop reads the peer's
// KEXINIT itself, and each side's writer queues a full pending queue of
// 32 KiB packets meanwhile. After the exchange, readers must get in before
// kexLoop pushes those packets: the peer pushes its own at the same time
// and reads only after, and 2 MiB each way does not fit in 128 KiB socket
// buffers.
func TestReadersBeforeFlush(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var calls atomic.Int32
	hold := func(string, net.Addr, PublicKey) error {
		if calls.Add(1) > 1 { // the second key exchange waits for the test
			entered <- struct{}{}
			<-release
		}
		return nil
	}
	a, b, err := netPipe()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []net.Conn{a, b} {
		c.(*net.TCPConn).SetReadBuffer(128 << 10)
		c.(*net.TCPConn).SetWriteBuffer(128 << 10)
	}
	clientConf := &ClientConfig{HostKeyCallback: hold}
	clientConf.SetDefaults()
	v := []byte("version")
	trC := newClientTransport(newTransport(a, rand.Reader, true), v, v, clientConf, "addr", a.RemoteAddr())
	defer trC.Close()
	serverConf := &ServerConfig{}
	serverConf.AddHostKey(testSigners["ecdsa"])
	serverConf.SetDefaults()
	trS := newServerTransport(newTransport(b, rand.Reader, false), v, v, serverConf)
	defer trS.Close()
	if err := trS.waitSession(); err != nil {
		t.Fatal(err)
	}
	if err := trC.waitSession(); err != nil {
		t.Fatal(err)
	}
	if p, err := trC.readPacket(); err != nil || p[0] != msgExtInfo {
		t.Fatalf("ext info: %x %v", p, err)
	}

	trC.requestKeyExchange()
	trS.requestKeyExchange()
	<-entered // both sides are in the key exchange; nobody else reads
	const n = maxPendingPackets
	wrote := make(chan error, 2)
	for _, tr := range []*handshakeTransport{trC, trS} {
		go func() {
			for range n {
				p := make([]byte, 32<<10)
				p[0] = msgChannelData
				if err := tr.writePacket(p); err != nil {
					wrote <- err
					return
				}
			}
			wrote <- nil
		}()
	}
	waitFor(t, "full pending queues", func() bool { return pendingLen(trC) == n && pendingLen(trS) == n })
	got := make(chan int, 2)
	for _, tr := range []*handshakeTransport{trC, trS} {
		go func() { // the owner reads again, as a mux loop does
			i := 0
			for ; i < n; i++ {
				if _, err := tr.readPacket(); err != nil {
					break
				}
			}
			got <- i
		}()
	}
	close(release)
	timeout := time.After(10 * time.Second)
	for range 2 {
		select {
		case err := <-wrote:
			if err != nil {
				t.Fatal(err)
			}
		case <-timeout:
			t.Fatal("writes hang: both kexLoops push their pending packets before letting readers in")
		}
	}
	for range 2 {
		select {
		case k := <-got:
			if k != n {
				t.Fatalf("read %d packets, want %d", k, n)
			}
		case <-timeout:
			t.Fatal("reads hang")
		}
	}
}
