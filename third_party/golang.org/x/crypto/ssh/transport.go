// Copyright 2011 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package ssh

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"sync"
	"unsafe"
)

// debugTransport if set, will print packet types as they go over the
// wire. No message decoding is done, to minimize the impact on timing.
const debugTransport = false

// packetConn represents a transport that implements packet based
// operations.
type packetConn interface {
	// Encrypt and send a packet of data to the remote peer.
	writePacket(packet []byte) error

	// Read a packet from the connection. The read is blocking,
	// i.e. if error is nil, then the returned byte slice is
	// always non-empty.
	readPacket() ([]byte, error)

	// Close closes the write-side of the connection.
	Close() error
}

// transport is the keyingTransport that implements the SSH packet
// protocol.
type transport struct {
	reader connectionState
	writer connectionState

	bufReader *packetReader // GATEKEEPER PATCH 12: was a *bufio.Reader
	bufWriter *bufio.Writer
	rand      io.Reader
	isClient  bool
	io.Closer

	strictMode     bool
	initialKEXDone bool
}

// packetCipher represents a combination of SSH encryption/MAC
// protocol.  A single instance should be used for one direction only.
type packetCipher interface {
	// writeCipherPacket encrypts the packet and writes it to w. The
	// contents of the packet are generally scrambled.
	writeCipherPacket(seqnum uint32, w io.Writer, rand io.Reader, packet []byte) error

	// readCipherPacket reads and decrypts a packet of data. The
	// returned packet may be overwritten by future calls of
	// readPacket.
	readCipherPacket(seqnum uint32, r io.Reader) ([]byte, error)
}

// connectionState represents one side (read or write) of the
// connection. This is necessary because each direction has its own
// keys, and can even have its own algorithms
type connectionState struct {
	packetCipher
	seqNum           uint32
	dir              direction
	pendingKeyChange chan packetCipher
}

func (t *transport) setStrictMode() error {
	if t.reader.seqNum != 1 {
		return errors.New("ssh: sequence number != 1 when strict KEX mode requested")
	}
	t.strictMode = true
	return nil
}

func (t *transport) setInitialKEXDone() {
	t.initialKEXDone = true
}

// prepareKeyChange sets up key material for a keychange. The key changes in
// both directions are triggered by reading and writing a msgNewKey packet
// respectively.
func (t *transport) prepareKeyChange(algs *NegotiatedAlgorithms, kexResult *kexResult) error {
	ciph, err := newPacketCipher(t.reader.dir, algs.Read, kexResult)
	if err != nil {
		return err
	}
	t.reader.pendingKeyChange <- ciph

	ciph, err = newPacketCipher(t.writer.dir, algs.Write, kexResult)
	if err != nil {
		return err
	}
	t.writer.pendingKeyChange <- ciph

	return nil
}

func (t *transport) printPacket(p []byte, write bool) {
	if len(p) == 0 {
		return
	}
	who := "server"
	if t.isClient {
		who = "client"
	}
	what := "read"
	if write {
		what = "write"
	}

	log.Println(what, who, p[0])
}

// waitReadable waits for the next packet's first bytes (or the
// connection's end), without reading past what one read gives.
//
// GATEKEEPER PATCH 19: a connection's reader (the mux's loop) waits here
// between packets, at the top of its stack, instead of in the cipher's
// readCipherPacket under the frames of the whole read path (about 1.5 KiB
// with AES-GCM, 1.9 with ChaCha20-Poly1305). The runtime halves an idle
// goroutine's stack only while less than a quarter of it is in use, 800
// bytes of reserve included: a loop that once grew to 8 KiB (handling a
// channel open, say) stayed at 8 waiting down there, and goes back to 4
// waiting here.
func (t *transport) waitReadable() {
	t.bufReader.fill()
}

// Read and decrypt next packet.
func (t *transport) readPacket() (p []byte, err error) {
	for {
		p, err = t.reader.readPacket(t.bufReader, t.strictMode)
		if err != nil {
			break
		}
		// in strict mode we pass through DEBUG and IGNORE packets only during the initial KEX
		if len(p) == 0 || (t.strictMode && !t.initialKEXDone) || (p[0] != msgIgnore && p[0] != msgDebug) {
			break
		}
	}
	if debugTransport {
		t.printPacket(p, false)
	}

	return p, err
}

