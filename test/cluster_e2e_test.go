package e2e

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"gatekeeper/internal/etcdtest"
	"gatekeeper/internal/haproxytest"
)

// Several gatekeepers on one etcd cluster (issue 10), driven with the real
// OpenSSH client, codes from oathtool.

// etcdStore returns a config edit that puts a gatekeeper on cluster c under
// prefix, as node (and, with proxyFrom, behind a load balancer sending PROXY
// headers from that address), with store.etcd.request_timeout 1 s unless
// timeout says otherwise.
func etcdStore(c *etcdtest.Cluster, prefix, node, proxyFrom, timeout string, also func(string) string) func(string) string {
	if timeout == "" {
		timeout = "1s"
	}
	return func(y string) string {
		if also != nil {
			y = also(y)
		}
		y += fmt.Sprintf("node_name: %q\nstore:\n  backend: \"etcd\"\n  etcd:\n    endpoints: [\"%s\"]\n    prefix: %q\n    request_timeout: %q\n",
			node, strings.Join(c.Endpoints(), `", "`), prefix, timeout)
		if proxyFrom != "" {
			y = strings.Replace(y, "first_factor:", fmt.Sprintf("proxy_protocol: true\nproxy_protocol_from: [\"%s/32\"]\nfirst_factor:", proxyFrom), 1)
		}
		return y
	}
}

// cluster starts an etcd cluster of members and n gatekeepers on it, all with
// the same secret key file and host key (siblings share the first one's
// directory), each with its own ports, admin socket and log.
func cluster(t *testing.T, members, n int, o gkOptions, proxyFrom string) (*etcdtest.Cluster, []*gatekeeper) {
	t.Helper()
	c := etcdtest.Start(t, members)
	prefix := "/gk-" + randHex(4) + "/"
	also := o.edit
	o.edit = etcdStore(c, prefix, "node-a", proxyFrom, o.requestTimeout, also)
	a := ownGatekeeper(t, o)
	nodes := []*gatekeeper{a}
	for i := 1; i < n; i++ {
		name := fmt.Sprintf("node-%c", 'a'+i)
		g := a.sibling()
		g.opts.edit = etcdStore(c, prefix, name, proxyFrom, o.requestTimeout, also)
		if err := g.writeConfig(name); err != nil {
			t.Fatal(err)
		}
		if err := g.start(); err != nil {
			t.Fatalf("starting %s: %v", name, err)
		}
		t.Cleanup(func() {
			if err := g.stop(); err != nil {
				t.Errorf("stopping %s: %v", name, err)
			}
			if err := g.logProblems(); err != nil {
				t.Error(err)
			}
			if t.Failed() {
				t.Logf("%s log:\n%s", name, tail(g.logBytes(), 60))
			}
		})
		nodes = append(nodes, g)
	}
	return c, nodes
}

// TestClusterCodeOnce: a device linked on node A logs in on node B; the code
// used on B is refused on A, and 40 concurrent logins with one code spread
// over both nodes let exactly one in.
func TestClusterCodeOnce(t *testing.T) {
	t.Parallel()
	// 5 s, not the tests' 1 s: on a loaded 2-core machine (make test runs
	// packages side by side, under -race) etcd once took longer than 1 s
	// to commit the winner's code, whose login was then refused as
	// store_unavailable (the code spent all the same: fail closed), and
	// none got in. This test is about the one-use rule, not timeouts.
	_, nodes := cluster(t, 1, 2, gkOptions{requestTimeout: "5s"}, "")
	a, b := nodes[0], nodes[1]
	u := newUser(t)
	a.enroll(t, u)

	onB := newClient(t, u, b.port, "")
	code := u.nextCode(t)
	onB.setCode(code)
	mustLogIn(t, onB, "login on node B with a device linked on node A")
	onA := newClient(t, u, a.port, "")
	onA.setCode(code)
	mustBeDenied(t, onA, "the code used on B, again on A")

	code = u.nextCode(t)
	var in atomic.Int32
	var wg sync.WaitGroup
	for i := range 40 {
		g := nodes[i%2]
		c := newClient(t, u, g.port, "")
		c.setCode(code)
		wg.Go(func() {
			if r := c.ssh(nil, "echo", "ok"); r.exit == 0 && r.stdout == "ok\n" {
				in.Add(1)
			}
		})
	}
	wg.Wait()
	if n := in.Load(); n != 1 {
		t.Errorf("40 concurrent logins with one code over two nodes: %d got in, want exactly 1", n)
	}
}

