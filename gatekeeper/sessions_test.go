package gatekeeper

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gatekeeper/config"
	"gatekeeper/gatekeeper/store"
)

// fakeRegistry is a SessionRegistry of a cluster held in memory: what this
// node registers, the other nodes' sessions, and the requests it was asked
// to send.
type fakeRegistry struct {
	mu       sync.Mutex
	mine     map[uint64]store.LiveSession
	others   []store.LiveSession
	down     error    // List and the requests fail with it
	requests []string // "kill node/id", "killuser user"
	// obey makes a RequestKill end the other node's session at once.
	obey  bool
	kills chan store.KillRequest
}

func newFakeRegistry(others ...store.LiveSession) *fakeRegistry {
	return &fakeRegistry{mine: map[uint64]store.LiveSession{}, others: others, obey: true, kills: make(chan store.KillRequest)}
}

func (f *fakeRegistry) Register(l store.LiveSession) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mine[l.ID] = l
}

func (f *fakeRegistry) Unregister(id uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.mine, id)
}

func (f *fakeRegistry) List(context.Context) ([]store.LiveSession, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down != nil {
		return nil, f.down
	}
	out := slices.Clone(f.others)
	for _, l := range f.mine {
		out = append(out, l)
	}
	return out, nil
}

func (f *fakeRegistry) RequestKill(_ context.Context, node string, id uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down != nil {
		return f.down
	}
	f.requests = append(f.requests, fmt.Sprintf("kill %s/%d", node, id))
	if f.obey {
		f.others = slices.DeleteFunc(f.others, func(l store.LiveSession) bool { return l.Node == node && l.ID == id })
	}
	return nil
}

func (f *fakeRegistry) RequestKillUser(_ context.Context, user string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down != nil {
		return f.down
	}
	f.requests = append(f.requests, "killuser "+user)
	return nil
}

func (f *fakeRegistry) RequestKillKey(_ context.Context, user, fp string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down != nil {
		return f.down
	}
	f.requests = append(f.requests, "killkey "+user+" "+fp)
	return nil
}

func (f *fakeRegistry) Kills() <-chan store.KillRequest { return f.kills }

func (f *fakeRegistry) state() (mine []store.LiveSession, requests []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.mine {
		mine = append(mine, l)
	}
	return mine, slices.Clone(f.requests)
}

func (f *fakeRegistry) setDown(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = err
}

// newClusterGate is a test gate named node-a in a cluster kept by reg.
func newClusterGate(t *testing.T, reg SessionRegistry) *testGate {
	t.Helper()
	return newTestGateWith(t, func(c *config.Config) { c.NodeName = "node-a" }, func(o *Options) {
		if reg != nil {
			o.Sessions = reg
		}
	})
}

// open logs user in from the trusted address (no code needed) and keeps the
// session open; the returned channel is closed when the gate ends it.
func (g *testGate) open(t *testing.T, user string) (ended <-chan struct{}) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	before := len(g.srv.Sessions())
	conn, chans, reqs, err := ssh.NewClientConn(nc, g.addr, &ssh.ClientConfig{
		User: user,
		Auth: []ssh.AuthMethod{ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
			out := make([]string, len(qs))
			for i := range qs {
				out[i] = landerPassword
			}
			return out, nil
		})},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
	})
	if err != nil {
		t.Fatal(err)
	}
	client := ssh.NewClient(conn, chans, reqs)
	t.Cleanup(func() { client.Close() })
	done := make(chan struct{})
	go func() { client.Wait(); close(done) }()
	waitFor(t, "the session to be listed", func() bool { return len(g.srv.Sessions()) > before })
	return done
}

// isEnded reports whether ended closes within 5 s.
func isEnded(ended <-chan struct{}) bool {
	select {
	case <-ended:
		return true
	case <-time.After(5 * time.Second):
		return false
	}
}

// TestRegistryFollowsSessions: each session of the node is registered with
// the node's name while it lives, and unregistered when it ends.
func TestRegistryFollowsSessions(t *testing.T) {
	reg := newFakeRegistry()
	g := newClusterGate(t, reg)
	g.open(t, "alice")
	waitFor(t, "the session to be registered", func() bool { m, _ := reg.state(); return len(m) == 1 })
	mine, _ := reg.state()
	if len(mine) != 1 || mine[0].Node != "node-a" || mine[0].User != "alice" || !mine[0].Trusted ||
		!strings.HasPrefix(mine[0].Remote, "127.0.0.2:") || mine[0].ID != g.srv.Sessions()[0].ID {
		t.Fatalf("registered %+v", mine)
	}
	if _, _, ok := g.srv.Kill(mine[0].ID); !ok {
		t.Fatal("Kill: no such session")
	}
	waitFor(t, "the session to be unregistered", func() bool { m, _ := reg.state(); return len(m) == 0 })
}