func (s *connectionState) readPacket(r io.Reader, strictMode bool) ([]byte, error) {
	packet, err := s.packetCipher.readCipherPacket(s.seqNum, r)
	s.seqNum++
	if err == nil && len(packet) == 0 {
		err = errors.New("ssh: zero length packet")
	}

	if len(packet) > 0 {
		switch packet[0] {
		case msgNewKeys:
			select {
			case cipher := <-s.pendingKeyChange:
				s.packetCipher = cipher
				if strictMode {
					s.seqNum = 0
				}
			default:
				return nil, errors.New("ssh: got bogus newkeys message")
			}

		case msgDisconnect:
			// Transform a disconnect message into an
			// error. Since this is lowest level at which
			// we interpret message types, doing it here
			// ensures that we don't have to handle it
			// elsewhere.
			var msg disconnectMsg
			if err := Unmarshal(packet, &msg); err != nil {
				return nil, err
			}
			return nil, &msg
		}
	}

	// GATEKEEPER PATCH 10: a packet the cipher read into a pooled array
	// is handed on in it when it is bulk channel data, not copied; any
	// other is copied out below and the array goes back to the pool.
	var spent *pooledPacket
	if pr, ok := s.packetCipher.(pooledReader); ok && err == nil {
		if spent = pr.handOver(packet); spent != nil && pooledData(packet) {
			return packet, nil
		}
	}

	// The packet may point to an internal buffer, so copy the
	// packet out here.
	fresh := newPacketBuf(packet)
	copy(fresh, packet)
	if spent != nil {
		packetPool.Put(spent)
	}

	return fresh, err
}

// GATEKEEPER PATCH 2: packet buffers for bulk data are reused.
//
// Every packet read is copied out of the cipher's buffer into a buffer of
// its own, because a channel's data stays queued in it until the channel is
// read. With a fresh allocation per 32 KiB packet, a relay moving hundreds
// of MB/s spends more time in the garbage collector, in returning pages to
// the OS and in faulting them back in than in copying. Bulk data packets
// take a buffer from packetPool instead, and a channel's buffer gives it
// back once Read has consumed it (see buffer.Read); any other packet gets a
// buffer of its own size and is left to the collector, as before.
//
// Only data packets of at least pooledPacketMin bytes are pooled: a pooled
// buffer costs 40 KiB (33,096 bytes round up to whole pages), and a peer
// that filled a channel's window with small packets must not make the
// window hold many times its size in memory (at most 40/24 = 1.7 times,
// against 1.25 for full packets and the same for unpooled ones).

const (
	// pooledPacketSize holds a full channel data packet: the largest
	// payload we accept (channelMaxPacket) and its header, and, after
	// it, room for the start of the next packet, which the cipher reads
	// with it (GATEKEEPER PATCH 12: packetReader.readFull; the array
	// still fits the same 40 KiB).
	pooledPacketSize = channelMaxPacket + 64 + transportBufSize
	// pooledPacketMin is the smallest data packet that takes a pooled
	// buffer.
	pooledPacketMin = 24 << 10
)

// pooledPacket is the array behind a pooled packet buffer. The packet
// starts at packetHead (patch 10).
type pooledPacket = [packetHead + pooledPacketSize]byte

var packetPool = sync.Pool{New: func() any { return new(pooledPacket) }}

// newPacketBuf returns a buffer of len(packet) bytes for a copy of packet,
// from packetPool when it is a channel data packet of pooledPacketMin to
// pooledPacketSize bytes.
func newPacketBuf(packet []byte) []byte {
	n := len(packet)
	if !pooledData(packet) {
		return make([]byte, n)
	}
	return packetPool.Get().(*pooledPacket)[packetHead : packetHead+n]
}

// pooledData reports whether packet is channel data that is kept in a
// pooled array: pooledPacketMin to pooledPacketSize bytes.
func pooledData(packet []byte) bool {
	n := len(packet)
	return n >= pooledPacketMin && n <= pooledPacketSize &&
		(packet[0] == msgChannelData || packet[0] == msgChannelExtendedData)
}