// TestClusterLockout: wrong codes from different addresses, spread over the
// nodes, lock the user after rate_limit.failures for the whole cluster.
func TestClusterLockout(t *testing.T) {
	t.Parallel()
	// The network threshold out of the way: this is about the user's count.
	noNetwork := func(y string) string { return strings.Replace(y, "network_failures: 3", "network_failures: 100", 1) }
	_, nodes := cluster(t, 1, 2, gkOptions{failures: 3, lockout: "10m", edit: noNetwork}, "")
	u := newUser(t)
	nodes[0].enroll(t, u)
	for i, src := range []string{"127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		c := newClient(t, u, nodes[i%2].port, src)
		c.setCode(u.wrongCode(t))
		mustBeDenied(t, c, "a wrong code")
	}
	for _, g := range nodes {
		c := newClient(t, u, g.port, "127.0.0.6")
		c.setCode(u.nextCode(t))
		mustBeDenied(t, c, "a right code after 3 wrong ones on two nodes")
	}
	if out := nodes[1].admin(t, "show", u.name); !strings.Contains(out, "locked") {
		t.Errorf("admin show on node B does not show the lockout:\n%s", out)
	}
	nodes[1].admin(t, "unlock", u.name)
	c := newClient(t, u, nodes[0].port, "127.0.0.6")
	c.setCode(u.nextCode(t))
	mustLogIn(t, c, "after admin unlock on the other node")
}

// TestClusterQuorum: the etcd leader down changes nothing (a login waits for
// the election of a new one); without quorum a login that needs a code is
// refused with a banner saying the service is unavailable while trusted
// logins go on; with quorum back code logins work again without a restart.
func TestClusterQuorum(t *testing.T) {
	t.Parallel()
	// A leader election takes 1-2 s with etcd's default election timeout
	// (1 s, randomised up to 2 s) and may need a second round: the request
	// timeout has to outlast it, as the README says of request_timeout.
	c, nodes := cluster(t, 3, 2, gkOptions{requestTimeout: "5s"}, "")
	a, b := nodes[0], nodes[1]
	u := newUser(t)
	a.enroll(t, u)

	// The leader, not any member: the worst case, a login during an election.
	leader := c.Leader(t)
	c.Kill(leader)
	cl := newClient(t, u, b.port, "")
	cl.setCode(u.nextCode(t))
	mustLogIn(t, cl, "the etcd leader down, two members of three up")

	c.Kill((leader + 1) % 3)
	cl.setCode(u.nextCode(t))
	// LogLevel=INFO: OpenSSH prints the server's auth banner only at INFO and above.
	r := cl.ssh([]string{"-o", "LogLevel=INFO"}, "echo", "ok")
	if r.exit != 255 || !strings.Contains(r.stderr, "login service is unavailable") {
		t.Errorf("refused without quorum, but no banner saying why: %s", r)
	}
	if !strings.Contains(string(b.logBytes()), "store_unavailable") {
		t.Error("node B's log does not say why it refused the login")
	}
	trusted := newClient(t, u, a.port, trustedAddr)
	mustLogIn(t, trusted, "a trusted login without quorum")

	c.Restart(leader)
	c.Restart((leader + 1) % 3)
	c.WaitHealthy(t)
	cl.setCode(u.nextCode(t))
	mustLogIn(t, cl, "quorum back")
}

// TestClusterBehindHAProxy: HAProxy sends PROXY v2 headers to two nodes; a
// trusted client is not asked for a code, an outside one is; with one node
// killed, new logins go to the other.
func TestClusterBehindHAProxy(t *testing.T) {
	t.Parallel()
	const lb = "127.0.0.9"
	_, nodes := cluster(t, 1, 2, gkOptions{}, lb)
	p := haproxytest.Start(t, haproxytest.Config{Backends: []string{nodes[0].addr(), nodes[1].addr()}, Source: lb})
	p.WaitBackendsUp(t, 2)
	port := portOf(t, p.Addr())
	u := newUser(t)
	nodes[0].enroll(t, u)

	trusted := newClient(t, u, port, trustedAddr)
	mustLogIn(t, trusted, "trusted client through HAProxy")
	if got := strings.Join(trusted.prompts(), "|"); strings.Contains(got, "Verification code") {
		t.Errorf("a trusted client through HAProxy was asked for a code: %q", got)
	}
	outside := newClient(t, u, port, "")
	outside.setCode(u.nextCode(t))
	mustLogIn(t, outside, "outside client through HAProxy")
	if got := strings.Join(outside.prompts(), "|"); !strings.Contains(got, "Verification code") {
		t.Errorf("an outside client through HAProxy was not asked for a code: %q", got)
	}

	nodes[0].kill9(t)
	p.WaitBackendDown(t, haproxytest.ServerName(0))
	for range 3 {
		outside.setCode(u.nextCode(t))
		mustLogIn(t, outside, "through HAProxy with node A killed")
	}
}

// portOf is the port of a host:port address.
func portOf(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
