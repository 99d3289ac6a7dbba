// Copyright 2026 The gatekeeper authors. Tests of GATEKEEPER PATCH 9
// (kexLoop runs only while a key exchange is wanted).

package ssh

import (
	"net"
	"runtime"
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
			got, err := trS.readPacket()
			if err != nil {
				t.Fatal(err)
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
