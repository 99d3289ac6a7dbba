package connserve

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// serve runs s.Serve on a new loopback listener and returns its address and Serve's result.
func serve(t *testing.T, s *Server) (addr string, served <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	go func() { ch <- s.Serve(ln) }()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), ch
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return c
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// handlerResult is what a test handler saw: its context, and that context's error when the
// handler returned.
type handlerResult struct {
	ctx context.Context
	err error
}

func TestStopWithLiveConnection(t *testing.T) {
	expired := func() context.Context {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return ctx
	}
	tests := []struct {
		name string
		stop func(s *Server) error
		// release lets the handler return on its own once stop has begun; otherwise it runs
		// until its connection is closed.
		release bool
		wantErr error
		// wantCancelled: the handler's context was already cancelled when it returned.
		wantCancelled bool
	}{
		{
			name:    "Shutdown waits for a live handler",
			stop:    func(s *Server) error { return s.Shutdown(context.Background()) },
			release: true,
		},
		{
			name:          "Shutdown with a cancelled context closes connections",
			stop:          func(s *Server) error { return s.Shutdown(expired()) },
			wantErr:       context.Canceled,
			wantCancelled: true,
		},
		{
			name: "Shutdown past its deadline closes connections",
			stop: func(s *Server) error {
				ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
				defer cancel()
				return s.Shutdown(ctx)
			},
			wantErr:       context.DeadlineExceeded,
			wantCancelled: true,
		},
		{
			name:          "Close closes connections",
			stop:          func(s *Server) error { return s.Close() },
			wantCancelled: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			started := make(chan struct{})
			release := make(chan struct{})
			done := make(chan handlerResult, 1)
			s := &Server{
				Handle: func(ctx context.Context, nc net.Conn) {
					close(started)
					closed := make(chan struct{})
					go func() {
						_, _ = nc.Read(make([]byte, 1)) // the client sends nothing: ends on close
						close(closed)
					}()
					select {
					case <-release:
					case <-closed:
					}
					done <- handlerResult{ctx, ctx.Err()}
				},
				Log: slog.New(slog.DiscardHandler),
			}
			addr, served := serve(t, s)
			client := dial(t, addr)
			recv(t, started, "the handler to start")

			stopped := make(chan error, 1)
			go func() { stopped <- tc.stop(s) }()
			if err := recv(t, served, "Serve to return"); !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
			if tc.release {
				// Nothing signals "still waiting": give a Shutdown that does not wait a
				// moment to return early.
				select {
				case err := <-stopped:
					t.Fatalf("stop returned %v while a handler was live", err)
				case <-time.After(50 * time.Millisecond):
				}
				close(release)
			}
			if err := recv(t, stopped, "stop to return"); !errors.Is(err, tc.wantErr) {
				t.Errorf("stop returned %v, want %v", err, tc.wantErr)
			}
			var res handlerResult
			select {
			case res = <-done:
			default:
				t.Fatal("stop returned before the handler did")
			}
			if got := res.err != nil; got != tc.wantCancelled {
				t.Errorf("handler context cancelled on return = %v (%v), want %v", got, res.err, tc.wantCancelled)
			}
			if res.ctx.Err() == nil {
				t.Error("handler context still live after stop returned")
			}
			// The server closed the connection after the handler returned.
			if n, err := client.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("client read = %d, %v; want EOF", n, err)
			}
		})
	}
}

func TestShutdownStopsEveryListener(t *testing.T) {
	handled := make(chan struct{}, 2)
	s := &Server{Handle: func(context.Context, net.Conn) { handled <- struct{}{} }}
	addr1, served1 := serve(t, s)
	addr2, served2 := serve(t, s)
	// A connection through each listener shows that both Serve calls are accepting.
	dial(t, addr1)
	dial(t, addr2)
	recv(t, handled, "the first connection")
	recv(t, handled, "the second connection")
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for _, served := range []<-chan error{served1, served2} {
		if err := recv(t, served, "Serve to return"); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	}
}

