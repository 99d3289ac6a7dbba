// Copyright 2026 The gatekeeper authors. GATEKEEPER PATCH 16.

package ssh

import (
	"net"
	"testing"
	"time"
)

// slowWriter delays every write by delay: a path that long one way.
type slowWriter struct {
	net.Conn
	delay time.Duration
}

func (c slowWriter) Write(p []byte) (int, error) {
	time.Sleep(c.delay)
	return c.Conn.Write(p)
}

// TestHandshakeRTT: a server's connection reports the round trip from its
// service accept to the client's first authentication request, at least
// the delay the client's writes take and, without one, less; a client's
// connection reports none.
func TestHandshakeRTT(t *testing.T) {
	const delay = 60 * time.Millisecond
	for _, tc := range []struct {
		name  string
		delay time.Duration
	}{
		{"near", 0},
		{"far", delay},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c1, c2, err := netPipe()
			if err != nil {
				t.Fatal(err)
			}
			defer c1.Close()
			defer c2.Close()
			conf := &ServerConfig{NoClientAuth: true}
			conf.AddHostKey(testSigners["ecdsa"])
			type result struct {
				conn *ServerConn
				err  error
			}
			done := make(chan result, 1)
			go func() {
				conn, _, reqs, err := NewServerConn(c1, conf)
				if err == nil {
					go DiscardRequests(reqs)
				}
				done <- result{conn, err}
			}()
			var clientConn net.Conn = c2
			if tc.delay > 0 {
				clientConn = slowWriter{c2, tc.delay}
			}
			client, _, reqs, err := NewClientConn(clientConn, "", &ClientConfig{
				User:            "alice",
				HostKeyCallback: InsecureIgnoreHostKey(),
			})
			if err != nil {
				t.Fatal(err)
			}
			go DiscardRequests(reqs)
			defer client.Close()
			res := <-done
			if res.err != nil {
				t.Fatal(res.err)
			}
			defer res.conn.Close()

			rtt := res.conn.Conn.(interface{ HandshakeRTT() time.Duration }).HandshakeRTT()
			switch {
			case rtt <= 0:
				t.Errorf("server: HandshakeRTT() = %v, want a round trip", rtt)
			case tc.delay > 0 && rtt < tc.delay:
				t.Errorf("server: HandshakeRTT() = %v with a client %v away, want at least that", rtt, tc.delay)
			case tc.delay == 0 && rtt >= delay:
				t.Errorf("server: HandshakeRTT() = %v on loopback, want less than %v", rtt, delay)
			}
			if got := client.(interface{ HandshakeRTT() time.Duration }).HandshakeRTT(); got != 0 {
				t.Errorf("client: HandshakeRTT() = %v, want 0", got)
			}
		})
	}
}
