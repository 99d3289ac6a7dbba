package etcdtest

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// put writes key=value through cli with a deadline and reads it back.
func put(t *testing.T, cli *clientv3.Client, timeout time.Duration, key, value string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if _, err := cli.Put(ctx, key, value); err != nil {
		return err
	}
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return err
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != value {
		t.Fatalf("get %s: %v, want %q", key, resp.Kvs, value)
	}
	return nil
}

func TestSingleMember(t *testing.T) {
	start := time.Now()
	c := Start(t, 1)
	t.Logf("1-member cluster healthy after %v", time.Since(start).Round(time.Millisecond))
	eps := c.Endpoints()
	if len(eps) != 1 || !strings.HasPrefix(eps[0], "http://127.0.0.1:") {
		t.Fatalf("Endpoints() = %v", eps)
	}
	if err := put(t, c.Client(t), 2*time.Second, "k", "v"); err != nil {
		t.Fatal(err)
	}
}

func TestThreeMembersQuorum(t *testing.T) {
	start := time.Now()
	c := Start(t, 3)
	t.Logf("3-member cluster healthy after %v", time.Since(start).Round(time.Millisecond))
	eps := c.Endpoints()
	if len(eps) != 3 {
		t.Fatalf("Endpoints() = %v", eps)
	}
	cli := c.Client(t)
	if err := put(t, cli, 2*time.Second, "a", "1"); err != nil {
		t.Fatalf("healthy cluster: %v", err)
	}

	// The leader killed: the other two still have a quorum once they have elected a new leader.
	// A write proposed in between can be lost with the leader and only fails at its deadline
	// ("etcdserver: request timed out"); the client does not retry it, so the test does.
	leader := c.Leader(t)
	c.Kill(leader)
	killed := time.Now()
	failed := 0
	for {
		err := put(t, cli, time.Second, "a", "2")
		if err == nil {
			break
		}
		failed++
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("after Kill(%d) (the leader): no write for 10 s: %v", leader, err)
		}
		t.Logf("write after killing the leader: %v", err)
	}
	t.Logf("first write after killing the leader: %v (%d failed attempts)", time.Since(killed).Round(time.Millisecond), failed)
	// Once the cluster is healthy again, writes go through at once.
	c.WaitHealthy(t)
	if err := put(t, cli, time.Second, "a", "2"); err != nil {
		t.Fatalf("after Kill(%d) and WaitHealthy: %v", leader, err)
	}
	follower := (leader + 1) % 3
	other := 3 - leader - follower

	// Two of three gone: no quorum, a write runs into its deadline.
	c.Stop(follower)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err := cli.Put(ctx, "a", "3")
	cancel()
	if err == nil {
		t.Fatal("a write succeeded with only one of three members running")
	}
	t.Logf("write without quorum: %v", err)

	// Both back: the quorum returns without anything else restarting.
	restart := time.Now()
	c.Restart(leader)
	c.Restart(follower)
	c.WaitHealthy(t)
	t.Logf("quorum back %v after restarting", time.Since(restart).Round(time.Millisecond))
	if err := put(t, cli, 2*time.Second, "a", "4"); err != nil {
		t.Fatalf("after Restart(%d), Restart(%d) (member %d ran throughout): %v", leader, follower, other, err)
	}
	// Every member, restarted ones included, has the data.
	for _, ep := range c.Endpoints() {
		one, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := one.Get(ctx, "a")
		cancel()
		_ = one.Close()
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "4" {
			t.Fatalf("get a from %s: %v %v", ep, resp, err)
		}
	}
}

func TestRestartWithoutQuorumThenWaitHealthy(t *testing.T) {
	c := Start(t, 3)
	c.Stop(0)
	c.Stop(1)
	c.Stop(2)
	// Alone, a member cannot serve: Restart returns once it listens.
	c.Restart(2)
	c.Restart(0)
	c.WaitHealthy(t)
	if err := put(t, c.Client(t), 5*time.Second, "b", "1"); err != nil {
		t.Fatal(err)
	}
}

// A member whose port another process took exits at once, and Start recognises that as a port
// race (the case it retries with new ports) instead of waiting for the member to serve.
func TestPortTakenIsRecognised(t *testing.T) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd not on PATH (make test installs etcd-server): %v", err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, bin: bin, token: "etcdtest-port-race"}
	c.members = []*member{{
		name:       "m0",
		dir:        t.TempDir(),
		clientPort: taken.Addr().(*net.TCPAddr).Port,
		peerPort:   ports[0],
	}}
	t.Cleanup(c.killAll)
	if err := c.startMember(0, "new"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = c.waitServes(0, time.Now().Add(10*time.Second))
	var pt portTakenError
	if !errors.As(err, &pt) {
		t.Fatalf("waitServes with the client port taken: %v, want a portTakenError", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("noticed the exit after %v", d)
	}
	t.Logf("%v", err)
}
