// Copyright 2013 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package ssh

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"slices"
	"strings"
	"sync"
)

// debugHandshake, if set, prints messages sent and received.  Key
// exchange messages are printed as if DH were used, so the debug
// messages are wrong when using ECDH.
const debugHandshake = false

// chanSize sets the amount of buffering SSH connections. This is
// primarily for testing: setting chanSize=0 uncovers deadlocks more
// quickly.
//
// GATEKEEPER PATCH 8: 4 instead of 16. Each connection and each channel
// holds such queues (of packets, channels, requests and replies) for its
// whole life, 2.3 KiB of an idle relayed session at 16.
const chanSize = 4

// maxPendingPackets sets the maximum number of packets to queue while waiting
// for KEX to complete. This limits the total pending data to maxPendingPackets
// * maxPacket bytes, which is ~16.8MB.
const maxPendingPackets = 64

// keyingTransport is a packet based transport that supports key
// changes. It need not be thread-safe. It should pass through
// msgNewKeys in both directions.
type keyingTransport interface {
	packetConn

	// prepareKeyChange sets up a key change. The key change for a
	// direction will be effected if a msgNewKeys message is sent
	// or received.
	prepareKeyChange(*NegotiatedAlgorithms, *kexResult) error

	// setStrictMode sets the strict KEX mode, notably triggering
	// sequence number resets on sending or receiving msgNewKeys.
	// If the sequence number is already > 1 when setStrictMode
	// is called, an error is returned.
	setStrictMode() error

	// setInitialKEXDone indicates to the transport that the initial key exchange
	// was completed
	setInitialKEXDone()
}

// handshakeTransport implements rekeying on top of a keyingTransport
// and offers a thread-safe writePacket() interface.
type handshakeTransport struct {
	conn   keyingTransport
	config *Config

	serverVersion []byte
	clientVersion []byte

	// hostKeys is non-empty if we are the server. In that case,
	// it contains all host keys that can be used to sign the
	// connection.
	hostKeys []Signer

	// publicKeyAuthAlgorithms is non-empty if we are the server. In that case,
	// it contains the supported client public key authentication algorithms.
	publicKeyAuthAlgorithms []string

	// hostKeyAlgorithms is non-empty if we are the client. In that case,
	// we accept these key types from the server as host key.
	hostKeyAlgorithms []string

	// GATEKEEPER PATCH 19: no read loop goroutine. The packets are read
	// by whoever calls readPacket (the handshake and authentication, then
	// the mux's loop), one caller at a time, and by kexLoop while it waits
	// for the peer's KEXINIT and nobody else reads (readAhead). Holding
	// readLock (a send on it; a receive releases it) is the right to read
	// and protects the following, the read counters below, and the
	// shutdown of the reading side (readStopped), which happens once: on
	// the first read error, a key exchange failing under kexLoop's read
	// ahead (kexDone), or in Close.
	readLock    chan struct{}
	readStarted bool  // the first packet (the peer's KEXINIT) was read
	readError   error // the read error; readStopped has run
	// aheadMu protects readAhead, the packets kexLoop read for readPacket
	// (at most readAheadMax). It is taken with or without readLock, and
	// never held while waiting for it: readPacket takes a queued packet
	// without readLock, which kexLoop may hold, waiting in a read for
	// the peer's next packet. Packets are queued only under readLock.
	aheadMu   sync.Mutex
	readAhead [][]byte
	// readTaken wakes kexLoop (a send that never waits) when readPacket
	// took a packet of readAhead: it may read ahead again.
	readTaken chan struct{}

	mu sync.Mutex
	// Condition for the above mutex. It is used to notify a completed key
	// exchange or a write failure. Writes can wait for this condition while a
	// key exchange is in progress.
	writeCond      *sync.Cond
	writeError     error
	sentInitPacket []byte
	sentInitMsg    *kexInitMsg
	// Used to queue writes when a key exchange is in progress. The length is
	// limited by pendingPacketsSize. Once full, writes will block until the key
	// exchange is completed or an error occurs. If not empty, it is emptied
	// all at once when the key exchange is completed in kexLoop.
	pendingPackets [][]byte
	// closeWrite, if set, is run by kexLoop once the key exchange under
	// way is over and pendingPackets are out (closeWriteAfterKex).
	// GATEKEEPER PATCH 21.
	closeWrite       func() error
	writePacketsLeft uint32
	writeBytesLeft   int64
	userAuthComplete bool // whether the user authentication phase is complete

	// If a reader wants to schedule a kex, it pings this
	// channel, and the write loop will send out a kex
	// message.
	requestKex chan struct{}

	// If the other side requests or confirms a kex, its kexInit
	// packet is sent here for the write loop to find it.
	startKex    chan *pendingKex
	kexLoopDone chan struct{} // closed (with writeError non-nil) when kexLoop exits for good

	// GATEKEEPER PATCH 9: kexLoop runs only while a key exchange is
	// requested or under way, and to shut down, instead of waiting for
	// the connection's whole life (a goroutine stack per idle
	// connection). loopMu protects the following; it is never held
	// while taking mu.
	loopMu      sync.Mutex
	loopRunning bool // a kexLoop goroutine runs
	loopSenders int  // readers sending on startKex, less kexLoop's receipts
	loopClosed  bool // readStopped has closed startKex

	// data for host key checking
	hostKeyCallback HostKeyCallback
	dialAddress     string
	remoteAddr      net.Addr

	// bannerCallback is non-empty if we are the client and it has been set in
	// ClientConfig. In that case it is called during the user authentication
	// dance to handle a custom server's message.
	bannerCallback BannerCallback

	// Algorithms agreed in the last key exchange.
	algorithms *NegotiatedAlgorithms

	// Counters owned by the reader (readLock, GATEKEEPER PATCH 19).
	readPacketsLeft uint32
	readBytesLeft   int64

	// The session ID or nil if first kex did not complete yet.
	sessionID []byte

	// strictMode indicates if the other side of the handshake indicated
	// that we should be following the strict KEX protocol restrictions.
	strictMode bool
}

