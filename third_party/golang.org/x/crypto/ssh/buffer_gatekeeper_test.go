// Copyright 2026 The gatekeeper authors. GATEKEEPER PATCH 2: tests of the
// packet pool and of small writes gathered in chunks.

package ssh

import (
	"bytes"
	"io"
	"testing"
)

// TestPacketBufPooledOnlyForBulkData: only channel data packets of at
// least pooledPacketMin bytes take a pooled buffer; anything else gets a
// buffer of its own size, so no packet costs more than it did upstream.
func TestPacketBufPooledOnlyForBulkData(t *testing.T) {
	for _, tc := range []struct {
		name   string
		typ    byte
		size   int
		pooled bool
	}{
		{"full data packet", msgChannelData, 32768 + 9, true},
		{"stderr packet", msgChannelExtendedData, 30000, true},
		{"small data packet", msgChannelData, 2048, false},
		{"data just below the threshold", msgChannelData, pooledPacketMin - 1, false},
		{"ignore message", msgIgnore, 30000, false},
		{"channel open", msgChannelOpen, 30000, false},
		{"too large to pool", msgChannelData, pooledPacketSize + 1, false},
	} {
		p := make([]byte, tc.size)
		p[0] = tc.typ
		buf := newPacketBuf(p)
		if len(buf) != tc.size {
			t.Errorf("%s: len %d, want %d", tc.name, len(buf), tc.size)
		}
		if got := pooledArray(buf) != nil; got != tc.pooled {
			t.Errorf("%s: pooled %v, want %v", tc.name, got, tc.pooled)
		}
	}
}

// TestBufferGathersSmallWrites: one-byte writes share chunks instead of an
// element each, and every byte reads back in order, also when reads and
// writes interleave.
func TestBufferGathersSmallWrites(t *testing.T) {
	b := newBuffer()
	var want bytes.Buffer
	for i := range 2000 {
		p := []byte{byte(i)}
		b.write(p)
		p[0] = 0xff // the buffer must hold its own copy
		want.WriteByte(byte(i))
		if i == 700 {
			got := make([]byte, 300)
			if n, _ := b.Read(got); n != 300 || !bytes.Equal(got, want.Next(300)) {
				t.Fatalf("interleaved read: %d bytes, %v", n, got[:n])
			}
		}
	}
	elements := 0
	for e := b.head; e != nil; e = e.next {
		elements++
	}
	if max := 2 + 2000/smallChunk + 1; elements > max {
		t.Errorf("2000 one-byte writes took %d elements, want at most %d", elements, max)
	}
	b.eof()
	got, err := io.ReadAll(readerFunc(b.Read))
	if err != nil || !bytes.Equal(got, want.Bytes()) {
		t.Errorf("read back %d bytes (err %v), want %d in order", len(got), err, want.Len())
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestDrainedPacketGoesBack: once its data has been read, a packet is let
// go (a pooled one back to the pool) even when it is the buffer's last
// element, which stays its head until more data comes: an idle channel
// after a transfer held one for good. GATEKEEPER PATCH 13.
func TestDrainedPacketGoesBack(t *testing.T) {
	b := newBuffer()
	pkt := newPacketBuf(append([]byte{msgChannelData}, make([]byte, 30000)...))
	if pooledArray(pkt) == nil {
		t.Fatal("a 30000-byte data packet is not pooled")
	}
	b.writePacket(pkt[9:], pkt)
	got := make([]byte, 40000)
	if n, err := b.Read(got); n != len(pkt)-9 || err != nil {
		t.Fatalf("Read: %d bytes, %v", n, err)
	}
	if b.head != b.tail || b.head.pooled != nil || b.head.buf != nil {
		t.Fatalf("after the read the buffer still holds the packet (pooled %v)", b.head.pooled != nil)
	}
	// The same for a packet that was not pooled (under pooledPacketMin).
	mid := make([]byte, 5000)
	b.writePacket(mid, nil)
	if n, err := b.Read(got); n != len(mid) || err != nil {
		t.Fatalf("Read: %d bytes, %v", n, err)
	}
	if b.head != b.tail || b.head.buf != nil {
		t.Fatalf("after the read the buffer still holds a %d-byte array", cap(b.head.buf))
	}
	b.write([]byte("more"))
	if n, _ := b.Read(got); string(got[:n]) != "more" {
		t.Fatalf("read %q after the drained packet, want \"more\"", got[:n])
	}
}