// TestClusterSessions: this node's sessions (with byte counts) and the other
// nodes' from the registry, by node and id; without the registry, this
// node's and an error saying what is missing.
func TestClusterSessions(t *testing.T) {
	start := time.Now().Add(-time.Hour).Round(time.Second)
	reg := newFakeRegistry(
		store.LiveSession{Node: "node-b", ID: 1, User: "bob", Remote: "192.0.2.7:4000", Start: start},
		store.LiveSession{Node: "node-0", ID: 5, User: "carol", Remote: "192.0.2.8:4000", Trusted: true, Start: start},
	)
	g := newClusterGate(t, reg)
	g.open(t, "alice")
	got, err := g.srv.ClusterSessions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range got {
		names = append(names, fmt.Sprintf("%s/%d %s %v", s.Node, s.ID, s.User, s.ThisNode))
	}
	if want := []string{"node-0/5 carol false", "node-a/1 alice true", "node-b/1 bob false"}; !slices.Equal(names, want) {
		t.Errorf("ClusterSessions = %q, want %q", names, want)
	}
	if got[0].Remote != "192.0.2.8:4000" || !got[0].Trusted || !got[0].Start.Equal(start) {
		t.Errorf("another node's session: %+v", got[0])
	}

	reg.setDown(fmt.Errorf("etcd: list sessions: %w", store.ErrUnavailable))
	got, err = g.srv.ClusterSessions(context.Background())
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "other nodes") {
		t.Errorf("with the registry down: %v", err)
	}
	if len(got) != 1 || got[0].User != "alice" || !got[0].ThisNode {
		t.Errorf("with the registry down: %+v, want this node's session", got)
	}
}

// TestKillSession: a bare id names the only session with that id in sight,
// here or on another node; NODE/ID names one exactly; an id several nodes
// have is refused naming them; another node is asked through the registry
// and the kill waits for its session to be gone.
func TestKillSession(t *testing.T) {
	ctx := context.Background()
	reg := newFakeRegistry(
		store.LiveSession{Node: "node-b", ID: 1, User: "bob"},
		store.LiveSession{Node: "node-b", ID: 7, User: "bob"},
		store.LiveSession{Node: "node-c", ID: 7, User: "carol"},
		store.LiveSession{Node: "node-c", ID: 9, User: "carol"},
	)
	g := newClusterGate(t, reg)
	first := g.open(t, "alice")  // node-a/1
	second := g.open(t, "alice") // node-a/2

	if _, _, err := g.srv.KillSession(ctx, "", 1); !errors.Is(err, ErrAmbiguousSession) || !strings.Contains(err.Error(), "node-a/1, node-b/1") {
		t.Errorf("kill 1 = %v, want ErrAmbiguousSession naming node-a/1 and node-b/1", err)
	}
	if _, _, err := g.srv.KillSession(ctx, "", 7); !errors.Is(err, ErrAmbiguousSession) {
		t.Errorf("kill 7 = %v, want ErrAmbiguousSession", err)
	}
	for _, c := range []struct {
		node string
		id   uint64
	}{{"", 3}, {"node-b", 9}, {"node-d", 1}, {"node-a", 3}} {
		if _, _, err := g.srv.KillSession(ctx, c.node, c.id); !errors.Is(err, ErrNoSession) {
			t.Errorf("kill %s/%d = %v, want ErrNoSession", c.node, c.id, err)
		}
	}

	// This node's, by NODE/ID and by a bare id only it has.
	s, ended, err := g.srv.KillSession(ctx, "node-a", 1)
	if err != nil || !ended || s.User != "alice" || s.Node != "node-a" || !isEnded(first) {
		t.Errorf("kill node-a/1 = %+v, %v, %v", s, ended, err)
	}
	s, ended, err = g.srv.KillSession(ctx, "", 2)
	if err != nil || !ended || s.ID != 2 || !isEnded(second) {
		t.Errorf("kill 2 = %+v, %v, %v", s, ended, err)
	}
	// Another node's: asked through the registry, and gone.
	s, ended, err = g.srv.KillSession(ctx, "", 9)
	if err != nil || !ended || s.Node != "node-c" || s.User != "carol" {
		t.Errorf("kill 9 = %+v, %v, %v", s, ended, err)
	}
	s, ended, err = g.srv.KillSession(ctx, "node-b", 7)
	if err != nil || !ended || s.User != "bob" {
		t.Errorf("kill node-b/7 = %+v, %v, %v", s, ended, err)
	}
	if _, req := reg.state(); !slices.Equal(req, []string{"kill node-c/9", "kill node-b/7"}) {
		t.Errorf("requests = %q", req)
	}
	// A node that does not end it: asked, not confirmed.
	reg.mu.Lock()
	reg.obey = false
	reg.mu.Unlock()
	began := time.Now()
	s, ended, err = g.srv.KillSession(ctx, "node-c", 7)
	if err != nil || ended || s.Node != "node-c" {
		t.Errorf("kill node-c/7 on a node that does not answer = %+v, %v, %v", s, ended, err)
	}
	if d := time.Since(began); d < killWait || d > killWait+2*time.Second {
		t.Errorf("waited %v for the confirmation, want about %v", d, killWait)
	}
}