type pendingKex struct {
	otherInit []byte
	done      chan error

	// GATEKEEPER PATCH 19: kexLoop read otherInit itself (readAhead) and
	// holds readLock; it finishes the reader's part (kexDone) after the
	// exchange. firstKex is kexDone's argument.
	readAhead bool
	firstKex  bool
}

func newHandshakeTransport(conn keyingTransport, config *Config, clientVersion, serverVersion []byte) *handshakeTransport {
	t := &handshakeTransport{
		conn:          conn,
		serverVersion: serverVersion,
		clientVersion: clientVersion,
		requestKex:    make(chan struct{}, 1),
		startKex:      make(chan *pendingKex),
		readLock:      make(chan struct{}, 1),
		readTaken:     make(chan struct{}, 1),
		kexLoopDone:   make(chan struct{}),

		config: config,
	}
	t.writeCond = sync.NewCond(&t.mu)
	t.resetReadThresholds()
	t.resetWriteThresholds()

	// We always start with a mandatory key exchange.
	t.requestKex <- struct{}{}
	return t
}

func newClientTransport(conn keyingTransport, clientVersion, serverVersion []byte, config *ClientConfig, dialAddr string, addr net.Addr) *handshakeTransport {
	t := newHandshakeTransport(conn, &config.Config, clientVersion, serverVersion)
	t.dialAddress = dialAddr
	t.remoteAddr = addr
	t.hostKeyCallback = config.HostKeyCallback
	t.bannerCallback = config.BannerCallback
	if len(config.HostKeyAlgorithms) > 0 {
		t.hostKeyAlgorithms = config.HostKeyAlgorithms
	} else {
		t.hostKeyAlgorithms = defaultHostKeyAlgos
	}
	t.loopRunning = true // GATEKEEPER PATCH 9; before a reader reads it
	go t.kexLoop()
	return t
}

func newServerTransport(conn keyingTransport, clientVersion, serverVersion []byte, config *ServerConfig) *handshakeTransport {
	t := newHandshakeTransport(conn, &config.Config, clientVersion, serverVersion)
	t.hostKeys = config.hostKeys
	t.publicKeyAuthAlgorithms = config.PublicKeyAuthAlgorithms
	t.loopRunning = true // GATEKEEPER PATCH 9; before a reader reads it
	go t.kexLoop()
	return t
}

// startKexLoopLocked starts kexLoop unless it runs; t.loopMu must be held.
// GATEKEEPER PATCH 9.
func (t *handshakeTransport) startKexLoopLocked() {
	if !t.loopRunning {
		t.loopRunning = true
		go t.kexLoop()
	}
}

// receivedKex counts a request kexLoop received on startKex off
// loopSenders. The receiver does it, not the sender after its send: else
// kexLoop could finish the key exchange and ask kexLoopIdle before the
// sender got to it, and stay, idle, for the connection's life.
// GATEKEEPER PATCH 9.
func (t *handshakeTransport) receivedKex() {
	t.loopMu.Lock()
	t.loopSenders--
	t.loopMu.Unlock()
}

// kexLoopIdle reports whether kexLoop, between key exchanges, has nothing
// to do; then it must return, and is started again when needed.
// GATEKEEPER PATCH 9.
func (t *handshakeTransport) kexLoopIdle() bool {
	t.loopMu.Lock()
	defer t.loopMu.Unlock()
	if t.loopSenders > 0 || t.loopClosed || len(t.requestKex) > 0 {
		return false
	}
	t.loopRunning = false
	return true
}

func (t *handshakeTransport) getSessionID() []byte {
	return t.sessionID
}

func (t *handshakeTransport) getAlgorithms() NegotiatedAlgorithms {
	return *t.algorithms
}

// waitSession waits for the session to be established. This should be
// the first thing to call after instantiating handshakeTransport.
func (t *handshakeTransport) waitSession() error {
	p, err := t.readPacket()
	if err != nil {
		return err
	}
	if p[0] != msgNewKeys {
		return fmt.Errorf("ssh: first packet should be msgNewKeys")
	}

	return nil
}

