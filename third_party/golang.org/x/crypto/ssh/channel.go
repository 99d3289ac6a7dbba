// Copyright 2011 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package ssh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const (
	minPacketLength = 9
	// channelMaxPacket contains the maximum number of bytes that will be
	// sent in a single packet. As per RFC 4253, section 6.1, 32k is also
	// the minimum.
	channelMaxPacket = 1 << 15
	// We follow OpenSSH here.
	channelWindowSize = 64 * channelMaxPacket
)

// NewChannel represents an incoming request to a channel. It must either be
// accepted for use by calling Accept, or rejected by calling Reject.
type NewChannel interface {
	// Accept accepts the channel creation request. It returns the Channel
	// and a Go channel containing SSH requests. The Go channel must be
	// serviced otherwise the Channel will hang.
	Accept() (Channel, <-chan *Request, error)

	// Reject rejects the channel creation request. After calling
	// this, no other methods on the Channel may be called.
	Reject(reason RejectionReason, message string) error

	// ChannelType returns the type of the channel, as supplied by the
	// client.
	ChannelType() string

	// ExtraData returns the arbitrary payload for this channel, as supplied
	// by the client. This data is specific to the channel type.
	ExtraData() []byte
}

// A Channel is an ordered, reliable, flow-controlled, duplex stream
// that is multiplexed over an SSH connection.
type Channel interface {
	// Read reads up to len(data) bytes from the channel.
	Read(data []byte) (int, error)

	// Write writes len(data) bytes to the channel.
	Write(data []byte) (int, error)

	// Close signals end of channel use. No data may be sent after this
	// call.
	Close() error

	// CloseWrite signals the end of sending in-band
	// data. Requests may still be sent, and the other side may
	// still send data
	CloseWrite() error

	// SendRequest sends a channel request.  If wantReply is true,
	// it will wait for a reply and return the result as a
	// boolean, otherwise the return value will be false. Channel
	// requests are out-of-band messages so they may be sent even
	// if the data stream is closed or blocked by flow control.
	// If the channel is closed before a reply is returned, io.EOF
	// is returned.
	SendRequest(name string, wantReply bool, payload []byte) (bool, error)

	// Stderr returns an io.ReadWriter that writes to this channel
	// with the extended data type set to stderr. Stderr may
	// safely be read and written from a different goroutine than
	// Read and Write respectively.
	Stderr() io.ReadWriter
}

// Request is a request sent outside of the normal stream of
// data. Requests can either be specific to an SSH channel, or they
// can be global.
type Request struct {
	Type      string
	WantReply bool
	Payload   []byte

	ch  *channel
	mux *mux
}

// Reply sends a response to a request. It must be called for all requests
// where WantReply is true and is a no-op otherwise. The payload argument is
// ignored for replies to channel-specific requests.
func (r *Request) Reply(ok bool, payload []byte) error {
	if !r.WantReply {
		return nil
	}

	if r.ch == nil {
		return r.mux.ackRequest(ok, payload)
	}

	return r.ch.ackRequest(ok)
}

// RejectionReason is an enumeration used when rejecting channel creation
// requests. See RFC 4254, section 5.1.
type RejectionReason uint32

const (
	Prohibited RejectionReason = iota + 1
	ConnectionFailed
	UnknownChannelType
	ResourceShortage
)

// String converts the rejection reason to human readable form.
func (r RejectionReason) String() string {
	switch r {
	case Prohibited:
		return "administratively prohibited"
	case ConnectionFailed:
		return "connect failed"
	case UnknownChannelType:
		return "unknown channel type"
	case ResourceShortage:
		return "resource shortage"
	}
	return fmt.Sprintf("unknown reason %d", int(r))
}

// minPayloadSize returns min(limit, length) clamped to a uint32. It is used
// to compute the size of the next channel data packet from the remaining
// payload. The comparison is done in int64 because length is an int — on
// 64-bit systems len(data) can exceed 2^32, and a direct uint32(length)
// cast would silently truncate to 0 at every multiple of 2^32, causing
// WriteExtended's loop to spin without making progress.
func minPayloadSize(limit uint32, length int) uint32 {
	if int64(length) > int64(limit) {
		return limit
	}
	return uint32(length)
}

type channelDirection uint8

const (
	channelInbound channelDirection = iota
	channelOutbound
)