// pooledArray returns the pooled array p, a data packet from readPacket,
// is a slice of, or nil when p did not come from packetPool. Such a packet
// starts at packetHead of its array, so its capacity is pooledPacketSize;
// any other data packet is smaller than pooledPacketMin or larger than
// pooledPacketSize, and has a capacity of its own length.
//
// p must be a data packet as readPacket returned it, never resliced: the
// capacity is the only mark of a pooled array, and for any other slice of
// that capacity the array computed here would begin before the slice's own
// allocation.
func pooledArray(p []byte) *pooledPacket {
	if cap(p) != pooledPacketSize {
		return nil
	}
	// The array begins packetHead bytes before p, within the same
	// allocation.
	return (*pooledPacket)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(p)), -packetHead))
}

// GATEKEEPER PATCH 10: channel data is decrypted in its pooled buffer.
//
// Patch 2 copies each data packet out of the cipher's buffer into a pooled
// one: a 32 KiB memmove per packet, about a tenth of a relay's CPU. The
// AES-GCM and chacha20-poly1305 readers now read a packet that may be
// channel data (pooledPacketMin bytes or more, and small enough to fit)
// straight into a pooled array, placed so that the packet proper starts at
// packetHead, where newPacketBuf's copies start too. If it is channel data
// that newPacketBuf would pool, readPacket hands that array on instead of
// copying it; if not, the packet is copied out and the array goes back to
// the pool. Either way the cipher takes another for its next large packet,
// and holds none in between.

// packetHead is where a packet starts in its pooled array: room for what
// a cipher reads before the packet (chacha20-poly1305: 4 bytes of length
// and 1 of padding length; AES-GCM: the padding length).
const packetHead = 8

// pooledReader is a packetCipher that reads large packets into a pooled
// array.
type pooledReader interface {
	// handOver returns the cipher's pooled array if packet, just
	// returned by readCipherPacket, is in it, and nil otherwise. The
	// array is then the caller's: the cipher will not touch it again.
	handOver(packet []byte) *pooledPacket
}

// pooledReadBuf is the pooled array a cipher reads its large packets
// into, nil until one is needed and after it was handed over.
type pooledReadBuf struct {
	arr *pooledPacket
}

// pooledReadFits reports whether a packet whose length field says length
// (padding length byte, payload and padding) is read into a pooled array:
// it fits with its tag, and is larger than the buffer a cipher keeps
// (keptBufMax). GATEKEEPER PATCH 13: patch 10 took only packets that may
// be pooled channel data (pooledPacketMin), and the cipher kept a buffer
// the size of the largest other packet for the connection's life.
func pooledReadFits(length, tagSize uint32) bool {
	return length+tagSize > keptBufMax && length+tagSize <= pooledPacketSize
}

// readBuf returns n bytes for a cipher to read a packet into: when pooled,
// from the pooled array, head bytes before packetHead (taking an array from
// packetPool when the reader has none); otherwise *own, grown when it is
// too small, or, beyond keptBufMax, a buffer that is not kept.
func (b *pooledReadBuf) readBuf(own *[]byte, pooled bool, head, n int) []byte {
	if !pooled {
		return ownBuf(own, n)
	}
	if b.arr == nil {
		b.arr = packetPool.Get().(*pooledPacket)
	}
	return b.arr[packetHead-head : packetHead-head+n]
}

func (b *pooledReadBuf) handOver(packet []byte) *pooledPacket {
	if b.arr == nil || len(packet) == 0 || cap(packet) != pooledPacketSize || &packet[0] != &b.arr[packetHead] {
		return nil
	}
	arr := b.arr
	b.arr = nil
	return arr
}

func (t *transport) writePacket(packet []byte) error {
	if debugTransport {
		t.printPacket(packet, true)
	}
	return t.writer.writePacket(t.bufWriter, t.rand, packet, t.strictMode)
}

