// Copyright 2026 The gatekeeper authors. Tests of GATEKEEPER PATCH 14
// (channel data copied once).

package ssh

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"testing"
)

// TestWriteDataSameBytes: writeData puts on the wire, byte for byte, what
// writePacket puts there for the joined payload, packet after packet, with
// the same sequence number after them, for the ciphers that can seal into a buffer; and it
// declines, writing nothing, for small packets, packets too large for a
// pooled array and any other cipher.
func TestWriteDataSameBytes(t *testing.T) {
	for _, name := range []string{CipherAES128GCM, CipherChaCha20Poly1305, CipherAES128CTR} {
		algs := DirectionAlgorithms{Cipher: name, MAC: HMACSHA256, compression: compressionNone}
		newState := func() *connectionState {
			c, err := newPacketCipher(clientKeys, algs, &kexResult{Hash: crypto.SHA256})
			if err != nil {
				t.Fatal(err)
			}
			return &connectionState{packetCipher: c, seqNum: 7}
		}
		for _, size := range []int{1, keptBufMax - 60, keptBufMax, 5000, 32768, 33000, 40000} {
			t.Run(fmt.Sprintf("%s/%d", name, size), func(t *testing.T) {
				head := make([]byte, 13)
				head[0] = msgChannelExtendedData
				binary.BigEndian.PutUint32(head[9:], uint32(size))
				data := make([]byte, size)
				rand.Read(data)
				pad := make([]byte, 3*300) // the padding: the same for both
				rand.Read(pad)

				// Three packets in a row: a nonce or counter moved
				// twice, or not at all, shows from the second.
				const packets = 3
				s := newState()
				var got bytes.Buffer
				gotW, gotPad := bufio.NewWriterSize(&got, transportBufSize), bytes.NewReader(pad)
				done, err := s.writeData(gotW, gotPad, head, data)
				if err != nil {
					t.Fatal(err)
				}
				sealable := name != CipherAES128CTR
				wantDone := sealable && size >= keptBufMax && size <= 33000
				if done != wantDone {
					t.Fatalf("writeData reported %v, want %v", done, wantDone)
				}
				if !done {
					if got.Len() != 0 || s.seqNum != 7 {
						t.Fatalf("declined, but wrote %d bytes and moved the sequence number to %d", got.Len(), s.seqNum)
					}
					return
				}
				for i := 1; i < packets; i++ {
					if done, err := s.writeData(gotW, gotPad, head, data); !done || err != nil {
						t.Fatalf("packet %d: writeData reported %v, %v", i+1, done, err)
					}
				}
				ref := newState()
				var want bytes.Buffer
				w, refPad := bufio.NewWriterSize(&want, transportBufSize), bytes.NewReader(pad)
				for range packets {
					if err := ref.writePacket(w, refPad, append(bytes.Clone(head), data...), false); err != nil {
						t.Fatal(err)
					}
				}
				if !bytes.Equal(got.Bytes(), want.Bytes()) || s.seqNum != ref.seqNum || s.seqNum != 7+packets {
					t.Fatalf("%d bytes and sequence number %d, want writePacket's %d bytes and %d",
						got.Len(), s.seqNum, want.Len(), ref.seqNum)
				}
			})
		}
	}
}

