// Command plainrelay is a TCP relay that only copies bytes, for bench/throughput.sh: its CPU
// per GiB is the floor under any user-space relay on the machine, the cost of reading every
// byte from one socket and writing it to another, before any SSH work. The gatekeeper does that
// and also decrypts and re-encrypts every packet.
//
// It listens on -listen (default 127.0.0.1:0), prints the address it got on stdout (one line),
// and relays every connection to -target with plain Read and Write calls of up to -buffer bytes
// (default 256 KiB: each read takes all that has arrived, up to several SSH packets, so it makes
// as few system calls as a relay can; with 32 KiB, a packet of 32 KiB and its header take two
// reads and two writes). Not io.Copy: between two TCP sockets that splices inside the kernel,
// which a relay that must see the bytes cannot do. A half close is passed on. It runs until
// killed.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	target := flag.String("target", "", "address to relay every connection to")
	buffer := flag.Int("buffer", 256<<10, "most bytes per Read and Write")
	flag.Parse()
	if *target == "" || *buffer <= 0 {
		fmt.Fprintln(os.Stderr, "usage: plainrelay -target HOST:PORT [-listen ADDR] [-buffer BYTES]")
		os.Exit(2)
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
		go relay(c.(*net.TCPConn), *target, *buffer)
	}
}

// relay copies both ways between c and a new connection to target, and closes both when both
// directions have ended.
func relay(c *net.TCPConn, target string, size int) {
	defer c.Close()
	t, err := net.Dial("tcp", target)
	if err != nil {
		log.Print(err)
		return
	}
	defer t.Close()
	done := make(chan struct{})
	go func() {
		copyHalf(t.(*net.TCPConn), c, size)
		close(done)
	}()
	copyHalf(c, t.(*net.TCPConn), size)
	<-done
}

// copyHalf copies from src to dst until src ends, then half-closes dst.
func copyHalf(dst, src *net.TCPConn, size int) {
	buf := make([]byte, size)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			if err != io.EOF {
				log.Print(err)
			}
			break
		}
	}
	dst.CloseWrite()
}