func (s *connectionState) writePacket(w *bufio.Writer, rand io.Reader, packet []byte, strictMode bool) error {
	changeKeys := len(packet) > 0 && packet[0] == msgNewKeys

	err := s.packetCipher.writeCipherPacket(s.seqNum, w, rand, packet)
	if err != nil {
		return err
	}
	if err = w.Flush(); err != nil {
		return err
	}
	s.seqNum++
	if changeKeys {
		select {
		case cipher := <-s.pendingKeyChange:
			s.packetCipher = cipher
			if strictMode {
				s.seqNum = 0
			}
		default:
			panic("ssh: no key material for msgNewKeys")
		}
	}
	return err
}

// GATEKEEPER PATCH 14: channel data copied once.
//
// Upstream laid out each channel data packet (its header and the data) in
// a buffer of its own, which the cipher then copied into its buffer to
// encrypt it: two copies of every byte a relay forwards. With an AEAD
// cipher the data now goes straight from the writer's slice into the
// buffer it is encrypted in.

// packetSealer is a packetCipher that can lay out and encrypt a packet in
// a buffer the caller gives, from a payload given in two parts.
type packetSealer interface {
	// sealedSize is the size on the wire of a packet of n payload bytes.
	sealedSize(n int) int
	// sealPacket lays out the packet whose payload is head followed by
	// data in buf (at least sealedSize bytes), encrypted, and returns
	// its size.
	sealPacket(seqNum uint32, buf []byte, rand io.Reader, head, data []byte) (int, error)
}

// dataWriter is a packetConn that can write a packet whose payload comes
// in two parts without joining them first.
type dataWriter interface {
	// writeData writes the packet whose payload is head followed by
	// data. It reports false, having written nothing, when it cannot;
	// the caller then joins them and calls writePacket.
	writeData(head, data []byte) (bool, error)
}

func (t *transport) writeData(head, data []byte) (bool, error) {
	if debugTransport {
		return false, nil // writePacket prints it
	}
	return t.writer.writeData(t.bufWriter, t.rand, head, data)
}

// writeData is writePacket of the payload head followed by data (see
// dataWriter). It declines when the cipher cannot seal into a buffer and
// for packets that fit the buffer the cipher keeps (small ones, where the
// copy costs nothing) or too large for a pooled array.
func (s *connectionState) writeData(w *bufio.Writer, rand io.Reader, head, data []byte) (bool, error) {
	sealer, ok := s.packetCipher.(packetSealer)
	if !ok {
		return false, nil
	}
	size := sealer.sealedSize(len(head) + len(data))
	if !pooledWriteFits(size) {
		return false, nil
	}
	arr := packetPool.Get().(*pooledPacket)
	defer packetPool.Put(arr)
	n, err := sealer.sealPacket(s.seqNum, arr[:size], rand, head, data)
	if err != nil {
		return true, err
	}
	if _, err := w.Write(arr[:n]); err != nil {
		return true, err
	}
	if err := w.Flush(); err != nil {
		return true, err
	}
	s.seqNum++
	return true, nil
}

// packetReader is the transport's read buffer (GATEKEEPER PATCH 12): Read
// is bufio.Reader's, and readFull reads the rest of a large packet straight
// into the packet's buffer together with what follows it, up to the size of
// the buffer, which keeps that for the next packet. With bufio.Reader a
// stream of bulk packets took two read system calls per packet: one filled
// the buffer with the length and the first bytes, one read the rest
// directly. Now the length and those bytes come from the previous read.
type packetReader struct {
	rd   io.Reader
	buf  []byte
	r, w int   // buf[r:w] is unread
	err  error // from rd, returned once buf is drained
}

func newPacketReader(rd io.Reader) *packetReader {
	return &packetReader{rd: rd, buf: make([]byte, transportBufSize)}
}

// fill waits for the connection to have something to read, and reads it
// into the empty buffer; it does nothing if the buffer holds something or
// an error. Read fills the buffer with it, and GATEKEEPER PATCH 19 calls
// it to wait between packets (transport.waitReadable).
func (b *packetReader) fill() {
	if b.r < b.w || b.err != nil {
		return
	}
	b.r, b.w = 0, 0
	n, err := b.rd.Read(b.buf)
	if n < 0 || n > len(b.buf) {
		n, err = 0, errors.New("ssh: invalid read count")
	}
	b.w, b.err = n, err
}

