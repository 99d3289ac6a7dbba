package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// clusterSession is one entry of `gatekeeper admin sessions -o json` on a
// node of a cluster.
type clusterSession struct {
	Node     string `json:"node"`
	ID       uint64 `json:"id"`
	User     string `json:"user"`
	Remote   string `json:"remote"`
	ThisNode bool   `json:"this_node"`
}

// clusterSessionsOf returns name's live sessions as node g lists them.
func clusterSessionsOf(t testing.TB, g *gatekeeper, name string) []clusterSession {
	t.Helper()
	var all []clusterSession
	g.adminJSON(t, &all, "sessions")
	return slices.DeleteFunc(all, func(s clusterSession) bool { return s.User != name })
}

// TestClusterSessions: sessions on node B are listed from node A with their
// node; `admin kill` on A ends one of them, and `admin reset` on A ends the
// user's other session on B, each within 2 s; B's sessions then leave A's
// list. A killed node's sessions leave the list when its lease ends; and
// `admin reset` on a node without a daemon (on the store directly) still ends
// the user's sessions on the others.
func TestClusterSessions(t *testing.T) {
	t.Parallel()
	_, nodes := cluster(t, 1, 2, gkOptions{}, "")
	a, b := nodes[0], nodes[1]
	u := newUser(t)
	a.enroll(t, u)

	var live []*liveSession
	for range 2 {
		c := newClient(t, u, b.port, "")
		c.setCode(u.nextCode(t))
		s := c.liveSSH(nil, "echo started; sleep 300")
		s.waitFor("started")
		live = append(live, s)
	}

	// Listed from A, with B's name; the table has a NODE column.
	waitSessions(t, a, u.name, 2)
	onB := clusterSessionsOf(t, a, u.name)
	if len(onB) != 2 || onB[0].Node != "node-b" || onB[1].Node != "node-b" || onB[0].ThisNode || !strings.HasPrefix(onB[0].Remote, "127.0.0.1:") {
		t.Fatalf("admin sessions on node A: %+v, want %s's 2 sessions on node-b", onB, u.name)
	}
	table := a.admin(t, "sessions")
	if !strings.HasPrefix(table, "NODE ") || !strings.Contains(table, fmt.Sprintf("node-b  %d ", onB[0].ID)) {
		t.Errorf("admin sessions table on node A:\n%s", table)
	}

	// endsSoon checks that s (on B) ends within 2 s of the admin command on A
	// returning. The command's own start (a -race build) is not the cluster's
	// time, so it is only logged.
	endsSoon := func(s *liveSession, what string, began, returned time.Time) {
		t.Helper()
		if exit := s.wait(10 * time.Second); exit == 0 {
			t.Errorf("the session on node B after %s on node A: %s", what, s)
		}
		ended := time.Now()
		t.Logf("the session on node B ended %v after %s began on node A (the command took %v)",
			ended.Sub(began).Round(time.Millisecond), what, returned.Sub(began).Round(time.Millisecond))
		if d := ended.Sub(returned); d > 2*time.Second {
			t.Errorf("the session on node B ended %v after %s on node A returned, want within 2 s", d, what)
		}
	}

	// admin kill on A, by the id A listed (no session of A has it): B ends it.
	// The list is by node and id, so onB[0] is the first session.
	began := time.Now()
	out := a.admin(t, "kill", fmt.Sprint(onB[0].ID))
	endsSoon(live[0], "admin kill", began, time.Now())
	if want := fmt.Sprintf("Session node-b/%d (%s) ended.", onB[0].ID, u.name); !strings.Contains(out, want) {
		t.Errorf("admin kill on node A: %q, want %q", out, want)
	}
	if !live[1].running() {
		t.Fatalf("the other session ended too: %s", live[1])
	}

	// admin reset on A ends the other one on B.
	began = time.Now()
	out = a.admin(t, "reset", u.name)
	endsSoon(live[1], "admin reset", began, time.Now())
	if !strings.Contains(out, "1 live session ended") {
		t.Errorf("admin reset on node A: %q, want it to count the session on node B", out)
	}
	waitSessions(t, a, u.name, 0)
	b.waitLog(t, 0, "user's sessions ended at another node's request", u.name)
	a.waitAudit(t, u.name, "the kill and the reset, by "+adminActor, func(ev []auditEvent) bool {
		return countKind(ev, "session_killed", adminActor) == 1 && countKind(ev, "reset", adminActor) == 1
	})

	// Node B killed: A goes on, and B's session leaves A's list when B's lease
	// ends (10 s), not before. From the trusted network: no code needed.
	trusted := newClient(t, u, b.port, trustedAddr)
	s := trusted.liveSSH(nil, "echo started; sleep 300")
	s.waitFor("started")
	waitSessions(t, a, u.name, 1)
	b.kill9(t)
	killed := time.Now()
	if n := len(clusterSessionsOf(t, a, u.name)); n != 1 {
		t.Errorf("node A lists %d sessions of %s right after node B was killed, want 1 until B's lease ends", n, u.name)
	}
	waitSessions(t, a, u.name, 0)
	d := time.Since(killed)
	t.Logf("the killed node's session left node A's list after %v", d.Round(time.Millisecond))
	if d < 5*time.Second || d > 15*time.Second {
		t.Errorf("the killed node's session left the list after %v, want when its 10 s lease ends", d)
	}

	// With no daemon on A, admin reset there (on the store directly) still asks
	// B to end the user's sessions.
	if err := b.start(); err != nil {
		t.Fatalf("starting node B again: %v", err)
	}
	s = trusted.liveSSH(nil, "echo started; sleep 300")
	s.waitFor("started")
	waitSessions(t, a, u.name, 1)
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	out = a.admin(t, "reset", u.name)
	endsSoon(s, "admin reset without a daemon", began, time.Now())
	if !strings.Contains(out, "had no linked device; 1 live session ended") {
		t.Errorf("admin reset on node A without its daemon: %q, want it to count the session on node B", out)
	}
}

// waitSessions waits until node g lists n live sessions of name.
func waitSessions(t *testing.T, g *gatekeeper, name string, n int) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		got := clusterSessionsOf(t, g, name)
		if len(got) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s lists %+v, want %d sessions of %s", g.cfgPath, got, n, name)
		}
		time.Sleep(pollInterval)
	}
}