func (t *handshakeTransport) id() string {
	if len(t.hostKeys) > 0 {
		return "server"
	}
	return "client"
}

func (t *handshakeTransport) printPacket(p []byte, write bool) {
	action := "got"
	if write {
		action = "sent"
	}

	if p[0] == msgChannelData || p[0] == msgChannelExtendedData {
		log.Printf("%s %s data (packet %d bytes)", t.id(), action, len(p))
	} else {
		msg, err := decode(p)
		log.Printf("%s %s %T %v (%v)", t.id(), action, msg, msg, err)
	}
}

// readPacket reads the next packet for the layer above, taking part in
// key exchanges on the way (the peer's KEXINIT is handed to kexLoop, and
// readPacket returns once the exchange is over).
//
// GATEKEEPER PATCH 19: upstream ran a goroutine per connection (readLoop)
// that read ahead into a queue of chanSize packets, beside the mux's loop,
// which took them from the queue: two goroutines, each with its stack,
// waiting for the next packet of every idle connection. The caller reads
// now, holding readLock, after the packets kexLoop read ahead, which it
// takes without readLock (see aheadMu).
func (t *handshakeTransport) readPacket() ([]byte, error) {
	if p := t.takeReadAhead(); p != nil {
		return p, nil
	}
	t.readLock <- struct{}{}
	defer func() { <-t.readLock }()
	for {
		// Again: kexLoop may have queued one while this waited.
		if p := t.takeReadAhead(); p != nil {
			return p, nil
		}
		if t.readError != nil {
			return nil, t.readError
		}
		if w, ok := t.conn.(readableWaiter); ok {
			w.waitReadable()
		}
		first := !t.readStarted
		t.readStarted = true
		p, err := t.readOnePacket(first)
		if err != nil {
			t.readError = err
			t.readStopped()
			continue
		}
		if t.passed(p) {
			return p, nil
		}
	}
}

// readableWaiter is a keyingTransport that can wait for the next packet
// with little of the caller's stack in use (transport.waitReadable).
// GATEKEEPER PATCH 19.
type readableWaiter interface {
	waitReadable()
}

// takeReadAhead takes the first packet kexLoop read ahead, if any.
// GATEKEEPER PATCH 19.
func (t *handshakeTransport) takeReadAhead() []byte {
	t.aheadMu.Lock()
	defer t.aheadMu.Unlock()
	if len(t.readAhead) == 0 {
		return nil
	}
	p := t.readAhead[0]
	t.readAhead[0] = nil
	t.readAhead = t.readAhead[1:]
	if len(t.readAhead) == 0 {
		t.readAhead = nil
	}
	select {
	case t.readTaken <- struct{}{}:
	default:
	}
	return p
}

// queueReadAhead queues p for readPacket and reports whether the queue is
// full. t.readLock must be held. GATEKEEPER PATCH 19.
func (t *handshakeTransport) queueReadAhead(p []byte) (full bool) {
	t.aheadMu.Lock()
	defer t.aheadMu.Unlock()
	if p != nil {
		t.readAhead = append(t.readAhead, p)
	}
	return len(t.readAhead) >= readAheadMax
}

// passed reports whether the layer above gets packet p.
func (t *handshakeTransport) passed(p []byte) bool {
	// If this is the first kex, and strict KEX mode is enabled,
	// we don't ignore any messages, as they may be used to manipulate
	// the packet sequence numbers.
	return (t.sessionID == nil && t.strictMode) || (p[0] != msgIgnore && p[0] != msgDebug)
}

// readAheadOne is kexLoop's read while it waits for the peer's KEXINIT
// after sending its own, and nobody else reads: it reads one packet
// holding readLock, as upstream's read loop did whether or not anybody
// waited for its packets, so that a key exchange this side starts
// completes while the connection's owner does not read. It returns the
// peer's KEXINIT as a request, readLock still held (kexDone releases it);
// else it keeps any other packet for readPacket and releases readLock.
// It returns full when readPacket has readAheadMax packets to take first:
// the peer's KEXINIT is then left for readPacket to find, unless it takes
// some of them before (readTaken). GATEKEEPER PATCH 19.
func (t *handshakeTransport) readAheadOne() (request *pendingKex, full bool) {
	if t.readError != nil || t.queueReadAhead(nil) {
		// The reading side has stopped (kexLoop finds startKex
		// closed), or a readTaken left from an earlier take woke
		// kexLoop while the queue is still full: wait again.
		<-t.readLock
		return nil, true
	}
	first := !t.readStarted
	t.readStarted = true
	p, err := t.readRawPacket(first)
	switch {
	case err != nil:
		t.readError = err
		t.readStopped()
	case p[0] == msgKexInit:
		return &pendingKex{otherInit: p, done: make(chan error, 1), readAhead: true, firstKex: t.sessionID == nil}, false
	case t.passed(p):
		full = t.queueReadAhead(p)
	}
	<-t.readLock
	return nil, full
}

