// Command idleclients opens many idle SSH sessions and holds them, for bench/idle.sh, which
// measures what an idle relayed session costs the gatekeeper in memory.
//
// It makes -n connections to -addr from the local address -bind, logs in as -user with the
// password in -password-file (keyboard-interactive, answering every password prompt, or the
// password method), and opens one session channel on each: a pty and an interactive shell, or
// the command -cmd without a pty. At most -c handshakes run at once (the gatekeeper admits at
// most 10 unauthenticated connections per address); a refused or failed attempt is retried up
// to -retries times with a growing pause. When all are open it prints one line on stdout,
//
//	READY open=N failed=F retries=R seconds=S
//
// and holds the sessions, sending nothing, until SIGTERM or SIGINT; then it prints
//
//	HELD open=N dropped=D
//
// (D: sessions the far side ended meanwhile) and closes them.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// held is one open session and what keeps it open.
type held struct {
	client  *ssh.Client
	session *ssh.Session
	stdin   io.WriteCloser // never written, never closed: the shell waits for input
}

func main() {
	addr := flag.String("addr", "", "SSH server, host:port (required)")
	bind := flag.String("bind", "", "local IP address to connect from (default: any)")
	user := flag.String("user", "", "user name (required)")
	pwFile := flag.String("password-file", "", "file holding the password (first line; required)")
	knownHosts := flag.String("known-hosts", "", "OpenSSH known_hosts file with the server's key (default: accept any key)")
	n := flag.Int("n", 2000, "sessions to open")
	conc := flag.Int("c", 8, "handshakes at once")
	retries := flag.Int("retries", 20, "retries per session")
	cmd := flag.String("cmd", "", "command to run in each session instead of a pty and a shell")
	timeout := flag.Duration("timeout", 60*time.Second, "time for one attempt (connect, login, session)")
	flag.Parse()
	if *addr == "" || *user == "" || *pwFile == "" || *n < 1 || *conc < 1 || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	log.SetPrefix("idleclients: ")
	log.SetFlags(0)
	pw, err := os.ReadFile(*pwFile)
	if err != nil {
		log.Fatal(err)
	}
	password := strings.TrimRight(strings.SplitN(string(pw), "\n", 2)[0], "\r")
	hostKey := ssh.InsecureIgnoreHostKey() // loopback benchmark; -known-hosts checks it
	if *knownHosts != "" {
		if hostKey, err = knownhosts.New(*knownHosts); err != nil {
			log.Fatal(err)
		}
	}
	answer := func(_, _ string, questions []string, _ []bool) ([]string, error) {
		answers := make([]string, len(questions))
		for i, q := range questions {
			if !strings.Contains(strings.ToLower(q), "password") {
				return nil, fmt.Errorf("unexpected prompt %q", q)
			}
			answers[i] = password
		}
		return answers, nil
	}
	cfg := &ssh.ClientConfig{
		User:            *user,
		Auth:            []ssh.AuthMethod{ssh.KeyboardInteractive(answer), ssh.Password(password)},
		HostKeyCallback: hostKey,
		Timeout:         *timeout,
	}
	dialer := &net.Dialer{Timeout: *timeout}
	if *bind != "" {
		ip := net.ParseIP(*bind)
		if ip == nil {
			log.Fatalf("-bind %q: not an IP address", *bind)
		}
		dialer.LocalAddr = &net.TCPAddr{IP: ip}
	}

	start := time.Now()
	sessions := make([]*held, *n)
	var next, done, failed, retried, dropped atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= *n {
					return
				}
				var lastErr error
				for attempt := 0; attempt <= *retries; attempt++ {
					if attempt > 0 {
						retried.Add(1)
						time.Sleep(min(time.Duration(attempt)*100*time.Millisecond, 2*time.Second))
					}
					h, err := open(dialer, *addr, cfg, *cmd, *timeout)
					if err == nil {
						sessions[i] = h
						lastErr = nil
						go func() {
							_ = h.client.Wait()
							dropped.Add(1)
						}()
						break
					}
					lastErr = err
				}
				if lastErr != nil {
					failed.Add(1)
					log.Printf("session %d: %v", i, lastErr)
				}
				if d := done.Add(1); d%100 == 0 {
					log.Printf("%d of %d done (%d failed, %d retries, %.1f s)", d, *n, failed.Load(), retried.Load(), time.Since(start).Seconds())
				}
			}
		}()
	}
	wg.Wait()
	opened := int64(*n) - failed.Load()
	fmt.Printf("READY open=%d failed=%d retries=%d seconds=%.1f\n", opened, failed.Load(), retried.Load(), time.Since(start).Seconds())

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
	fmt.Printf("HELD open=%d dropped=%d\n", opened, dropped.Load())
	for _, h := range sessions {
		if h != nil {
			h.client.Close()
		}
	}
}

// open connects, logs in and starts one idle session.
func open(dialer *net.Dialer, addr string, cfg *ssh.ClientConfig, cmd string, timeout time.Duration) (*held, error) {
	conn, err := dialer.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	// one deadline for the handshake, the login and the session requests
	_ = conn.SetDeadline(time.Now().Add(timeout))
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	client := ssh.NewClient(c, chans, reqs)
	h, err := startSession(client, cmd)
	if err != nil {
		client.Close()
		return nil, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		client.Close()
		return nil, err
	}
	return h, nil
}

func startSession(client *ssh.Client, cmd string) (*held, error) {
	s, err := client.NewSession()
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	// stdout and stderr stay nil: whatever the shell prints is read and dropped
	stdin, err := s.StdinPipe()
	if err != nil {
		return nil, err
	}
	if cmd != "" {
		err = s.Start(cmd)
	} else {
		if err = s.RequestPty("xterm", 24, 80, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
			return nil, fmt.Errorf("pty: %w", err)
		}
		err = s.Shell()
	}
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	return &held{client: client, session: s, stdin: stdin}, nil
}