// readErr returns b.err and clears it, as bufio.Reader does.
func (b *packetReader) readErr() error {
	err := b.err
	b.err = nil
	return err
}

// Read reads what is buffered; with nothing buffered, it reads straight
// into p when p is at least as large as the buffer, else fills the buffer
// with one read. As bufio.Reader's Read.
func (b *packetReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		if b.r < b.w {
			return 0, nil
		}
		return 0, b.readErr()
	}
	if b.r == b.w {
		if b.err != nil {
			return 0, b.readErr()
		}
		if len(p) >= len(b.buf) {
			return b.rd.Read(p)
		}
		b.fill()
		if b.r == b.w {
			if b.err == nil {
				// As io.ReadFull would: a reader that returns
				// nothing, and no error, is asked again.
				return 0, nil
			}
			return 0, b.readErr()
		}
	}
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	return n, nil
}

// readFull reads exactly len(p) bytes into p, as io.ReadFull. When it reads
// from the connection, it also asks for the bytes after p, as many as fit
// in both p's capacity and the buffer, and keeps those it gets in the buffer:
// p[len(p):cap(p)] is scratch space to the caller.
func (b *packetReader) readFull(p []byte) error {
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	ahead := min(cap(p)-len(p), len(b.buf))
	for empty := 0; n < len(p); {
		if b.err != nil {
			err := b.readErr()
			if err == io.EOF && n > 0 {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		// The buffer is empty here.
		m, err := b.rd.Read(p[n : len(p)+ahead])
		if m < 0 || m > len(p)+ahead-n {
			return errors.New("ssh: invalid read count")
		}
		if rest := len(p) - n; m > rest {
			b.r, b.w = 0, copy(b.buf, p[len(p):n+m])
			m = rest
		}
		n += m
		b.err = err
		if m > 0 {
			empty = 0
		} else if empty++; empty == 100 {
			// As bufio.Reader: a reader that keeps returning
			// nothing, and no error, is broken.
			return io.ErrNoProgress
		}
	}
	return nil
}

// readFullFrom is io.ReadFull(r, p), reading ahead (see readFull) when r is
// the transport's packetReader. GATEKEEPER PATCH 12.
func readFullFrom(r io.Reader, p []byte) error {
	if pr, ok := r.(*packetReader); ok {
		return pr.readFull(p)
	}
	_, err := io.ReadFull(r, p)
	return err
}

// keptBufMax is the largest buffer a cipher or a channel keeps for the
// packets it writes or reads. GATEKEEPER PATCH 13: a larger packet is laid out in an
// array from packetPool that goes back right after the write (writeBuf),
// so that a connection that once moved bulk data does not keep 40 KiB per
// cipher and per channel for the rest of its life: an idle session after
// a 1 MiB download held 207 KiB, against 58 for one that moved nothing.
// Keystrokes, lines of output and window adjustments fit.
const keptBufMax = 2 << 10

// ownBuf returns n bytes of *own, grown to fit, when n is at most
// keptBufMax; a larger buffer is allocated and not kept. GATEKEEPER PATCH
// 13.
func ownBuf(own *[]byte, n int) []byte {
	if n > keptBufMax {
		return make([]byte, n)
	}
	if cap(*own) < n {
		*own = make([]byte, n)
	}
	*own = (*own)[:n]
	return *own
}

// pooledWriteFits reports whether a packet of n bytes is laid out in a
// pooled array to be written: over keptBufMax, and not too large for one.
func pooledWriteFits(n int) bool {
	return n > keptBufMax && n <= len(pooledPacket{})
}

// writeBuf returns n bytes to lay out a packet in: a pooled array (arr,
// which the caller gives back to packetPool once written) when n is over
// keptBufMax and fits one, else ownBuf's. GATEKEEPER PATCH 13.
func writeBuf(own *[]byte, n int) (buf []byte, arr *pooledPacket) {
	if pooledWriteFits(n) {
		arr = packetPool.Get().(*pooledPacket)
		return arr[:n], arr
	}
	return ownBuf(own, n), nil
}

// transportBufSize is the size of a transport's read and write buffers.
// GATEKEEPER PATCH 4: they are most of what an idle connection holds, and
// larger ones save nothing: every packet written is flushed at once, AEAD
// ciphers write a packet in one call, and a read that wants more than the
// buffer holds (any bulk packet) goes past it straight to the connection.
// A keystroke, a line of output or a window adjustment still fits (a
// larger packet takes one more read system call).
const transportBufSize = 256

func newTransport(rwc io.ReadWriteCloser, rand io.Reader, isClient bool) *transport {
	t := &transport{
		// GATEKEEPER PATCH 4: 256 bytes instead of bufio's 4 KiB each way.
		bufReader: newPacketReader(rwc),
		bufWriter: bufio.NewWriterSize(rwc, transportBufSize),
		rand:      rand,
		reader: connectionState{
			packetCipher:     &streamPacketCipher{cipher: noneCipher{}},
			pendingKeyChange: make(chan packetCipher, 1),
		},
		writer: connectionState{
			packetCipher:     &streamPacketCipher{cipher: noneCipher{}},
			pendingKeyChange: make(chan packetCipher, 1),
		},
		Closer: rwc,
	}
	t.isClient = isClient

	if isClient {
		t.reader.dir = serverKeys
		t.writer.dir = clientKeys
	} else {
		t.reader.dir = clientKeys
		t.writer.dir = serverKeys
	}

	return t
}

type direction struct {
	ivTag     []byte
	keyTag    []byte
	macKeyTag []byte
}

var (
	serverKeys = direction{[]byte{'B'}, []byte{'D'}, []byte{'F'}}
	clientKeys = direction{[]byte{'A'}, []byte{'C'}, []byte{'E'}}
)

// setupKeys sets the cipher and MAC keys from kex.K, kex.H and sessionId, as
// described in RFC 4253, section 6.4. direction should either be serverKeys
// (to setup server->client keys) or clientKeys (for client->server keys).
func newPacketCipher(d direction, algs DirectionAlgorithms, kex *kexResult) (packetCipher, error) {
	cipherMode := cipherModes[algs.Cipher]
	if cipherMode == nil {
		return nil, fmt.Errorf("ssh: unsupported cipher %v", algs.Cipher)
	}

	iv := make([]byte, cipherMode.ivSize)
	key := make([]byte, cipherMode.keySize)

	generateKeyMaterial(iv, d.ivTag, kex)
	generateKeyMaterial(key, d.keyTag, kex)

	var macKey []byte
	if !aeadCiphers[algs.Cipher] {
		macMode := macModes[algs.MAC]
		macKey = make([]byte, macMode.keySize)
		generateKeyMaterial(macKey, d.macKeyTag, kex)
	}

	return cipherModes[algs.Cipher].create(key, iv, macKey, algs)
}

// generateKeyMaterial fills out with key material generated from tag, K, H
// and sessionId, as specified in RFC 4253, section 7.2.
func generateKeyMaterial(out, tag []byte, r *kexResult) {
	var digestsSoFar []byte

	h := r.Hash.New()
	for len(out) > 0 {
		h.Reset()
		h.Write(r.K)
		h.Write(r.H)

		if len(digestsSoFar) == 0 {
			h.Write(tag)
			h.Write(r.SessionID)
		} else {
			h.Write(digestsSoFar)
		}

		digest := h.Sum(nil)
		n := copy(out, digest)
		out = out[n:]
		if len(out) > 0 {
			digestsSoFar = append(digestsSoFar, digest...)
		}
	}
}

const packageVersion = "SSH-2.0-Go"

// Sends and receives a version line.  The versionLine string should
// be US ASCII, start with "SSH-2.0-", and should not include a
// newline. exchangeVersions returns the other side's version line.
func exchangeVersions(rw io.ReadWriter, versionLine []byte) (them []byte, err error) {
	return exchangePeerVersions(rw, versionLine, false)
}

// exchangePeerVersions is exchangeVersions; fromClient as for
// readPeerVersion. GATEKEEPER PATCH 22.
func exchangePeerVersions(rw io.ReadWriter, versionLine []byte, fromClient bool) (them []byte, err error) {
	// Contrary to the RFC, we do not ignore lines that don't
	// start with "SSH-2.0-" to make the library usable with
	// nonconforming servers.
	for _, c := range versionLine {
		// The spec disallows non US-ASCII chars, and
		// specifically forbids null chars.
		if c < 32 {
			return nil, errors.New("ssh: junk character in version line")
		}
	}
	if _, err = rw.Write(append(versionLine, '\r', '\n')); err != nil {
		return
	}

	them, err = readPeerVersion(rw, fromClient)
	return them, err
}

// maxVersionStringBytes is the maximum number of bytes that we'll
// accept as a version string. RFC 4253 section 4.2 limits this at 255
// chars
const maxVersionStringBytes = 255

// maxPreVersionLines is the maximum number of lines sent by the peer
// before the version string. Each of these lines is limited to a maximum
// of maxVersionStringBytes chars. Lines sent before the version string
// are silently ignored.
const maxPreVersionLines = 1024

// Read version string as specified by RFC 4253, section 4.2.
func readVersion(r io.Reader) ([]byte, error) {
	return readPeerVersion(r, false)
}

// LineBeforeVersionError is a server's error for a client that sent a line
// other than its version first. Raw is what it sent first, at most 16
// bytes (when the line was empty, as a PROXY protocol v2 header's
// signature starts, with the 10 bytes after it), so that a caller can tell
// what spoke: a load balancer's PROXY header, an HTTP client. Start is Raw
// without line ends, printable ASCII and others as '?', to log.
// GATEKEEPER PATCH 22.
type LineBeforeVersionError struct {
	Raw   []byte
	Start string
}

func (e *LineBeforeVersionError) Error() string {
	return fmt.Sprintf("ssh: the client sent %q before its version string", e.Start)
}

// lineBeforeVersion makes the LineBeforeVersionError of line, read from r
// up to its '\n' (dropped); an empty line gets up to 10 more bytes of r.
func lineBeforeVersion(line []byte, r io.Reader) error {
	raw := append(bytes.Clone(line), '\n')
	if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
		more := make([]byte, 10)
		n, _ := io.ReadFull(r, more)
		raw = append(raw, more[:n]...)
	}
	raw = raw[:min(len(raw), 16)]
	start := bytes.TrimRight(bytes.Clone(raw), "\r\n")
	for i, c := range start {
		if c < 0x20 || c > 0x7e {
			start[i] = '?'
		}
	}
	return &LineBeforeVersionError{Raw: raw, Start: string(start)}
}

// readPeerVersion is readVersion; fromClient (a server reading its client's
// version) refuses any line before the version, as OpenSSH's sshd does: RFC
// 4253 4.2 lets only a server send other lines first. Without it a load
// balancer's PROXY protocol v1 header sent to a gatekeeper not told to read
// it was skipped as such a line, and every client logged in with the
// balancer's address, which may be trusted. GATEKEEPER PATCH 22.
func readPeerVersion(r io.Reader, fromClient bool) ([]byte, error) {
	versionString := make([]byte, 0, 64)
	var ok bool
	var buf [1]byte

	for lines := 0; len(versionString) < maxVersionStringBytes && lines < maxPreVersionLines; {
		_, err := io.ReadFull(r, buf[:])
		if err != nil {
			return nil, err
		}
		// The RFC says that the version should be terminated with \r\n
		// but several SSH servers actually only send a \n.
		if buf[0] == '\n' {
			if !bytes.HasPrefix(versionString, []byte("SSH-")) {
				if fromClient { // GATEKEEPER PATCH 22
					return nil, lineBeforeVersion(versionString, r)
				}
				// RFC 4253 says we need to ignore all version string lines
				// except the one containing the SSH version.
				versionString = versionString[:0]
				lines++
				continue
			}
			ok = true
			break
		}

		// non ASCII chars are disallowed, but we are lenient,
		// since Go doesn't use null-terminated strings.

		// The RFC allows a comment after a space, however,
		// all of it (version and comments) goes into the
		// session hash.
		versionString = append(versionString, buf[0])
	}

	if !ok {
		return nil, errors.New("ssh: overflow reading version string")
	}

	// There might be a '\r' on the end which we should remove.
	if len(versionString) > 0 && versionString[len(versionString)-1] == '\r' {
		versionString = versionString[:len(versionString)-1]
	}
	return versionString, nil
}