// readAheadMax is how many packets kexLoop reads ahead for readPacket
// while waiting for the peer's KEXINIT: as many as upstream's read loop
// held, chanSize queued and one in its hands. GATEKEEPER PATCH 19.
const readAheadMax = chanSize + 1

// kexDone, after a key exchange whose KEXINIT kexLoop's readAheadOne read
// (or once kexLoop gave up on it, with kexErr), is the part readOnePacket
// plays after the peer's KEXINIT, and releases readLock. GATEKEEPER PATCH 19.
func (t *handshakeTransport) kexDone(request *pendingKex, kexErr error) {
	p, err := t.afterKex(request.firstKex, kexErr)
	if err != nil {
		t.readError = err
		t.readStopped()
	} else if t.passed(p) {
		t.queueReadAhead(p)
	}
	<-t.readLock
}

// readStopped ends the reading side once t.readError is set: writers
// stop, and kexLoop ends for good. t.readLock must be held, which keeps
// any reader from sending on startKex meanwhile. GATEKEEPER PATCH 19: the
// end of upstream's readLoop.
func (t *handshakeTransport) readStopped() {
	// Stop writers too.
	t.recordWriteError(t.readError)

	// Unblock the writer should it wait for this.
	close(t.startKex)
	// GATEKEEPER PATCH 9: kexLoop ends for good once it sees startKex
	// closed; it may not be running.
	t.loopMu.Lock()
	t.loopClosed = true
	t.startKexLoopLocked()
	t.loopMu.Unlock()

	// Don't close t.requestKex; it's also written to from writePacket.
}

func (t *handshakeTransport) pushPacket(p []byte) error {
	if debugHandshake {
		t.printPacket(p, true)
	}
	return t.conn.writePacket(p)
}

func (t *handshakeTransport) getWriteError() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.writeError
}

func (t *handshakeTransport) recordWriteError(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.writeError == nil && err != nil {
		t.writeError = err
		t.writeCond.Broadcast()
	}
}

func (t *handshakeTransport) requestKeyExchange() {
	select {
	case t.requestKex <- struct{}{}:
	default:
		// something already requested a kex, so do nothing.
	}
	// GATEKEEPER PATCH 9: after the send, which kexLoopIdle sees.
	t.loopMu.Lock()
	t.startKexLoopLocked()
	t.loopMu.Unlock()
}

func (t *handshakeTransport) resetWriteThresholds() {
	t.writePacketsLeft = packetRekeyThreshold
	if t.config.RekeyThreshold > 0 {
		t.writeBytesLeft = int64(t.config.RekeyThreshold)
	} else if t.algorithms != nil {
		t.writeBytesLeft = t.algorithms.Write.rekeyBytes()
	} else {
		t.writeBytesLeft = 1 << 30
	}
}

func (t *handshakeTransport) kexLoop() {

write:
	for t.getWriteError() == nil {
		if t.kexLoopIdle() { // GATEKEEPER PATCH 9
			t.mu.Lock()
			t.closeWriteLocked() // GATEKEEPER PATCH 21
			t.mu.Unlock()
			return
		}
		var request *pendingKex
		var sent bool

		readAheadFull := false
		for request == nil || !sent {
			// GATEKEEPER PATCH 19: once this side's KEXINIT is out,
			// read the peer's if nobody else reads.
			var readLock, readTaken chan struct{}
			if sent && !readAheadFull {
				readLock = t.readLock
			} else if sent {
				readTaken = t.readTaken
			}
			var ok bool
			select {
			case request, ok = <-t.startKex:
				if !ok {
					break write
				}
				t.receivedKex()
			case <-t.requestKex:
				break
			case readLock <- struct{}{}:
				request, readAheadFull = t.readAheadOne()
			case <-readTaken:
				readAheadFull = false
			}

			if !sent {
				if err := t.sendKexInit(); err != nil {
					t.recordWriteError(err)
					break
				}
				sent = true
			}
		}

		if err := t.getWriteError(); err != nil {
			if request != nil {
				request.done <- err
				if request.readAhead { // GATEKEEPER PATCH 19
					t.kexDone(request, err)
				}
			}
			break
		}

		// We're not servicing t.requestKex, but that is OK:
		// we never block on sending to t.requestKex.

		// We're not servicing t.startKex, but the remote end
		// has just sent us a kexInitMsg, so it can't send
		// another key change request, until we close the done
		// channel on the pendingKex request.

		err := t.enterKeyExchange(request.otherInit)

		t.mu.Lock()
		t.writeError = err
		t.sentInitPacket = nil
		t.sentInitMsg = nil

		t.resetWriteThresholds()

		// we have completed the key exchange. Since the
		// reader is still blocked, it is safe to clear out
		// the requestKex channel. This avoids the situation
		// where: 1) we consumed our own request for the
		// initial kex, and 2) the kex from the remote side
		// caused another send on the requestKex channel,
	clear:
		for {
			select {
			case <-t.requestKex:
				//
			default:
				break clear
			}
		}

		request.done <- t.writeError
		if request.readAhead && err == nil {
			// GATEKEEPER PATCH 19: readers go on before the pending
			// packets are pushed, as upstream's read loop did once
			// done was sent: the peer may be pushing its own and read
			// only after. kexDone cannot fail here (nor take mu).
			t.kexDone(request, nil)
			request.readAhead = false
		}

		// kex finished. Push packets that we received while
		// the kex was in progress. Don't look at t.startKex
		// and don't increment writtenSinceKex: if we trigger
		// another kex while we are still busy with the last
		// one, things will become very confusing.
		for _, p := range t.pendingPackets {
			t.writeError = t.pushPacket(p)
			if t.writeError != nil {
				break
			}
		}
		t.pendingPackets = t.pendingPackets[:0]
		t.closeWriteLocked() // GATEKEEPER PATCH 21
		// Unblock writePacket if waiting for KEX.
		t.writeCond.Broadcast()
		t.mu.Unlock()

		if request.readAhead { // GATEKEEPER PATCH 19: after a failure
			t.kexDone(request, err)
		}
	}

	// Unblock reader.
	t.conn.Close()

	// drain startKex channel. We don't service t.requestKex
	// because nobody does blocking sends there.
	for request := range t.startKex {
		t.receivedKex()
		request.done <- t.getWriteError()
	}

	// Mark that the loop is done so that Close can return.
	close(t.kexLoopDone)
}

