package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// The soak test: many concurrent logins with one code while the daemon is killed with SIGKILL
// and restarted on the same database. Whatever happens, a time step's code lets at most one
// login in, also across the restarts; when no kill interrupts a round, exactly one.
//
// The 100 concurrent logins of a round are x/crypto SSH clients in the test process, not
// OpenSSH: 100 ssh processes, each running the askpass script twice, cost several seconds of
// CPU per round on the two cores the tests get, and what is under test is the daemon's
// check-and-record of the step, which sees the same keyboard-interactive answers from either
// client. The real OpenSSH client makes the replay after each round, against the restarted
// daemon.

const (
	// soakLogins is how many logins race with one code in a round.
	soakLogins = 100
	// soakUsers each give two rounds: after linking (which spends the current step) the
	// tests' skew leaves two steps ahead that stay valid for the whole test.
	soakUsers = 4
	// soakLoginTimeout bounds one login; a kill ends the logins in flight at once.
	soakLoginTimeout = 60 * time.Second
)

// loginOutcome is what one x/crypto login saw.
type loginOutcome int

const (
	loginIn      loginOutcome = iota // authenticated: the daemon said the login is in
	loginRefused                     // the daemon refused the login
	loginCut                         // the connection failed (the daemon was killed or down)
)

// goLogin logs u in at addr with password and code using x/crypto's client, and closes the
// connection at once.
func goLogin(addr string, u *user, code string) (loginOutcome, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return loginCut, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(soakLoginTimeout))
	cfg := &ssh.ClientConfig{
		User: u.name,
		Auth: []ssh.AuthMethod{ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
			ans := make([]string, len(qs))
			for i, q := range qs {
				switch {
				case strings.Contains(q, "Verification code:"):
					ans[i] = code
				case strings.Contains(q, "assword:"):
					ans[i] = u.password
				default:
					return nil, fmt.Errorf("unexpected prompt %q", q)
				}
			}
			return ans, nil
		})},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), // loopback; the front door's key is not under test here
	}
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		if strings.Contains(err.Error(), "unable to authenticate") {
			return loginRefused, err
		}
		return loginCut, err
	}
	go ssh.DiscardRequests(reqs)
	go func() {
		for nc := range chans {
			_ = nc.Reject(ssh.Prohibited, "test client")
		}
	}()
	_ = sc.Close()
	return loginIn, nil
}

// burst starts n logins with one code at once and, while they run, calls during (which may
// kill and restart the daemon). A login whose connection is cut tries again, as a user would,
// until the daemon judges it or soakLoginTimeout passes. It returns how many logins were let
// in and refused, how many attempts were cut off, and an error of each kind as a sample.
func burst(addr string, u *user, code string, n int, during func()) (counts [3]int, sample map[loginOutcome]error) {
	var mu sync.Mutex
	sample = map[loginOutcome]error{}
	note := func(o loginOutcome, err error) {
		mu.Lock()
		defer mu.Unlock()
		counts[o]++
		if err != nil && sample[o] == nil {
			sample[o] = err
		}
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			deadline := time.Now().Add(soakLoginTimeout)
			for {
				o, err := goLogin(addr, u, code)
				note(o, err)
				if o != loginCut || time.Now().After(deadline) {
					return
				}
				time.Sleep(pollInterval) // the daemon is down or restarting
			}
		})
	}
	close(start)
	during()
	wg.Wait()
	return counts, sample
}

// soakSeed is GK_SOAK_SEED if set (to replay a failed run's kill moments), else random.
func soakSeed(t *testing.T) uint64 {
	t.Helper()
	if s := os.Getenv("GK_SOAK_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("GK_SOAK_SEED=%q: %v", s, err)
		}
		return seed
	}
	return rand.Uint64()
}

func TestSoakOneCodeAcrossKill9(t *testing.T) {
	// Not parallel: 100 logins at once need the machine to themselves to finish in time, and
	// the parallel tests wait until this one is done.
	// failures also sets network_failures; the harness's pre-auth caps admit 100 logins at once
	// from 127.0.0.1.
	g := ownGatekeeper(t, gkOptions{failures: 1_000_000})
	seed := soakSeed(t)
	t.Logf("kill moments from seed %d (GK_SOAK_SEED=%d replays them)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))

	type round struct {
		u    *user
		step uint64
		code string
	}
	var rounds []round
	for range soakUsers {
		u := enrolledUser(t, g)
		for range 2 {
			code := u.nextCode(t)
			rounds = append(rounds, round{u: u, step: u.last, code: code})
		}
	}

	// The first and the last round run undisturbed: exactly one login gets in. The first also
	// measures how long a round takes, the span in which the others are killed.
	var span time.Duration
	kills := 0
	for i, r := range rounds {
		what := fmt.Sprintf("round %d (%s, step %d)", i, r.u.name, r.step)
		kill := i > 0 && i < len(rounds)-1
		var killAt time.Duration
		began := time.Now()
		counts, sample := burst(g.addr(), r.u, r.code, soakLogins, func() {
			if !kill {
				return
			}
			killAt = time.Duration(rng.Int64N(int64(span)))
			time.Sleep(killAt) // the random moment itself is what this test varies
			g.kill9(t)
			kills++
			if err := g.start(); err != nil {
				t.Fatalf("%s: restart after kill -9: %v", what, err)
			}
		})
		took := time.Since(began)
		if i == 0 {
			span = took
		}
		in := counts[loginIn]
		how := "undisturbed"
		if kill {
			how = fmt.Sprintf("kill -9 after %v", killAt.Round(time.Millisecond))
		}
		t.Logf("%s, %s: %d in, %d refused, %d attempts cut off, in %v", what, how, in,
			counts[loginRefused], counts[loginCut], took.Round(time.Millisecond))
		if in > 1 {
			t.Errorf("%s: %d logins got in with one code, want at most 1", what, in)
		}
		if in+counts[loginRefused] != soakLogins {
			t.Errorf("%s: %d of %d logins were judged (in or refused); the rest never got an answer (sample errors %v)",
				what, in+counts[loginRefused], soakLogins, sample)
		}
		// Undisturbed, exactly one gets in. With a kill, the login that spent the step may
		// have been cut off before it was told: then none gets in, and the step stays spent.
		if !kill && in != 1 {
			t.Errorf("%s, undisturbed: %d logins got in, want exactly 1 (sample errors %v)", what, in, sample)
		}

		// The same code once more, with the OpenSSH client, after any restart: the step is
		// spent whether or not the login that spent it was told, before or after the kill.
		c := newClient(t, r.u, g.port, "")
		c.setCode(r.code)
		mustBeDenied(t, c, what+": the same code again after the round")
	}
	if kills == 0 {
		t.Error("the daemon was never killed")
	}
}