// channel is an implementation of the Channel interface that works
// with the mux class.
type channel struct {
	// R/O after creation
	chanType          string
	extraData         []byte
	localId, remoteId uint32

	// maxIncomingPayload and maxRemotePayload are the maximum
	// payload sizes of normal and extended data packets for
	// receiving and sending, respectively. The wire packet will
	// be 9 or 13 bytes larger (excluding encryption overhead).
	maxIncomingPayload uint32
	maxRemotePayload   uint32

	mux *mux

	// decided is set to true if an accept or reject message has been sent
	// (for outbound channels) or received (for inbound channels).
	decided bool

	// established is set to true once the channel is open and may carry normal
	// channel traffic: for an outbound channel when the peer's open
	// confirmation is received, for an inbound channel when the local side
	// accepts it. It is set and read from different goroutines.
	established atomic.Bool

	// direction contains either channelOutbound, for channels created
	// locally, or channelInbound, for channels created by the peer.
	direction channelDirection

	// Pending internal channel messages.
	msg chan interface{}

	// Since requests have no ID, there can be only one request
	// with WantReply=true outstanding.  This lock is held by a
	// goroutine that has such an outgoing request pending.
	sentRequestMu sync.Mutex
	// sentRequestPending is set to true while a SendRequest call with
	// WantReply=true is in flight. handlePacket uses it as a gate: responses
	// arriving while no request is pending are dropped to prevent a
	// misbehaving peer from stalling the mux read loop by filling ch.msg
	// with unsolicited channelRequestSuccess/Failure messages.
	sentRequestPending atomic.Bool

	incomingRequests chan *Request

	sentEOF bool

	// thread-safe data
	remoteWin  window
	pending    *buffer
	extPending *buffer

	// windowMu protects myWindow, the flow-control window, and myConsumed,
	// the number of bytes consumed since we last increased myWindow
	windowMu   sync.Mutex
	myWindow   uint32
	myConsumed uint32
	// windowSize is the most myWindow grows to: channelWindowSize unless
	// AcceptWithWindow set more. GATEKEEPER PATCH 3.
	windowSize uint32

	// discardStderr, set by DiscardStderr, makes extended data of type 1
	// go the way of other types: dropped, its window credited back.
	// GATEKEEPER PATCH 5.
	discardStderr atomic.Bool

	// notify, set by SetNotify, is called after something is queued for
	// the channel's reader. GATEKEEPER PATCH 7.
	notify atomic.Pointer[func()]
	// readTurn (0: data, 1: stderr) is read first by the next
	// ReadAnyWait; readGen numbers its calls and wokenGen is that of the
	// last call whose time ran out. All guarded by pending.Cond.L.
	// GATEKEEPER PATCH 7.
	readTurn          uint32
	readGen, wokenGen uint64

	// writeMu serializes calls to mux.conn.writePacket() and
	// protects sentClose and packetPool. This mutex must be
	// different from windowMu, as writePacket can block if there
	// is a key exchange pending.
	writeMu   sync.Mutex
	sentClose bool
	// peerClosed is set when the peer's CLOSE came while the owner
	// answers it (mux.OwnerAnswersClose). Guarded by writeMu.
	// GATEKEEPER PATCH 20.
	peerClosed bool

	// lost is set when the connection ended before the peer's CLOSE
	// came (Lost). GATEKEEPER PATCH 21.
	lost atomic.Bool

	// packetPool has a buffer for each extended channel ID to
	// save allocations during writes.
	packetPool map[uint32][]byte

	// dataHead is the header of the data packet writeData is writing:
	// one per channel, so that handing it to the transport (an
	// interface) costs no allocation per write. Guarded by writeMu.
	// GATEKEEPER PATCH 14.
	dataHead [13]byte

	// closeOnce guards close so it is idempotent: closing the internal Go
	// channels (msg, incomingRequests) more than once would panic.
	closeOnce sync.Once
}

// writePacket sends a packet. If the packet is a channel close, it updates
// sentClose. This method takes the lock c.writeMu.
func (ch *channel) writePacket(packet []byte) error {
	ch.writeMu.Lock()
	if ch.sentClose {
		ch.writeMu.Unlock()
		return io.EOF
	}
	ch.sentClose = (packet[0] == msgChannelClose)
	err := ch.mux.conn.writePacket(packet)
	ch.writeMu.Unlock()
	return err
}

// writeData writes the data packet of head and data through dw, as
// writePacket writes a packet: not after the channel's close. It reports
// false when dw declined and nothing was written. GATEKEEPER PATCH 14.
func (ch *channel) writeData(dw dataWriter, head, data []byte) (bool, error) {
	ch.writeMu.Lock()
	defer ch.writeMu.Unlock()
	if ch.sentClose {
		return true, io.EOF
	}
	h := ch.dataHead[:copy(ch.dataHead[:], head)]
	return dw.writeData(h, data)
}

func (ch *channel) sendMessage(msg interface{}) error {
	if debugMux {
		log.Printf("send(%d): %#v", ch.mux.chanList.offset, msg)
	}

	p := Marshal(msg)
	binary.BigEndian.PutUint32(p[1:], ch.remoteId)
	return ch.writePacket(p)
}