// The protocol uses uint32 for packet counters, so we can't let them
// reach 1<<32.  We will actually read and write more packets than
// this, though: the other side may send more packets, and after we
// hit this limit on writing we will send a few more packets for the
// key exchange itself.
const packetRekeyThreshold = (1 << 31)

func (t *handshakeTransport) resetReadThresholds() {
	t.readPacketsLeft = packetRekeyThreshold
	if t.config.RekeyThreshold > 0 {
		t.readBytesLeft = int64(t.config.RekeyThreshold)
	} else if t.algorithms != nil {
		t.readBytesLeft = t.algorithms.Read.rekeyBytes()
	} else {
		t.readBytesLeft = 1 << 30
	}
}

func (t *handshakeTransport) readOnePacket(first bool) ([]byte, error) {
	p, err := t.readRawPacket(first)
	if err != nil {
		return nil, err
	}

	if p[0] != msgKexInit {
		return p, nil
	}

	firstKex := t.sessionID == nil

	kex := pendingKex{
		done:      make(chan error, 1),
		otherInit: p,
	}
	// GATEKEEPER PATCH 9: kexLoop keeps running (or starts) for the
	// send.
	t.loopMu.Lock()
	t.loopSenders++
	t.startKexLoopLocked()
	t.loopMu.Unlock()
	t.startKex <- &kex // kexLoop counts the send off loopSenders
	return t.afterKex(firstKex, <-kex.done)
}

// readRawPacket reads the next packet, counting it towards the next key
// exchange. GATEKEEPER PATCH 19: readOnePacket's first part, shared with
// readAheadOne.
func (t *handshakeTransport) readRawPacket(first bool) ([]byte, error) {
	p, err := t.conn.readPacket()
	if err != nil {
		return nil, err
	}

	if t.readPacketsLeft > 0 {
		t.readPacketsLeft--
	} else {
		t.requestKeyExchange()
	}

	if t.readBytesLeft > 0 {
		t.readBytesLeft -= int64(len(p))
	} else {
		t.requestKeyExchange()
	}

	if debugHandshake {
		t.printPacket(p, false)
	}

	if first && p[0] != msgKexInit {
		return nil, fmt.Errorf("ssh: first packet should be msgKexInit")
	}
	return p, nil
}

// afterKex is the reader's part after a key exchange the peer's KEXINIT
// started, which ended with err: the packet that stands for it, for the
// layer above. GATEKEEPER PATCH 19: readOnePacket's last part, shared with
// kexDone.
func (t *handshakeTransport) afterKex(firstKex bool, err error) ([]byte, error) {
	if debugHandshake {
		log.Printf("%s exited key exchange (first %v), err %v", t.id(), firstKex, err)
	}

	if err != nil {
		return nil, err
	}

	t.resetReadThresholds()

	// By default, a key exchange is hidden from higher layers by
	// translating it into msgIgnore.
	successPacket := []byte{msgIgnore}
	if firstKex {
		// sendKexInit() for the first kex waits for
		// msgNewKeys so the authentication process is
		// guaranteed to happen over an encrypted transport.
		successPacket = []byte{msgNewKeys}
	}

	return successPacket, nil
}

const (
	kexStrictClient = "kex-strict-c-v00@openssh.com"
	kexStrictServer = "kex-strict-s-v00@openssh.com"
)