func TestServeAfterStop(t *testing.T) {
	tests := []struct {
		name string
		stop func(s *Server) error
	}{
		{"Shutdown", func(s *Server) error { return s.Shutdown(context.Background()) }},
		{"Close", func(s *Server) error { return s.Close() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{Handle: func(context.Context, net.Conn) { t.Error("handler called") }}
			if err := tc.stop(s); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			ln := newFakeListener()
			ln.push(nil, errors.New("Accept called")) // so that a Serve that accepts returns
			if err := s.Serve(ln); !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
			if n := ln.accepts.Load(); n != 0 {
				t.Errorf("Serve called Accept %d times after the shutdown", n)
			}
		})
	}
}

func TestServeAcceptErrors(t *testing.T) {
	errBoom := errors.New("boom")
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	enfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.ENFILE)}
	tests := []struct {
		name    string
		srvName string
		errs    []error // Accept's errors that may pass, in turn, before one connection
		last    error   // Accept's error after that connection, which Serve must return
		wantLog string  // "" means no retry is logged
	}{
		{name: "other error is returned", last: errBoom},
		{name: "timeout is retried", errs: []error{timeoutError{}}, wantLog: `msg="accept failed; retrying"`, last: errBoom},
		{name: "EMFILE is retried", errs: []error{emfile}, wantLog: `msg="accept failed; retrying"`, last: errBoom},
		{name: "ENFILE is retried", srvName: "sshlink", errs: []error{enfile},
			wantLog: `msg="sshlink: accept failed; retrying"`, last: errBoom},
		{name: "several in a row are retried", errs: []error{emfile, timeoutError{}, enfile},
			wantLog: `msg="accept failed; retrying"`, last: errBoom},
		{name: "listener closed by someone else", last: net.ErrClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			last := tc.last
			ln := newFakeListener()
			for _, err := range tc.errs {
				ln.push(nil, err)
			}
			server, client := net.Pipe()
			defer client.Close()
			ln.push(server, nil)
			ln.push(nil, last)

			var logs bytes.Buffer
			handled := make(chan struct{})
			s := &Server{
				Handle: func(context.Context, net.Conn) { close(handled) },
				Log:    slog.New(slog.NewTextHandler(&logs, nil)),
				Name:   tc.srvName,
			}
			if err := s.Serve(ln); !errors.Is(err, last) {
				t.Errorf("Serve returned %v, want %v", err, last)
			}
			recv(t, handled, "the connection after the errors to be handled")
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			got := strings.Count(logs.String(), "accept failed; retrying")
			if tc.wantLog == "" && got != 0 || tc.wantLog != "" && got != len(tc.errs) {
				t.Errorf("%d retries logged, want %d:\n%s", got, len(tc.errs), logs.String())
			}
			if tc.wantLog != "" && !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("log lacks %s:\n%s", tc.wantLog, logs.String())
			}
		})
	}
}

func TestServeWithoutHandle(t *testing.T) {
	ln := newFakeListener()
	ln.push(nil, errors.New("Accept called")) // so that a Serve that accepts returns
	if err := (&Server{}).Serve(ln); err == nil || errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve without Handle returned %v, want a configuration error", err)
	}
	if n := ln.accepts.Load(); n != 0 {
		t.Errorf("Serve without Handle called Accept %d times", n)
	}
}

// fakeListener returns the pushed results in turn, then blocks until it is closed.
type fakeListener struct {
	results   chan acceptResult
	closed    chan struct{}
	closeOnce sync.Once
	accepts   atomic.Int32
}

type acceptResult struct {
	conn net.Conn
	err  error
}

func newFakeListener() *fakeListener {
	return &fakeListener{results: make(chan acceptResult, 16), closed: make(chan struct{})}
}

func (l *fakeListener) push(c net.Conn, err error) { l.results <- acceptResult{c, err} }

func (l *fakeListener) Accept() (net.Conn, error) {
	l.accepts.Add(1)
	select {
	case r := <-l.results:
		return r.conn, r.err
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *fakeListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// timeoutError is an accept error that may pass, like a deadline on the listener.
type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