// WriteExtended writes data to a specific extended stream. These streams are
// used, for example, for stderr.
func (ch *channel) WriteExtended(data []byte, extendedCode uint32) (n int, err error) {
	if ch.sentEOF {
		return 0, io.EOF
	}
	// 1 byte message type, 4 bytes remoteId, 4 bytes data length
	opCode := byte(msgChannelData)
	headerLength := uint32(9)
	if extendedCode > 0 {
		headerLength += 4
		opCode = msgChannelExtendedData
	}

	ch.writeMu.Lock()
	small := ch.packetPool[extendedCode]
	// We don't remove the buffer from packetPool, so
	// WriteExtended calls from different goroutines will be
	// flagged as errors by the race detector.
	ch.writeMu.Unlock()

	// GATEKEEPER PATCH 14: a connection that can (dataWriter) takes the
	// header and the data apart, and copies the data only once.
	dw, _ := ch.mux.conn.(dataWriter)
	var head [13]byte
	head[0] = opCode
	binary.BigEndian.PutUint32(head[1:], ch.remoteId)
	if extendedCode > 0 {
		binary.BigEndian.PutUint32(head[5:], extendedCode)
	}
	for len(data) > 0 {
		space := minPayloadSize(ch.maxRemotePayload, len(data))
		if space, err = ch.remoteWin.reserve(space); err != nil {
			return n, err
		}
		todo := data[:space]
		binary.BigEndian.PutUint32(head[headerLength-4:], uint32(len(todo)))
		// A packet that fits the kept buffers goes as before: the copy
		// costs nothing there, and writeData would decline it after
		// taking both locks.
		done := false
		if dw != nil && headerLength+space > keptBufMax {
			done, err = ch.writeData(dw, head[:headerLength], todo)
		}
		if !done {
			// GATEKEEPER PATCH 13: the channel keeps a buffer of at most
			// keptBufMax; a larger packet is laid out in a pooled array,
			// given back once written (writePacket keeps no reference: a
			// packet queued during a key exchange is copied).
			packet, arr := writeBuf(&small, int(headerLength+space))
			copy(packet, head[:headerLength])
			copy(packet[headerLength:], todo)
			err = ch.writePacket(packet)
			if arr != nil {
				packetPool.Put(arr)
			}
		}
		if err != nil {
			return n, err
		}

		n += len(todo)
		data = data[len(todo):]
	}

	ch.writeMu.Lock()
	ch.packetPool[extendedCode] = small
	ch.writeMu.Unlock()

	return n, err
}

func (ch *channel) handleData(packet []byte) error {
	headerLen := 9
	isExtendedData := packet[0] == msgChannelExtendedData
	if isExtendedData {
		headerLen = 13
	}
	if len(packet) < headerLen {
		// malformed data packet
		return parseError(packet[0])
	}

	var extended uint32
	if isExtendedData {
		extended = binary.BigEndian.Uint32(packet[5:])
	}

	length := binary.BigEndian.Uint32(packet[headerLen-4 : headerLen])
	if length == 0 {
		return nil
	}
	if length > ch.maxIncomingPayload {
		// TODO(hanwen): should send Disconnect?
		return errors.New("ssh: incoming packet exceeds maximum payload size")
	}

	data := packet[headerLen:]
	if length != uint32(len(data)) {
		return errors.New("ssh: wrong packet length")
	}

	ch.windowMu.Lock()
	if ch.myWindow < length {
		ch.windowMu.Unlock()
		// TODO(hanwen): should send Disconnect with reason?
		return errors.New("ssh: remote side wrote too much")
	}
	ch.myWindow -= length
	ch.windowMu.Unlock()

	if extended == 1 && !ch.discardStderr.Load() {
		ch.extPending.writePacket(data, packet)
		ch.notifyReader() // GATEKEEPER PATCH 7
	} else if extended > 0 {
		// RFC 4254, Section 5.2 defines no extended data types other
		// than stderr (type 1, handled above) and this package provides
		// no API to read them, so the data is discarded. Credit its
		// window back immediately: it can never be read, so the
		// deduction above would otherwise shrink the window permanently.
		// adjustWindow returns io.EOF if the local side has already
		// sent a channel close; ignore it like ReadExtended does, since
		// an error returned here would terminate the mux read loop and
		// tear down the whole connection.
		if err := ch.adjustWindow(length); err != nil && err != io.EOF {
			return err
		}
	} else {
		ch.pending.writePacket(data, packet)
		// GATEKEEPER PATCH 7. Not for discarded data: its window is
		// credited back at once, so nothing would bound the rate of
		// notifications a peer could cause with it.
		ch.notifyReader()
	}
	return nil
}

