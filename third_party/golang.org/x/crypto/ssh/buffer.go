// Copyright 2012 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package ssh

import (
	"io"
	"sync"
)

// buffer provides a linked list buffer for data exchange
// between producer and consumer. Theoretically the buffer is
// of unlimited capacity as it does no allocation of its own.
type buffer struct {
	// protects concurrent access to head, tail and closed
	*sync.Cond

	head *element // the buffer that will be read first
	tail *element // the buffer that will be read last

	closed bool

	// lent is set while ReadAnyTo has handed the bytes at the head out
	// with the lock released; every other read waits until it is over
	// (GATEKEEPER PATCH 15). A second reader would otherwise drain the
	// element and give its pooled array back while it is still read.
	lent bool
}

// An element represents a single link in a linked list.
type element struct {
	buf  []byte
	next *element
	// GATEKEEPER PATCH 2. pooled, if set, is the packetPool array buf is
	// part of, given back once buf has been read. owned marks a chunk
	// this buffer allocated for small writes (see writePacket).
	pooled *pooledPacket
	owned  bool
}

// smallChunk is the size of the chunks small writes are gathered in.
// GATEKEEPER PATCH 2.
const smallChunk = 512

// newBuffer returns an empty buffer that is not closed.
func newBuffer() *buffer {
	return newBufferCond(newCond())
}

// newBufferCond is newBuffer sharing c with other buffers, so that one
// reader can wait for data in any of them (see channel.ReadAny). Writers
// wake every waiter, since the one c wakes may wait on another buffer.
// GATEKEEPER PATCH 6.
func newBufferCond(c *sync.Cond) *buffer {
	e := new(element)
	b := &buffer{
		Cond: c,
		head: e,
		tail: e,
	}
	return b
}

// write makes buf available for Read to receive.
// buf must not be modified after the call to write.
func (b *buffer) write(buf []byte) {
	b.writePacket(buf, nil)
}

// writePacket is write of buf, a part of packet. A packet from packetPool
// goes back to it once buf has been read; packet must be a data packet as
// readPacket returned it (see pooledArray), or nil. A small buf is copied into a
// chunk of smallChunk bytes shared with the small writes before and after
// it: queued as one element each, a peer's one-byte packets would cost
// some 50 bytes of memory per byte of window. GATEKEEPER PATCH 2.
func (b *buffer) writePacket(buf, packet []byte) {
	b.Cond.L.Lock()
	defer b.Cond.L.Unlock()
	defer b.Cond.Broadcast() // GATEKEEPER PATCH 6: was Signal
	if len(buf) <= smallChunk/4 {
		t := b.tail
		if !t.owned || cap(t.buf)-len(t.buf) < len(buf) {
			t = &element{buf: make([]byte, 0, smallChunk), owned: true}
			b.tail.next = t
			b.tail = t
		}
		t.buf = append(t.buf, buf...)
		return
	}
	e := &element{buf: buf, pooled: pooledArray(packet)}
	b.tail.next = e
	b.tail = e
}

// eof closes the buffer. Reads from the buffer once all
// the data has been consumed will receive io.EOF.
func (b *buffer) eof() {
	b.Cond.L.Lock()
	b.closed = true
	b.Cond.Broadcast() // GATEKEEPER PATCH 6: was Signal
	b.Cond.L.Unlock()
}

// Read reads data from the internal buffer in buf.  Reads will block
// if no data is available, or until the buffer is closed.
func (b *buffer) Read(buf []byte) (n int, err error) {
	b.Cond.L.Lock()
	defer b.Cond.L.Unlock()

	for {
		if n, ok, err := b.readLocked(buf); ok {
			return n, err
		}
		// out of buffers, wait for producer
		b.Cond.Wait()
	}
}

// hasData reports whether b holds unread bytes; b.Cond.L must be held.
// GATEKEEPER PATCH 7.
func (b *buffer) hasData() bool {
	if b.lent {
		return false // not for now; see lent
	}
	for e := b.head; ; e = e.next {
		if len(e.buf) > 0 {
			return true
		}
		if e == b.tail {
			return false
		}
	}
}

// readLocked is Read without the waiting, with b.Cond.L held: ok is false
// when Read would wait. GATEKEEPER PATCH 6 (split out of Read).
func (b *buffer) readLocked(buf []byte) (n int, ok bool, err error) {
	if b.lent && len(buf) > 0 {
		return 0, false, nil // see lent
	}
	for len(buf) > 0 {
		// if there is data in b.head, copy it
		if p := b.peekLocked(); len(p) > 0 {
			r := copy(buf, p)
			b.consumeLocked(r)
			buf = buf[r:]
			n += r
			continue
		}

		// if at least one byte has been copied, return
		if n > 0 {
			break
		}

		// if nothing was read, and there is nothing outstanding
		// check to see if the buffer is closed.
		if b.closed {
			return 0, true, io.EOF
		}
		return 0, false, nil
	}
	return n, true, nil
}

// peekLocked returns the bytes at the head of b, the rest of one packet
// (or of a chunk of small writes), without taking them out; nil when b is
// empty. b.Cond.L must be held. The bytes stay valid until consumeLocked
// drains them, also while the lock is released: writers only append
// elements, or, to a chunk of small writes at the tail, bytes after the
// ones returned. GATEKEEPER PATCH 15 (split out of readLocked).
func (b *buffer) peekLocked() []byte {
	// A drained head has been let go (consumeLocked); move past it.
	for len(b.head.buf) == 0 && b.head != b.tail {
		b.head = b.head.next
	}
	return b.head.buf
}

// consumeLocked takes the first n bytes that peekLocked returned out of b,
// with b.Cond.L held. GATEKEEPER PATCH 15 (split out of readLocked).
func (b *buffer) consumeLocked(n int) {
	e := b.head
	e.buf = e.buf[n:]
	// GATEKEEPER PATCH 13: a drained packet is let go at once (a pooled
	// one back to the pool), also when it is the last element, which
	// stays the head until more data comes: for an idle channel after a
	// transfer, for good. A chunk of small writes is kept for the next
	// ones.
	if len(e.buf) == 0 && !e.owned {
		if e.pooled != nil {
			packetPool.Put(e.pooled)
			e.pooled = nil
		}
		e.buf = nil
	}
}