// TestKillSessionRegistryDown: without the registry this node's sessions
// are still killed by their bare id; another node's cannot be, and the error
// says why.
func TestKillSessionRegistryDown(t *testing.T) {
	ctx := context.Background()
	reg := newFakeRegistry(store.LiveSession{Node: "node-b", ID: 5, User: "bob"})
	g := newClusterGate(t, reg)
	ended := g.open(t, "alice")
	reg.setDown(fmt.Errorf("etcd: %w", store.ErrUnavailable))
	if _, _, err := g.srv.KillSession(ctx, "", 5); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("kill 5 = %v, want ErrUnavailable", err)
	}
	if _, _, err := g.srv.KillSession(ctx, "node-b", 5); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("kill node-b/5 = %v, want ErrUnavailable", err)
	}
	if _, ok, err := g.srv.KillSession(ctx, "", 1); err != nil || !ok || !isEnded(ended) {
		t.Errorf("kill 1 (this node's) = %v, %v", ok, err)
	}
}

// TestKillUserAcrossNodes: KillUser ends the user's sessions here, asks the
// other nodes to end theirs, and counts those the registry lists.
func TestKillUserAcrossNodes(t *testing.T) {
	reg := newFakeRegistry(
		store.LiveSession{Node: "node-b", ID: 1, User: "alice"},
		store.LiveSession{Node: "node-b", ID: 2, User: "bob"},
	)
	g := newClusterGate(t, reg)
	ended := g.open(t, "alice")
	kept := g.open(t, "bob")
	if n := g.srv.KillUser("alice"); n != 2 {
		t.Errorf("KillUser(alice) = %d, want 2 (one here, one on node-b)", n)
	}
	if !isEnded(ended) {
		t.Error("alice's session here was not ended")
	}
	if _, req := reg.state(); !slices.Equal(req, []string{"killuser alice"}) {
		t.Errorf("requests = %q", req)
	}
	select {
	case <-kept:
		t.Error("bob's session was ended")
	default:
	}
	// Without the registry: this node's sessions still end.
	reg.setDown(errors.New("etcd down"))
	if n := g.srv.KillUser("bob"); n != 1 || !isEnded(kept) {
		t.Errorf("KillUser(bob) with the registry down = %d", n)
	}
}

// TestKillRequestsFromOtherNodes: a request of another node ends the session
// it names, or every session of the user and, through EndUserAlso, the
// daemon's other sessions of that user.
func TestKillRequestsFromOtherNodes(t *testing.T) {
	reg := newFakeRegistry()
	g := newClusterGate(t, reg)
	var mu sync.Mutex
	var alsoEnded []string
	g.srv.EndUserAlso(func(user string) int {
		mu.Lock()
		defer mu.Unlock()
		alsoEnded = append(alsoEnded, user)
		return 1
	})
	one := g.open(t, "alice")
	two := g.open(t, "alice")
	bob := g.open(t, "bob")

	reg.kills <- store.KillRequest{ID: 1, By: "node-b"}
	if !isEnded(one) {
		t.Fatal("session 1 was not ended at node-b's request")
	}
	epoch := g.srv.resetEpoch("alice")
	reg.kills <- store.KillRequest{User: "alice", By: "node-b"}
	if !isEnded(two) {
		t.Fatal("alice's session was not ended at node-b's request")
	}
	waitFor(t, "the request to be logged", func() bool {
		return strings.Contains(g.logs.String(), "user's sessions ended at another node's request")
	})
	if g.srv.resetEpoch("alice") == epoch {
		t.Error("logins of alice being decided would still be let in")
	}
	mu.Lock()
	if !slices.Equal(alsoEnded, []string{"alice"}) {
		t.Errorf("EndUserAlso's enders ran for %q", alsoEnded)
	}
	mu.Unlock()
	select {
	case <-bob:
		t.Error("bob's session was ended")
	default:
	}
	if _, req := reg.state(); len(req) != 0 {
		t.Errorf("a request of another node was passed on: %q", req)
	}
}

// TestOneNode: without a registry the node names its sessions, and names of
// other nodes find nothing.
func TestOneNode(t *testing.T) {
	g := newClusterGate(t, nil)
	ended := g.open(t, "alice")
	got, err := g.srv.ClusterSessions(context.Background())
	if err != nil || len(got) != 1 || got[0].Node != "node-a" || !got[0].ThisNode {
		t.Errorf("ClusterSessions = %+v, %v", got, err)
	}
	if _, _, err := g.srv.KillSession(context.Background(), "node-b", 1); !errors.Is(err, ErrNoSession) {
		t.Errorf("kill node-b/1 = %v, want ErrNoSession", err)
	}
	if n := g.srv.KillUser("alice"); n != 1 || !isEnded(ended) {
		t.Errorf("KillUser = %d", n)
	}
}