func (c *channel) adjustWindow(adj uint32) error {
	c.windowMu.Lock()
	// Since myConsumed and myWindow are managed on our side, and can never
	// exceed the initial window setting, we don't worry about overflow.
	c.myConsumed += adj
	var sendAdj uint32
	if (c.windowSize-c.myWindow > 3*c.maxIncomingPayload) ||
		(c.myWindow < c.windowSize/2) {
		sendAdj = c.myConsumed
		c.myConsumed = 0
		c.myWindow += sendAdj
	}
	c.windowMu.Unlock()
	if sendAdj == 0 {
		return nil
	}
	return c.sendMessage(windowAdjustMsg{
		AdditionalBytes: sendAdj,
	})
}

func (c *channel) ReadExtended(data []byte, extended uint32) (n int, err error) {
	switch extended {
	case 1:
		n, err = c.extPending.Read(data)
	case 0:
		n, err = c.pending.Read(data)
	default:
		return 0, fmt.Errorf("ssh: extended code %d unimplemented", extended)
	}

	if n > 0 {
		err = c.adjustWindow(uint32(n))
		// sendWindowAdjust can return io.EOF if the remote
		// peer has closed the connection, however we want to
		// defer forwarding io.EOF to the caller of Read until
		// the buffer has been drained.
		if n > 0 && err == io.EOF {
			err = nil
		}
	}

	return n, err
}

// ReadAny reads from the channel's data or its stderr (extended data of
// type 1), whichever has some, the data first: extended is 0 or 1. It
// returns io.EOF once both have ended. One goroutine can so relay both
// streams of a channel (the gatekeeper's relay: a goroutine and a buffer
// fewer per idle session). Not part of the Channel interface, which
// would break every other implementation; reach it with a type
// assertion. GATEKEEPER PATCH 6.
func (c *channel) ReadAny(data []byte) (n int, extended uint32, err error) {
	return c.ReadAnyWait(data, -1)
}

// ReadAnyWait is ReadAny waiting at most wait for something to read (no
// limit when wait is negative); it returns os.ErrDeadlineExceeded when
// nothing came. With SetNotify, a reader can so leave its goroutine once
// the channel has been quiet for a while and start one again when
// notified. GATEKEEPER PATCH 7.
func (c *channel) ReadAnyWait(data []byte, wait time.Duration) (n int, extended uint32, err error) {
	if !c.decided {
		return 0, 0, errUndecided
	}
	if len(data) == 0 {
		return 0, 0, nil // as io.Reader; waiting could not change it
	}
	c.pending.Cond.L.Lock() // also extPending's: they share the Cond
	if extended, err = c.waitAnyLocked(wait); err == nil {
		n, _, _ = c.stream(extended).readLocked(data)
	}
	c.pending.Cond.L.Unlock()

	if n > 0 {
		// As ReadExtended: io.EOF from the window adjustment waits
		// until the buffers are drained.
		if err = c.adjustWindow(uint32(n)); err == io.EOF {
			err = nil
		}
	}
	return n, extended, err
}

// readAnyToMax bounds what one ReadAnyTo call hands on, so that a flood
// of data lets stderr have its turn, and the other way round.
// GATEKEEPER PATCH 15.
const readAnyToMax = 256 << 10

// ReadAnyTo is ReadAnyWait handing the buffered bytes to write where they
// lie instead of copying them out. Once data or stderr has something
// (extended: 0 or 1, chosen as ReadAnyWait does), write is called with
// the buffered bytes of that stream, at most one packet's worth at a
// time, for as long as there are some, write takes each piece whole, and
// less than readAnyToMax has gone. n is what write took, given back to the
// peer's window at the end; err is write's error, io.ErrShortWrite when it
// took less than a piece without one, an error of the window adjustment
// other than io.EOF, or, with n == 0, ReadAnyWait's (io.EOF,
// os.ErrDeadlineExceeded). write must not keep p, which goes back to
// x/crypto's pool after the call, nor append to it, nor read this
// channel: other reads of the stream wait until ReadAnyTo is done with
// it. A relay so copies each byte once, into the packet it writes on
// (patch 14), instead of twice. GATEKEEPER PATCH 15.
func (c *channel) ReadAnyTo(wait time.Duration, write func(p []byte, extended uint32) (int, error)) (n int, extended uint32, err error) {
	if !c.decided {
		return 0, 0, errUndecided
	}
	c.pending.Cond.L.Lock()
	extended, err = c.waitAnyLocked(wait)
	if err != nil {
		c.pending.Cond.L.Unlock()
		return 0, extended, err
	}
	// Only readers take bytes out of a buffer, and b.lent makes every
	// other reader wait: while the lock is released below, the
	// connection's read loop only appends, after p (see
	// buffer.peekLocked), and p's packet stays in the buffer until
	// consumeLocked.
	b := c.stream(extended)
	p := b.peekLocked()
	b.lent = true
	c.pending.Cond.L.Unlock()
	for len(p) > 0 {
		w, werr := write(p, extended)
		w = max(0, min(w, len(p)))
		c.pending.Cond.L.Lock()
		b.consumeLocked(w)
		next := []byte(nil)
		if werr == nil && w == len(p) && n+w < readAnyToMax {
			next = b.peekLocked()
		}
		if len(next) == 0 {
			b.lent = false
			c.pending.Cond.Broadcast() // readers that waited for it
		}
		c.pending.Cond.L.Unlock()
		n += w
		switch {
		case werr != nil:
			err = werr
		case w < len(p):
			err = io.ErrShortWrite
		}
		if err != nil {
			break
		}
		p = next
	}
	// One window adjustment for the lot, as ReadAnyWait: the one call
	// per piece of the first version of this patch measured slower than
	// the copy it saves (bench/ab.sh).
	if n > 0 {
		if aerr := c.adjustWindow(uint32(n)); aerr != nil && aerr != io.EOF && err == nil {
			err = aerr
		}
	}
	return n, extended, err
}

