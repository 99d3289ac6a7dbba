// Command delayproxy is a TCP relay that adds a fixed one-way delay, for benchmarks on loopback
// where the kernel has no netem: bench/distance.sh puts it in front of an SSH server to measure
// bulk transfers at a long round trip.
//
// It listens on -listen (default 127.0.0.1:0), prints the address it got on stdout (one line),
// and relays every connection to -target, dialled from -source when given. Every chunk read on
// either side is delivered to the other side -delay after it was read (default 25ms one way, so
// a 50 ms round trip). Both sides are read eagerly into an unbounded queue and the proxy has no
// bandwidth limit of its own: TCP sees a fast loopback peer, and the only thing that limits a
// stream through it is how much the endpoints let be in flight (for SSH, the channel window).
// A half close (EOF) is passed on after the same delay. It runs until killed.
//
// With -delay 0 it is a relay that only copies bytes, for bench/throughput.sh: each direction
// reads up to 256 KiB (all that has arrived, often several SSH packets) and writes it straight
// on, with no queue, so its CPU per GiB is the floor under any user-space relay on the machine,
// the cost of reading every byte from one socket and writing it to another before any SSH work.
// Not io.Copy: between two TCP sockets that splices inside the kernel, which a relay that must see
// the bytes cannot do.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync"
	"time"
)

// chunk is data read at some time, or the end of the stream (eof) with the read error, if any.
type chunk struct {
	data []byte
	due  time.Time
	eof  bool
	err  error
}

// queue is an unbounded FIFO of chunks between one reader and one writer.
type queue struct {
	mu     sync.Mutex
	chunks []chunk
	wake   chan struct{} // one pending wake-up for the writer
}

func newQueue() *queue { return &queue{wake: make(chan struct{}, 1)} }

func (q *queue) push(c chunk) {
	q.mu.Lock()
	q.chunks = append(q.chunks, c)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pop waits for the first chunk and removes it.
func (q *queue) pop() chunk {
	for {
		q.mu.Lock()
		if len(q.chunks) > 0 {
			c := q.chunks[0]
			q.chunks[0] = chunk{}
			q.chunks = q.chunks[1:]
			if len(q.chunks) == 0 {
				q.chunks = nil // let the backing array go
			}
			q.mu.Unlock()
			return c
		}
		q.mu.Unlock()
		<-q.wake
	}
}

// popDue removes and returns the data chunks at the head that are due by now, stopping at the
// first that is not or at an end-of-stream marker.
func (q *queue) popDue(now time.Time, bufs net.Buffers) net.Buffers {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.chunks) > 0 && !q.chunks[0].eof && !q.chunks[0].due.After(now) {
		bufs = append(bufs, q.chunks[0].data)
		q.chunks[0] = chunk{}
		q.chunks = q.chunks[1:]
	}
	return bufs
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	target := flag.String("target", "", "address to relay to (host:port), required")
	source := flag.String("source", "", "local IP address to dial the target from (default: any)")
	delay := flag.Duration("delay", 25*time.Millisecond, "one-way delay added in each direction (0: copy at once)")
	flag.Parse()
	if *target == "" || flag.NArg() > 0 || *delay < 0 {
		flag.Usage()
		os.Exit(2)
	}
	log.SetPrefix("delayproxy: ")
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	if *source != "" {
		ip := net.ParseIP(*source)
		if ip == nil {
			log.Fatalf("-source %q: not an IP address", *source)
		}
		dialer.LocalAddr = &net.TCPAddr{IP: ip}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go relay(c.(*net.TCPConn), dialer, *target, *delay)
	}
}

// relay connects client to target and pipes both directions with the delay.
func relay(client *net.TCPConn, dialer *net.Dialer, target string, delay time.Duration) {
	defer client.Close()
	conn, err := dialer.Dial("tcp", target)
	if err != nil {
		log.Printf("dial %s: %v", target, err)
		return
	}
	upstream := conn.(*net.TCPConn)
	defer upstream.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pipe(client, upstream, delay) }()
	go func() { defer wg.Done(); pipe(upstream, client, delay) }()
	wg.Wait()
}

// pipe copies src to dst, each chunk delay after it was read. A read error other than EOF, or a
// write error, closes both connections, which ends the other direction too.
func pipe(src, dst *net.TCPConn, delay time.Duration) {
	if delay == 0 {
		copyNow(src, dst)
		return
	}
	q := newQueue()
	go func() {
		buf := make([]byte, 256<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				q.push(chunk{data: append([]byte(nil), buf[:n]...), due: time.Now().Add(delay)})
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				q.push(chunk{eof: true, err: err, due: time.Now().Add(delay)})
				return
			}
		}
	}()
	for {
		c := q.pop()
		if d := time.Until(c.due); d > 0 {
			time.Sleep(d)
		}
		if c.eof {
			if c.err != nil {
				src.Close()
				dst.Close()
			} else {
				_ = dst.CloseWrite()
			}
			return
		}
		// write this chunk together with the ones behind it that are due by now
		bufs := q.popDue(time.Now(), net.Buffers{c.data})
		if _, err := bufs.WriteTo(dst); err != nil {
			// the reader then fails too, and ends (pushing never blocks)
			src.Close()
			dst.Close()
			return
		}
	}
}

// copyNow is pipe without a delay: each read is written at once. Errors end it as in pipe.
func copyNow(src, dst *net.TCPConn) {
	buf := make([]byte, 256<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				dst.Close()
				return
			}
		}
		if errors.Is(err, io.EOF) {
			_ = dst.CloseWrite()
			return
		}
		if err != nil {
			src.Close()
			dst.Close()
			return
		}
	}
}
