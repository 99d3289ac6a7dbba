// Copyright 2026 The gatekeeper authors. GATEKEEPER PATCH 16.

package ssh

import (
	"errors"
	"net"
	"sync/atomic"
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
// service accept to the client's first authentication request: at least
// the delay the client's writes take, and not the time to a later request
// (here the client's third, after it took a second to find its password);
// a client's connection reports none.
func TestHandshakeRTT(t *testing.T) {
	const (
		delay = 60 * time.Millisecond
		think = time.Second // before the client's second password
	)
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
			conf := &ServerConfig{
				PasswordCallback: func(_ ConnMetadata, pw []byte) (*Permissions, error) {
					if string(pw) != "right" {
						return nil, errors.New("wrong password")
					}
					return nil, nil
				},
			}
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
			// "none" first, then a wrong password, then, a second
			// later, the right one.
			var tries atomic.Int32
			password := PasswordCallback(func() (string, error) {
				if tries.Add(1) == 1 {
					return "wrong", nil
				}
				time.Sleep(think)
				return "right", nil
			})
			client, _, reqs, err := NewClientConn(clientConn, "", &ClientConfig{
				User:            "alice",
				Auth:            []AuthMethod{RetryableAuthMethod(password, 2)},
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
			if n := tries.Load(); n != 2 {
				t.Fatalf("the client asked for its password %d times, want 2", n)
			}

			rtt := res.conn.Conn.(interface{ HandshakeRTT() time.Duration }).HandshakeRTT()
			switch {
			case rtt <= 0:
				t.Errorf("server: HandshakeRTT() = %v, want a round trip", rtt)
			case rtt < tc.delay:
				t.Errorf("server: HandshakeRTT() = %v with a client %v away, want at least that", rtt, tc.delay)
			case rtt >= think:
				t.Errorf("server: HandshakeRTT() = %v, want the first request's round trip, not a later one's", rtt)
			}
			if got := client.(interface{ HandshakeRTT() time.Duration }).HandshakeRTT(); got != 0 {
				t.Errorf("client: HandshakeRTT() = %v, want 0", got)
			}
		})
	}
}