// stream returns the buffer of data (extended 0) or stderr (1).
// GATEKEEPER PATCH 15.
func (c *channel) stream(extended uint32) *buffer {
	if extended == 1 {
		return c.extPending
	}
	return c.pending
}

// waitAnyLocked waits, with c.pending.Cond.L held, at most wait (no limit
// when negative) until data or stderr has bytes to read and returns which
// (0 or 1; they take turns going first, so that a flood of one does not
// hold up the other); err is io.EOF once both have ended and
// os.ErrDeadlineExceeded when nothing came in time. GATEKEEPER PATCH 15
// (split out of ReadAnyWait, patches 6 and 7).
func (c *channel) waitAnyLocked(wait time.Duration) (which uint32, err error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	c.readGen++
	gen := c.readGen
	for {
		for i := range uint32(2) {
			which = i ^ c.readTurn
			if c.stream(which).hasData() {
				c.readTurn = which ^ 1
				return which, nil
			}
		}
		// Both are closed together (channel EOF or close).
		if c.pending.closed && c.extPending.closed && !c.pending.lent && !c.extPending.lent {
			return 0, io.EOF
		}
		switch {
		case wait == 0 || (timer != nil && c.wokenGen == gen):
			return 0, os.ErrDeadlineExceeded
		case wait > 0 && timer == nil:
			timer = time.AfterFunc(wait, func() { c.wakeReader(gen) })
		}
		c.pending.Cond.Wait()
	}
}

// wakeReader ends the wait of the ReadAnyWait call numbered gen.
// GATEKEEPER PATCH 7.
func (c *channel) wakeReader(gen uint64) {
	c.pending.Cond.L.Lock()
	// A late timer of an earlier call must not undo a later one's.
	c.wokenGen = max(c.wokenGen, gen)
	c.pending.Cond.Broadcast()
	c.pending.Cond.L.Unlock()
}

// Readable reports whether ReadAny would return at once: data or stderr
// is waiting, or both have ended. GATEKEEPER PATCH 7.
func (c *channel) Readable() bool {
	c.pending.Cond.L.Lock()
	defer c.pending.Cond.L.Unlock()
	return c.pending.hasData() || c.extPending.hasData() || (c.pending.closed && c.extPending.closed)
}

// SetNotify makes the channel call f after it queues something for its
// reader: data, stderr, EOF, its close, or a request (once it is in the
// Requests channel). f runs in the connection's read loop, which it must
// not hold up, and may run before SetNotify returns; nil removes it. A
// relay can so start a goroutine for a channel only when the channel has
// something for it, instead of one per channel blocked in Read for the
// channel's life. A call of the previous function already under way may
// still run after SetNotify returns. Not part of the Channel interface;
// reach it with a type assertion. GATEKEEPER PATCH 7.
func (c *channel) SetNotify(f func()) {
	if f == nil {
		c.notify.Store(nil)
		return
	}
	c.notify.Store(&f)
}

// Lost reports whether the channel ended because its connection did (the
// peer went away, an error, or the connection's Close) before the peer's
// CLOSE came, rather than by that CLOSE. It is set before the channel's
// reads end and its Requests channel closes, so an owner that has seen
// either can tell the two apart: a relay then passes on a CLOSE the peer
// sent, and not one the peer never sent. Not part of the Channel
// interface; reach it with a type assertion. GATEKEEPER PATCH 21.
func (c *channel) Lost() bool {
	return c.lost.Load()
}