// TestChannelDataAcrossKeyExchanges: channel data and stderr of every size
// arrive whole and in order through real transports, while key exchanges
// come and go (writeData declines during one, and the packets are queued
// as upstream queues them); between key exchanges bulk data takes
// writeData's path.
func TestChannelDataAcrossKeyExchanges(t *testing.T) {
	for _, name := range []string{CipherAES128GCM, CipherChaCha20Poly1305} {
		t.Run(name, func(t *testing.T) {
			conf := &ClientConfig{HostKeyCallback: InsecureIgnoreHostKey()}
			conf.Ciphers = []string{name}
			trC, trS, err := handshakePair(conf, "addr", false)
			if err != nil {
				t.Fatal(err)
			}
			head := []byte{msgChannelData, 0, 0, 0, 0, 0, 0, 0x75, 0x30} // not msgIgnore: readPacket drops those
			if done, err := trC.writeData(head, make([]byte, 30000)); !done || err != nil {
				t.Fatalf("writeData between key exchanges: %v, %v; want it done", done, err)
			}
			if p, err := trS.readPacket(); err != nil || len(p) != 30009 {
				t.Fatalf("read %d bytes, %v; want the 30,009-byte packet", len(p), err)
			}

			trC.Close()
			trS.Close()

			// The channel part runs over whole connections (a mux over
			// bare handshake transports does not see the first key
			// exchange's msgNewKeys as a connection does).
			conn, client, server := channelOverConn(t, conf)
			hs := conn.(*connection).transport.(*handshakeTransport)

			sizes := []int{1, 100, keptBufMax, 5000, 32768, 32769, 70000, 300000}
			var data, stderr bytes.Buffer
			for i := 0; i < 6; i++ {
				for _, n := range sizes {
					p := make([]byte, n)
					rand.Read(p)
					data.Write(p)
					rand.Read(p)
					stderr.Write(p)
				}
			}
			var wg sync.WaitGroup
			write := func(w io.Writer, b []byte, rekey bool) {
				for i := 0; len(b) > 0; i++ {
					n := min(len(b), sizes[i%len(sizes)])
					if _, err := w.Write(b[:n]); err != nil {
						t.Error(err)
						return
					}
					b = b[n:]
					if rekey && i%5 == 0 {
						hs.requestKeyExchange()
					}
				}
			}
			wg.Go(func() { write(client, data.Bytes(), true) })
			wg.Go(func() { write(client.Stderr(), stderr.Bytes(), false) })
			var gotData, gotStderr []byte
			wg.Go(func() {
				var err error
				if gotStderr, err = io.ReadAll(io.LimitReader(server.Stderr(), int64(stderr.Len()))); err != nil {
					t.Error(err)
				}
			})
			if gotData, err = io.ReadAll(io.LimitReader(server, int64(data.Len()))); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			if !bytes.Equal(gotData, data.Bytes()) || !bytes.Equal(gotStderr, stderr.Bytes()) {
				t.Fatalf("received %d bytes of data and %d of stderr, not the %d and %d sent",
					len(gotData), len(gotStderr), data.Len(), stderr.Len())
			}
		})
	}
}

// channelOverConn connects a client with conf to a server over a pipe,
// opens a channel and returns the client's connection and both ends of
// the channel; they are closed at the end of the test. GATEKEEPER PATCHES
// 14 and 15.
func channelOverConn(t *testing.T, conf *ClientConfig) (conn Conn, client, server Channel) {
	t.Helper()
	c1, c2, err := netPipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c1.Close(); c2.Close() })
	accepted := make(chan Channel, 1)
	go func() {
		serverConf := &ServerConfig{NoClientAuth: true}
		serverConf.AddHostKey(testSigners["ecdsa"])
		_, chans, reqs, err := NewServerConn(c1, serverConf)
		if err != nil {
			t.Error(err)
			close(accepted)
			return
		}
		go DiscardRequests(reqs)
		ch, chReqs, err := (<-chans).Accept()
		if err != nil {
			t.Error(err)
			close(accepted)
			return
		}
		go DiscardRequests(chReqs)
		accepted <- ch
	}()
	conn, _, reqs, err := NewClientConn(c2, "", conf)
	if err != nil {
		t.Fatal(err)
	}
	go DiscardRequests(reqs)
	client, chReqs, err := conn.OpenChannel("chan", nil)
	if err != nil {
		t.Fatal(err)
	}
	go DiscardRequests(chReqs)
	server, ok := <-accepted
	if !ok {
		t.FailNow()
	}
	return conn, client, server
}
