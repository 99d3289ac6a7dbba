// Package connserve runs accept loops shaped like net/http.Server for servers of raw
// connections: Serve accepts and hands each connection to its own goroutine, Shutdown stops
// accepting and waits for the live connections to end (closing them when its context expires),
// and Close ends everything at once. The SSH front door and the SSH linking listener share it.
package connserve

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("connserve: server closed")

// Server accepts connections and runs Handle for each in its own goroutine, tracking them so
// that Shutdown can wait for them and Close can end them. Set the fields, then call Serve; they
// must not change after the first call. The zero value with Handle set is ready to use.
type Server struct {
	// Handle serves one connection (required). It is called in a new goroutine per connection,
	// and the connection is closed after it returns. ctx is cancelled when the server starts
	// closing connections under their handlers (Close, or Shutdown's context expiring), so that
	// work that does not notice a closed connection stops too; it is also cancelled once
	// Shutdown has seen every connection end.
	Handle func(ctx context.Context, nc net.Conn)
	// Log receives the accept loop's warnings; nil means slog.Default().
	Log *slog.Logger
	// Name, when set, prefixes the log messages ("NAME: accept failed; retrying").
	Name string
	// QuickAck is how many bytes of each connection are acknowledged at once
	// rather than with the kernel's delayed ACK (0: none). SSH servers set it
	// to cover the handshake: see quickAckConn.
	QuickAck int

	// mu protects the following.
	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	connsWG   sync.WaitGroup // one count per entry in conns
	ctx       context.Context
	cancel    context.CancelFunc
}

// initLocked makes the zero value usable; s.mu must be held.
func (s *Server) initLocked() {
	if s.listeners == nil {
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[net.Conn]struct{}{}
		s.ctx, s.cancel = context.WithCancel(context.Background())
	}
}

// Serve accepts connections on ln until Shutdown or Close; it always returns a non-nil error,
// ErrServerClosed after a shutdown. Accept errors that may pass (timeouts, out of file
// descriptors) are logged and retried with a growing back-off, as net/http does; any other is
// returned. Serve does not close ln when it was called after a shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if s.Handle == nil {
		return errors.New("connserve: Server.Handle is required")
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.initLocked()
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of file descriptors or similar: wait and retry, as net/http does,
				// rather than spin or die.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log().Warn(s.msg("accept failed; retrying"), "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		ctx, ok := s.trackConn(nc)
		if !ok {
			nc.Close()
			return ErrServerClosed
		}
		go func() {
			defer s.untrackConn(nc)
			if s.QuickAck > 0 {
				s.Handle(ctx, withQuickAck(nc, s.QuickAck))
				return
			}
			s.Handle(ctx, nc)
		}()
	}
}

// Shutdown stops accepting connections and waits for the live ones to end on their own. When
// ctx expires first it closes them, waits for their handlers to return and returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopListening()
	done := make(chan struct{})
	go func() {
		s.connsWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.closeConns()
		<-done
		return ctx.Err()
	}
}

// Close stops accepting, closes every connection at once and waits for their handlers to
// return.
func (s *Server) Close() error {
	s.stopListening()
	s.closeConns()
	s.connsWG.Wait()
	return nil
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func (s *Server) msg(m string) string {
	if s.Name != "" {
		return s.Name + ": " + m
	}
	return m
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// trackConn records nc and returns the context for its handler; false once the server is
// closing, and then nc must not be served.
func (s *Server) trackConn(nc net.Conn) (context.Context, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, false
	}
	s.conns[nc] = struct{}{}
	s.connsWG.Add(1)
	return s.ctx, true
}

func (s *Server) untrackConn(nc net.Conn) {
	nc.Close()
	s.mu.Lock()
	delete(s.conns, nc)
	s.mu.Unlock()
	s.connsWG.Done()
}

func (s *Server) stopListening() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
}

// closeConns cancels the handlers' context first, so that work not tied to the connection
// ends too, then closes the connections under their handlers.
func (s *Server) closeConns() {
	s.cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	for nc := range s.conns {
		nc.Close()
	}
}