// markLost sets Lost for a channel its connection's end is closing, unless
// the peer's CLOSE came already (mux.OwnerAnswersClose keeps such a
// channel listed until its owner's Close). GATEKEEPER PATCH 21.
func (c *channel) markLost() {
	c.writeMu.Lock()
	peerClosed := c.peerClosed
	c.writeMu.Unlock()
	if !peerClosed {
		c.lost.Store(true)
	}
}

// notifyReader calls the function of SetNotify, if any. GATEKEEPER PATCH 7.
func (c *channel) notifyReader() {
	if f := c.notify.Load(); f != nil {
		(*f)()
	}
}

func (c *channel) close() {
	c.closeOnce.Do(func() {
		c.pending.eof()
		c.extPending.eof()
		close(c.msg)
		close(c.incomingRequests)
		c.writeMu.Lock()
		// This is not necessary for a normal channel teardown, but if
		// there was another error, it is.
		c.sentClose = true
		c.writeMu.Unlock()
		// Unblock writers.
		c.remoteWin.close()
	})
	// GATEKEEPER PATCH 20: after peerClose, whose closeOnce.Do ran the
	// above but for sentClose, close still stops every write.
	c.writeMu.Lock()
	c.sentClose = true
	c.writeMu.Unlock()
	c.notifyReader() // GATEKEEPER PATCH 7
}

// peerClose takes the peer's CLOSE on a connection whose channel owners
// answer it (mux.OwnerAnswersClose): the channel's reads end, its requests
// and replies stop coming and data can no longer be written, as after
// close, but messages (a command's exit status, sent after the peer's
// CLOSE as sshd does) can still be sent until the owner's Close sends this
// side's CLOSE. The channel leaves the mux's list once both CLOSEs went.
// GATEKEEPER PATCH 20.
func (c *channel) peerClose() {
	c.writeMu.Lock()
	c.peerClosed = true
	both := c.sentClose
	c.writeMu.Unlock()
	if both {
		c.mux.chanList.drop(c)
	}
	c.closeOnce.Do(func() {
		c.pending.eof()
		c.extPending.eof()
		close(c.msg)
		close(c.incomingRequests)
		c.remoteWin.close()
	})
	c.notifyReader()
}

// responseMessageReceived is called when a success or failure message is
// received on a channel to check that such a message is reasonable for the
// given channel.
func (ch *channel) responseMessageReceived() error {
	if ch.direction == channelInbound {
		return errors.New("ssh: channel response message received on inbound channel")
	}
	if ch.decided {
		return errors.New("ssh: duplicate response received for channel")
	}
	ch.decided = true
	ch.established.Store(true)
	return nil
}

func (ch *channel) handlePacket(packet []byte) error {
	// GATEKEEPER PATCH 20: after its CLOSE the peer sends nothing more on
	// the channel but for answers to requests that crossed it; a request
	// is refused, as upstream refuses one for a channel it has forgotten,
	// and anything else ends the connection. (peerClosed is written only
	// by this goroutine, the mux's loop.)
	if ch.peerClosed {
		switch packet[0] {
		case msgChannelSuccess, msgChannelFailure:
			// The answer to a request of ours that crossed the peer's
			// CLOSE: its SendRequest has returned already (EOF).
			return nil
		case msgChannelRequest:
			var req channelRequestMsg
			if err := Unmarshal(packet, &req); err != nil {
				return err
			}
			if req.WantReply {
				return ch.sendMessage(channelRequestFailureMsg{PeersID: ch.remoteId})
			}
			return nil
		}
		return fmt.Errorf("ssh: message type %d on channel %d after its close", packet[0], ch.localId)
	}
	// Only the open response is expected before the channel is established.
	if !ch.established.Load() {
		switch packet[0] {
		case msgChannelOpenConfirm, msgChannelOpenFailure:
		default:
			return nil
		}
	}

	switch packet[0] {
	case msgChannelData, msgChannelExtendedData:
		return ch.handleData(packet)
	case msgChannelClose:
		if ch.mux.ownerCloses.Load() { // GATEKEEPER PATCH 20
			ch.peerClose()
			return nil
		}
		ch.sendMessage(channelCloseMsg{PeersID: ch.remoteId})
		ch.mux.chanList.remove(ch.localId)
		ch.close()
		return nil
	case msgChannelEOF:
		// RFC 4254 is mute on how EOF affects dataExt messages but
		// it is logical to signal EOF at the same time.
		ch.extPending.eof()
		ch.pending.eof()
		ch.notifyReader() // GATEKEEPER PATCH 7
		return nil
	}

	decoded, err := decode(packet)
	if err != nil {
		return err
	}

	switch msg := decoded.(type) {
	case *channelOpenFailureMsg:
		if err := ch.responseMessageReceived(); err != nil {
			return err
		}
		ch.mux.chanList.remove(msg.PeersID)
		ch.msg <- msg
	case *channelOpenConfirmMsg:
		if err := ch.responseMessageReceived(); err != nil {
			return err
		}
		if msg.MaxPacketSize < minPacketLength || msg.MaxPacketSize > 1<<31 {
			return fmt.Errorf("ssh: invalid MaxPacketSize %d from peer", msg.MaxPacketSize)
		}
		ch.remoteId = msg.MyID
		ch.maxRemotePayload = msg.MaxPacketSize
		ch.remoteWin.add(msg.MyWindow)
		ch.msg <- msg
	case *windowAdjustMsg:
		if !ch.remoteWin.add(msg.AdditionalBytes) {
			return fmt.Errorf("ssh: invalid window update for %d bytes", msg.AdditionalBytes)
		}
	case *channelRequestMsg:
		req := Request{
			Type:      msg.Request,
			WantReply: msg.WantReply,
			Payload:   msg.RequestSpecificData,
			ch:        ch,
		}

		ch.incomingRequests <- &req
		ch.notifyReader() // GATEKEEPER PATCH 7
	case *channelRequestSuccessMsg, *channelRequestFailureMsg:
		// Drop responses that arrive when no SendRequest is waiting, to
		// prevent a malicious peer from filling ch.msg and stalling the
		// mux read loop. The non-blocking send additionally protects the
		// loop if a well-behaved caller is slow to read.
		if !ch.sentRequestPending.Load() {
			return nil
		}
		select {
		case ch.msg <- msg:
		default:
		}
	default:
		// No other message type is expected on an established channel.
		return fmt.Errorf("ssh: unexpected message type %d on channel %d", packet[0], ch.localId)
	}
	return nil
}