// sendKexInit sends a key change message.
func (t *handshakeTransport) sendKexInit() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sentInitMsg != nil {
		// kexInits may be sent either in response to the other side,
		// or because our side wants to initiate a key change, so we
		// may have already sent a kexInit. In that case, don't send a
		// second kexInit.
		return nil
	}

	msg := &kexInitMsg{
		CiphersClientServer:     t.config.Ciphers,
		CiphersServerClient:     t.config.Ciphers,
		MACsClientServer:        t.config.MACs,
		MACsServerClient:        t.config.MACs,
		CompressionClientServer: supportedCompressions,
		CompressionServerClient: supportedCompressions,
	}
	io.ReadFull(t.config.Rand, msg.Cookie[:])

	// We mutate the KexAlgos slice, in order to add the kex-strict extension algorithm,
	// and possibly to add the ext-info extension algorithm. Since the slice may be the
	// user owned KeyExchanges, we create our own slice in order to avoid using user
	// owned memory by mistake.
	msg.KexAlgos = make([]string, 0, len(t.config.KeyExchanges)+2) // room for kex-strict and ext-info
	msg.KexAlgos = append(msg.KexAlgos, t.config.KeyExchanges...)

	isServer := len(t.hostKeys) > 0
	if isServer {
		for _, k := range t.hostKeys {
			// If k is a MultiAlgorithmSigner, we restrict the signature
			// algorithms. If k is a AlgorithmSigner, presume it supports all
			// signature algorithms associated with the key format. If k is not
			// an AlgorithmSigner, we can only assume it only supports the
			// algorithms that matches the key format. (This means that Sign
			// can't pick a different default).
			keyFormat := k.PublicKey().Type()

			switch s := k.(type) {
			case MultiAlgorithmSigner:
				for _, algo := range algorithmsForKeyFormat(keyFormat) {
					if slices.Contains(s.Algorithms(), underlyingAlgo(algo)) {
						msg.ServerHostKeyAlgos = append(msg.ServerHostKeyAlgos, algo)
					}
				}
			case AlgorithmSigner:
				msg.ServerHostKeyAlgos = append(msg.ServerHostKeyAlgos, algorithmsForKeyFormat(keyFormat)...)
			default:
				msg.ServerHostKeyAlgos = append(msg.ServerHostKeyAlgos, keyFormat)
			}
		}

		if t.sessionID == nil {
			msg.KexAlgos = append(msg.KexAlgos, kexStrictServer)
		}
	} else {
		msg.ServerHostKeyAlgos = t.hostKeyAlgorithms

		// As a client we opt in to receiving SSH_MSG_EXT_INFO so we know what
		// algorithms the server supports for public key authentication. See RFC
		// 8308, Section 2.1.
		//
		// We also send the strict KEX mode extension algorithm, in order to opt
		// into the strict KEX mode.
		if firstKeyExchange := t.sessionID == nil; firstKeyExchange {
			msg.KexAlgos = append(msg.KexAlgos, "ext-info-c")
			msg.KexAlgos = append(msg.KexAlgos, kexStrictClient)
		}

	}

	packet := Marshal(msg)

	// writePacket destroys the contents, so save a copy.
	packetCopy := make([]byte, len(packet))
	copy(packetCopy, packet)

	if err := t.pushPacket(packetCopy); err != nil {
		return err
	}

	t.sentInitMsg = msg
	t.sentInitPacket = packet

	return nil
}

var errSendBannerPhase = errors.New("ssh: SendAuthBanner outside of authentication phase")

func (t *handshakeTransport) writePacket(p []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()

	switch p[0] {
	case msgKexInit:
		return errors.New("ssh: only handshakeTransport can send kexInit")
	case msgNewKeys:
		return errors.New("ssh: only handshakeTransport can send newKeys")
	case msgUserAuthBanner:
		if t.userAuthComplete {
			return errSendBannerPhase
		}
	case msgUserAuthSuccess:
		t.userAuthComplete = true
	}

	if t.writeError != nil {
		return t.writeError
	}

	if t.sentInitMsg != nil {
		if len(t.pendingPackets) < maxPendingPackets {
			// Copy the packet so the writer can reuse the buffer.
			cp := make([]byte, len(p))
			copy(cp, p)
			t.pendingPackets = append(t.pendingPackets, cp)
			return nil
		}
		for t.sentInitMsg != nil {
			// Block and wait for KEX to complete or an error.
			t.writeCond.Wait()
			if t.writeError != nil {
				return t.writeError
			}
		}
	}

	t.countWrite(len(p))

	if err := t.pushPacket(p); err != nil {
		t.writeError = err
		t.writeCond.Broadcast()
	}

	return nil
}

// countWrite counts a packet of n bytes towards the next key exchange,
// and asks for one when the bytes or packets allowed since the last are
// used up. t.mu must be held. GATEKEEPER PATCH 14: writePacket's, shared
// with writeData.
func (t *handshakeTransport) countWrite(n int) {
	if t.writeBytesLeft > 0 {
		t.writeBytesLeft -= int64(n)
	} else {
		t.requestKeyExchange()
	}

	if t.writePacketsLeft > 0 {
		t.writePacketsLeft--
	} else {
		t.requestKeyExchange()
	}
}