func (m *mux) newChannel(chanType string, direction channelDirection, extraData []byte) *channel {
	pending := newBuffer()
	ch := &channel{
		remoteWin:          window{Cond: newCond()},
		myWindow:           channelWindowSize,
		windowSize:         channelWindowSize,
		maxIncomingPayload: channelMaxPacket,
		pending:            pending,
		extPending:         newBufferCond(pending.Cond), // GATEKEEPER PATCH 6
		direction:          direction,
		incomingRequests:   make(chan *Request, chanSize),
		msg:                make(chan interface{}, chanSize),
		chanType:           chanType,
		extraData:          extraData,
		mux:                m,
		packetPool:         make(map[uint32][]byte),
	}
	m.chanList.add(ch)
	return ch
}

var errUndecided = errors.New("ssh: must Accept or Reject channel")
var errDecidedAlready = errors.New("ssh: can call Accept or Reject only once")

type extChannel struct {
	code uint32
	ch   *channel
}

func (e *extChannel) Write(data []byte) (n int, err error) {
	return e.ch.WriteExtended(data, e.code)
}

func (e *extChannel) Read(data []byte) (n int, err error) {
	return e.ch.ReadExtended(data, e.code)
}

func (ch *channel) Accept() (Channel, <-chan *Request, error) {
	if ch.decided {
		return nil, nil, errDecidedAlready
	}
	confirm := channelOpenConfirmMsg{
		PeersID:       ch.remoteId,
		MyID:          ch.localId,
		MyWindow:      ch.myWindow,
		MaxPacketSize: ch.maxIncomingPayload,
	}
	ch.decided = true
	ch.established.Store(true)
	if err := ch.sendMessage(confirm); err != nil {
		return nil, nil, err
	}

	return ch, ch.incomingRequests, nil
}

// AcceptWithWindow is Accept with a receive window of size bytes instead of
// the default 2 MiB, when size is larger: the peer may then send up to size
// bytes ahead of what has been read, which is what sets the speed of a
// transfer over a long round trip. The caller bounds the memory this may
// take (size per channel, until read). It is reached through a type
// assertion on NewChannel:
//
//	nc.(interface {
//		AcceptWithWindow(uint32) (Channel, <-chan *Request, error)
//	})
//
// GATEKEEPER PATCH 3.
func (ch *channel) AcceptWithWindow(size uint32) (Channel, <-chan *Request, error) {
	if size > channelWindowSize && !ch.decided {
		ch.windowMu.Lock()
		ch.windowSize = size
		ch.myWindow = size
		ch.windowMu.Unlock()
	}
	return ch.Accept()
}

// DiscardStderr makes the channel drop the extended data (stderr) the peer
// sends from now on, crediting its window back at once, as it does for
// extended data of other types; Stderr().Read then blocks until EOF. It is
// for a peer whose stderr nobody reads, such as an SSH client's, which
// OpenSSH's sshd drops too: without it such data would fill the window and
// stall the channel. Reached through a type assertion on Channel:
//
//	ch.(interface{ DiscardStderr() })
//
// GATEKEEPER PATCH 5.
func (ch *channel) DiscardStderr() { ch.discardStderr.Store(true) }