// writeData is writePacket of the payload head followed by data, joined
// only if the transport cannot take them apart (dataWriter, GATEKEEPER
// PATCH 14). While a key exchange is under way it declines: the caller's
// writePacket then queues the packet (a copy) or waits, as upstream.
func (t *handshakeTransport) writeData(head, data []byte) (bool, error) {
	dw, ok := t.conn.(dataWriter)
	if !ok || debugHandshake {
		return false, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.writeError != nil {
		return true, t.writeError
	}
	if t.sentInitMsg != nil {
		return false, nil
	}
	done, err := dw.writeData(head, data)
	if !done {
		return false, nil
	}
	// The rest is writePacket's.
	t.countWrite(len(head) + len(data))
	if err != nil {
		t.writeError = err
		t.writeCond.Broadcast()
	}
	return true, nil
}

// closeWriteAfterKex runs closeWrite, which shuts down the writing half of
// the connection, at once or, while kexLoop runs (a key exchange requested,
// under way, or asked for by the peer), once it is over: kexLoop runs it
// after the packets queued meanwhile are written, or when it finds nothing
// to do. Shut down before our KEXINIT went out, the exchange would fail
// writing it and close the connection with the peer's last packets unread,
// which makes the kernel reset it and lose output still on its way. Under
// t.mu, no packet is cut short by it. GATEKEEPER PATCH 21.
func (t *handshakeTransport) closeWriteAfterKex(closeWrite func() error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.loopMu.Lock()
	running := t.loopRunning
	t.loopMu.Unlock()
	if t.writeError == nil && (t.sentInitMsg != nil || running) {
		t.closeWrite = closeWrite
		return nil
	}
	return closeWrite()
}

// closeWriteLocked runs the shutdown closeWriteAfterKex left to kexLoop, if
// any, unless the connection failed meanwhile. t.mu is held.
// GATEKEEPER PATCH 21.
func (t *handshakeTransport) closeWriteLocked() {
	if t.closeWrite != nil && t.writeError == nil {
		_ = t.closeWrite()
	}
	t.closeWrite = nil
}

func (t *handshakeTransport) Close() error {
	// Close the connection. A reader blocked in a read wakes up with an
	// error and runs readStopped, which closes t.startKex and so shuts
	// down kexLoop.
	err := t.conn.Close()

	// GATEKEEPER PATCH 19: with no read loop, nobody may be reading; then
	// Close stops the reading side itself, reading to the error the closed
	// connection gives (what upstream's read loop got; the packets are
	// dropped). readLock waits for a reader that is still on its way out
	// (woken by the Close above, or finishing a key exchange, which fails
	// on the closed connection).
	t.readLock <- struct{}{}
	for t.readError == nil {
		if _, err := t.conn.readPacket(); err != nil {
			t.readError = err
			t.readStopped()
		}
	}
	<-t.readLock

	// Wait for the kexLoop goroutine to complete.
	<-t.kexLoopDone

	return err
}

func (t *handshakeTransport) enterKeyExchange(otherInitPacket []byte) error {
	if debugHandshake {
		log.Printf("%s entered key exchange", t.id())
	}

	otherInit := &kexInitMsg{}
	if err := Unmarshal(otherInitPacket, otherInit); err != nil {
		return err
	}

	magics := handshakeMagics{
		clientVersion: t.clientVersion,
		serverVersion: t.serverVersion,
		clientKexInit: otherInitPacket,
		serverKexInit: t.sentInitPacket,
	}

	clientInit := otherInit
	serverInit := t.sentInitMsg
	isClient := len(t.hostKeys) == 0
	if isClient {
		clientInit, serverInit = serverInit, clientInit

		magics.clientKexInit = t.sentInitPacket
		magics.serverKexInit = otherInitPacket
	}

	var err error
	t.algorithms, err = findAgreedAlgorithms(isClient, clientInit, serverInit)
	if err != nil {
		return err
	}

	if t.sessionID == nil && ((isClient && slices.Contains(serverInit.KexAlgos, kexStrictServer)) || (!isClient && slices.Contains(clientInit.KexAlgos, kexStrictClient))) {
		t.strictMode = true
		if err := t.conn.setStrictMode(); err != nil {
			return err
		}
	}

	// We don't send FirstKexFollows, but we handle receiving it.
	//
	// RFC 4253 section 7 defines the kex and the agreement method for
	// first_kex_packet_follows. It states that the guessed packet
	// should be ignored if the "kex algorithm and/or the host
	// key algorithm is guessed wrong (server and client have
	// different preferred algorithm), or if any of the other
	// algorithms cannot be agreed upon". The other algorithms have
	// already been checked above so the kex algorithm and host key
	// algorithm are checked here.
	if otherInit.FirstKexFollows && (clientInit.KexAlgos[0] != serverInit.KexAlgos[0] || clientInit.ServerHostKeyAlgos[0] != serverInit.ServerHostKeyAlgos[0]) {
		// other side sent a kex message for the wrong algorithm,
		// which we have to ignore.
		if _, err := t.conn.readPacket(); err != nil {
			return err
		}
	}

	kex, ok := kexAlgoMap[t.algorithms.KeyExchange]
	if !ok {
		return fmt.Errorf("ssh: unexpected key exchange algorithm %v", t.algorithms.KeyExchange)
	}

	var result *kexResult
	if len(t.hostKeys) > 0 {
		result, err = t.server(kex, &magics)
	} else {
		result, err = t.client(kex, &magics)
	}

	if err != nil {
		return err
	}

	firstKeyExchange := t.sessionID == nil
	if firstKeyExchange {
		t.sessionID = result.H
	}
	result.SessionID = t.sessionID

	if err := t.conn.prepareKeyChange(t.algorithms, result); err != nil {
		return err
	}
	if err = t.conn.writePacket([]byte{msgNewKeys}); err != nil {
		return err
	}

	// On the server side, after the first SSH_MSG_NEWKEYS, send a SSH_MSG_EXT_INFO
	// message with the server-sig-algs extension if the client supports it. See
	// RFC 8308, Sections 2.4 and 3.1, and [PROTOCOL], Section 1.9.
	if !isClient && firstKeyExchange && slices.Contains(clientInit.KexAlgos, "ext-info-c") {
		supportedPubKeyAuthAlgosList := strings.Join(t.publicKeyAuthAlgorithms, ",")
		extInfo := &extInfoMsg{
			NumExtensions: 2,
			Payload:       make([]byte, 0, 4+15+4+len(supportedPubKeyAuthAlgosList)+4+16+4+1),
		}
		extInfo.Payload = appendInt(extInfo.Payload, len("server-sig-algs"))
		extInfo.Payload = append(extInfo.Payload, "server-sig-algs"...)
		extInfo.Payload = appendInt(extInfo.Payload, len(supportedPubKeyAuthAlgosList))
		extInfo.Payload = append(extInfo.Payload, supportedPubKeyAuthAlgosList...)
		extInfo.Payload = appendInt(extInfo.Payload, len("ping@openssh.com"))
		extInfo.Payload = append(extInfo.Payload, "ping@openssh.com"...)
		extInfo.Payload = appendInt(extInfo.Payload, 1)
		extInfo.Payload = append(extInfo.Payload, "0"...)
		if err := t.conn.writePacket(Marshal(extInfo)); err != nil {
			return err
		}
	}

	if packet, err := t.conn.readPacket(); err != nil {
		return err
	} else if packet[0] != msgNewKeys {
		return unexpectedMessageError(msgNewKeys, packet[0])
	}

	if firstKeyExchange {
		// Indicates to the transport that the first key exchange is completed
		// after receiving SSH_MSG_NEWKEYS.
		t.conn.setInitialKEXDone()
	}

	return nil
}

// algorithmSignerWrapper is an AlgorithmSigner that only supports the default
// key format algorithm.
//
// This is technically a violation of the AlgorithmSigner interface, but it
// should be unreachable given where we use this. Anyway, at least it returns an
// error instead of panicing or producing an incorrect signature.
type algorithmSignerWrapper struct {
	Signer
}

func (a algorithmSignerWrapper) SignWithAlgorithm(rand io.Reader, data []byte, algorithm string) (*Signature, error) {
	if algorithm != underlyingAlgo(a.PublicKey().Type()) {
		return nil, errors.New("ssh: internal error: algorithmSignerWrapper invoked with non-default algorithm")
	}
	return a.Sign(rand, data)
}

func pickHostKey(hostKeys []Signer, algo string) AlgorithmSigner {
	for _, k := range hostKeys {
		if s, ok := k.(MultiAlgorithmSigner); ok {
			if !slices.Contains(s.Algorithms(), underlyingAlgo(algo)) {
				continue
			}
		}

		if algo == k.PublicKey().Type() {
			return algorithmSignerWrapper{k}
		}

		k, ok := k.(AlgorithmSigner)
		if !ok {
			continue
		}
		for _, a := range algorithmsForKeyFormat(k.PublicKey().Type()) {
			if algo == a {
				return k
			}
		}
	}
	return nil
}

func (t *handshakeTransport) server(kex kexAlgorithm, magics *handshakeMagics) (*kexResult, error) {
	hostKey := pickHostKey(t.hostKeys, t.algorithms.HostKey)
	if hostKey == nil {
		return nil, errors.New("ssh: internal error: negotiated unsupported signature type")
	}

	r, err := kex.Server(t.conn, t.config.Rand, magics, hostKey, t.algorithms.HostKey)
	return r, err
}

func (t *handshakeTransport) client(kex kexAlgorithm, magics *handshakeMagics) (*kexResult, error) {
	result, err := kex.Client(t.conn, t.config.Rand, magics)
	if err != nil {
		return nil, err
	}

	hostKey, err := ParsePublicKey(result.HostKey)
	if err != nil {
		return nil, err
	}

	if err := verifyHostKeySignature(hostKey, t.algorithms.HostKey, result); err != nil {
		return nil, err
	}

	err = t.hostKeyCallback(t.dialAddress, t.remoteAddr, hostKey)
	if err != nil {
		return nil, err
	}

	return result, nil
}