func (ch *channel) Reject(reason RejectionReason, message string) error {
	if ch.decided {
		return errDecidedAlready
	}
	reject := channelOpenFailureMsg{
		PeersID:  ch.remoteId,
		Reason:   reason,
		Message:  message,
		Language: "en",
	}
	ch.decided = true
	err := ch.sendMessage(reject)

	// Remove the channel from the mux to prevent memory leaks.
	// Do not call ch.close() here: no goroutine holds a reference to a
	// rejected channel's internal channels (msg, incomingRequests), so
	// removing it from chanList is sufficient for GC. Calling close()
	// would race with the mux loop goroutine (handlePacket or dropAll),
	// causing a panic from closing an already-closed channel.
	ch.mux.chanList.remove(ch.localId)

	return err
}

func (ch *channel) Read(data []byte) (int, error) {
	if !ch.decided {
		return 0, errUndecided
	}
	return ch.ReadExtended(data, 0)
}

func (ch *channel) Write(data []byte) (int, error) {
	if !ch.decided {
		return 0, errUndecided
	}
	return ch.WriteExtended(data, 0)
}

func (ch *channel) CloseWrite() error {
	if !ch.decided {
		return errUndecided
	}
	ch.sentEOF = true
	return ch.sendMessage(channelEOFMsg{
		PeersID: ch.remoteId})
}

func (ch *channel) Close() error {
	if !ch.decided {
		return errUndecided
	}

	err := ch.sendMessage(channelCloseMsg{
		PeersID: ch.remoteId})
	// GATEKEEPER PATCH 20: this answers a CLOSE the peer sent while the
	// owner answers it; the channel then leaves the mux's list.
	ch.writeMu.Lock()
	both := ch.peerClosed
	ch.writeMu.Unlock()
	if both {
		ch.mux.chanList.drop(ch)
	}
	return err
}

// Extended returns an io.ReadWriter that sends and receives data on the given,
// SSH extended stream. Such streams are used, for example, for stderr.
func (ch *channel) Extended(code uint32) io.ReadWriter {
	if !ch.decided {
		return nil
	}
	return &extChannel{code, ch}
}

func (ch *channel) Stderr() io.ReadWriter {
	return ch.Extended(1)
}

func (ch *channel) SendRequest(name string, wantReply bool, payload []byte) (bool, error) {
	if !ch.decided {
		return false, errUndecided
	}

	if wantReply {
		// GATEKEEPER PATCH 20: a peer that sent CLOSE answers nothing
		// more; the request is not sent.
		ch.writeMu.Lock()
		closed := ch.peerClosed
		ch.writeMu.Unlock()
		if closed {
			return false, io.EOF
		}
		ch.sentRequestMu.Lock()
		defer ch.sentRequestMu.Unlock()

		// Open the gate so that responses arriving while this request is in
		// flight are allowed to reach ch.msg. Responses arriving while no
		// request is pending are dropped by handlePacket.
		ch.sentRequestPending.Store(true)
		defer ch.sentRequestPending.Store(false)

		// Drain any spurious responses that may have been buffered. This
		// prevents a previously buffered unexpected response from being
		// consumed instead of the actual response for this request.
	drain:
		for {
			select {
			case _, ok := <-ch.msg:
				if !ok {
					break drain
				}
			default:
				break drain
			}
		}
	}

	msg := channelRequestMsg{
		PeersID:             ch.remoteId,
		Request:             name,
		WantReply:           wantReply,
		RequestSpecificData: payload,
	}

	if err := ch.sendMessage(msg); err != nil {
		return false, err
	}

	if wantReply {
		m, ok := (<-ch.msg)
		if !ok {
			return false, io.EOF
		}
		switch m.(type) {
		case *channelRequestFailureMsg:
			return false, nil
		case *channelRequestSuccessMsg:
			return true, nil
		default:
			return false, fmt.Errorf("ssh: unexpected response to channel request: %#v", m)
		}
	}

	return false, nil
}

// ackRequest either sends an ack or nack to the channel request.
func (ch *channel) ackRequest(ok bool) error {
	if !ch.decided {
		return errUndecided
	}

	var msg interface{}
	if !ok {
		msg = channelRequestFailureMsg{
			PeersID: ch.remoteId,
		}
	} else {
		msg = channelRequestSuccessMsg{
			PeersID: ch.remoteId,
		}
	}
	return ch.sendMessage(msg)
}

func (ch *channel) ChannelType() string {
	return ch.chanType
}

func (ch *channel) ExtraData() []byte {
	return ch.extraData
}
