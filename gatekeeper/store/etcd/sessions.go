package etcd

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"gatekeeper/gatekeeper/store"
)

// Leases and retries of the session registry.
const (
	// sessionTTL is the TTL in seconds of a node's lease on its sessions: a
	// node that dies leaves the registry this long after its last keep-alive.
	sessionTTL = 10
	// requestTTL is how many seconds a kill request lives. A node whose
	// watch comes back after the cluster compacted the revisions it missed
	// reads the requests still live (Sessions.catchUp): a reset or kill
	// reaches a node cut off from etcd for up to this long. A day: a
	// request is one small key, and resets and kills are few.
	requestTTL = 24 * 60 * 60
	// retryEvery is how often the registry tries again while the cluster
	// does not answer.
	retryEvery = time.Second
	// publishAfter is how long the registry gathers changes before it
	// writes them, in one transaction: a session that ends within it (a
	// scripted `ssh host cmd`, an scp of a small file) costs the cluster no
	// write at all, and a login storm a few transactions, not two writes
	// per session.
	publishAfter = 500 * time.Millisecond
)

// LiveSessions lists the live sessions every node registered (P sessions/).
func (s *Store) LiveSessions(ctx context.Context) ([]store.LiveSession, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.key("sessions/"), clientv3.WithPrefix())
	if err != nil {
		return nil, s.fail("list sessions", err)
	}
	out := make([]store.LiveSession, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var l store.LiveSession
		if json.Unmarshal(kv.Value, &l) == nil {
			out = append(out, l)
		}
	}
	return out, nil
}

// RequestKill asks node to end its session id (P kill/NODE/ID).
func (s *Store) RequestKill(ctx context.Context, node string, id uint64) error {
	return s.request(ctx, fmt.Sprintf("kill/%s/%d", node, id), store.KillRequest{ID: id, By: s.node})
}

// RequestKillUser asks every other node to end user's sessions
// (P killuser/USER).
func (s *Store) RequestKillUser(ctx context.Context, user string) error {
	if err := store.CheckName(user); err != nil {
		return err
	}
	return s.request(ctx, "killuser/"+user, store.KillRequest{User: user, By: s.node})
}

// RequestKillKey asks every other node to end user's sessions that logged in
// with the key of fingerprint fp (P killuser/USER/key/HEX: the watch of
// killuser/ delivers it).
func (s *Store) RequestKillKey(ctx context.Context, user, fp string) error {
	if err := store.CheckName(user); err != nil {
		return err
	}
	return s.request(ctx, "killuser/"+user+"/key/"+hex.EncodeToString([]byte(fp)), store.KillRequest{User: user, Key: fp, By: s.node})
}

// request writes r under name on a lease of its own, so that it vanishes on
// its own after s.requestTTL seconds.
func (s *Store) request(ctx context.Context, name string, r store.KillRequest) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	lease, err := s.cli.Grant(ctx, s.requestTTL)
	if err != nil {
		return s.fail("write "+name, err)
	}
	if _, err := s.cli.Put(ctx, s.key(name), string(v), clientv3.WithLease(lease.ID)); err != nil {
		return s.fail("write "+name, err)
	}
	return nil
}

// Sessions is one node's part of the cluster's registry of live sessions
// (gatekeeper.SessionRegistry): it keeps this node's sessions under
// P sessions/NODE/ID, each on the node's lease (TTL 10 s, kept alive), so
// that they vanish when the node dies; and it watches P kill/NODE/ and
// P killuser/ for requests of other nodes, delivered on Kills.
//
// Register and Unregister never wait for the cluster: one goroutine writes
// what changed, and when the lease is lost (the cluster was out of reach for
// longer than its TTL) it takes a new one, clears what this node left under
// its name and writes every live session again. Close revokes the lease.
type Sessions struct {
	st    *Store
	log   *slog.Logger
	kills chan store.KillRequest
	// wake tells the keeper that live changed.
	wake chan struct{}

	mu   sync.Mutex
	live map[uint64]string // this node's sessions, encoded

	// failing is whether the last sync failed (owned by keep's goroutine),
	// so that an outage is logged once, not every second.
	failing bool

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// NewSessions starts this node's part of the session registry on st; Close
// stops it. log (nil: none) gets the registry's troubles.
func NewSessions(st *Store, log *slog.Logger) *Sessions {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Sessions{
		st: st, log: log,
		kills: make(chan store.KillRequest, 64),
		wake:  make(chan struct{}, 1),
		live:  map[uint64]string{},
		ctx:   ctx, cancel: cancel,
	}
	r.wg.Go(r.keep)
	r.wg.Go(func() { r.watch("kill/"+st.node+"/", false) })
	r.wg.Go(func() { r.watch("killuser/", true) })
	return r
}

// Register records this node's session l (written in the background).
func (r *Sessions) Register(l store.LiveSession) {
	l.Node = r.st.node
	v, err := json.Marshal(l)
	if err != nil {
		return
	}
	r.mu.Lock()
	r.live[l.ID] = string(v)
	r.mu.Unlock()
	r.poke()
}

// Unregister forgets this node's session id (deleted in the background).
func (r *Sessions) Unregister(id uint64) {
	r.mu.Lock()
	delete(r.live, id)
	r.mu.Unlock()
	r.poke()
}

func (r *Sessions) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// List returns the live sessions of every node.
func (r *Sessions) List(ctx context.Context) ([]store.LiveSession, error) {
	return r.st.LiveSessions(ctx)
}

// RequestKill asks node to end its session id.
func (r *Sessions) RequestKill(ctx context.Context, node string, id uint64) error {
	return r.st.RequestKill(ctx, node, id)
}

// RequestKillUser asks every other node to end user's sessions.
func (r *Sessions) RequestKillUser(ctx context.Context, user string) error {
	return r.st.RequestKillUser(ctx, user)
}

// RequestKillKey asks every other node to end user's sessions that logged in
// with the key of fingerprint fp.
func (r *Sessions) RequestKillKey(ctx context.Context, user, fp string) error {
	return r.st.RequestKillKey(ctx, user, fp)
}

// Kills delivers the kill requests of other nodes addressed to this one.
// It is closed by Close.
func (r *Sessions) Kills() <-chan store.KillRequest { return r.kills }

// Close stops the registry and revokes this node's lease, which removes its
// sessions from the registry at once. Call it after the sessions ended (the
// front door's Shutdown) and before closing the store.
func (r *Sessions) Close() error {
	r.closeOnce.Do(func() {
		r.cancel()
		r.wg.Wait()
		close(r.kills)
	})
	return nil
}

// keep holds this node's lease and writes its sessions under it, until Close.
func (r *Sessions) keep() {
	var lease clientv3.LeaseID
	defer func() {
		if lease != 0 {
			ctx, cancel := context.WithTimeout(context.Background(), r.st.timeout)
			defer cancel()
			_, _ = r.st.cli.Revoke(ctx, lease)
		}
	}()
	lost := false
	for r.ctx.Err() == nil {
		id, alive, err := r.grant()
		if err != nil {
			sleep(r.ctx, retryEvery)
			continue
		}
		lease = id
		if lost {
			r.log.Info("session registry: new lease, registering this node's sessions again")
		}
		written := map[uint64]bool{}
		clean := false
		// due fires when the changes gathered are to be written (at once
		// under a new lease); retry, after a sync that failed.
		var due, retry <-chan time.Time
		due = time.After(0)
	leased:
		for {
			select {
			case <-r.ctx.Done():
				return
			case _, ok := <-alive:
				if !ok {
					break leased // the lease is gone
				}
				continue // drained; nothing to do
			case <-r.wake:
				if due == nil && retry == nil {
					due = time.After(publishAfter)
				}
				continue
			case <-due:
			case <-retry:
			}
			due, retry = nil, nil
			if !r.sync(lease, written, &clean) {
				retry = time.After(retryEvery)
			}
		}
		if r.ctx.Err() != nil {
			return // closing: the keep-alive ended with the context
		}
		r.log.Warn("session registry: lease lost (the etcd cluster was out of reach); taking a new one")
		lease, lost = 0, true
	}
}

// grant takes a new lease and keeps it alive until Close.
func (r *Sessions) grant() (clientv3.LeaseID, <-chan *clientv3.LeaseKeepAliveResponse, error) {
	ctx, cancel := r.st.op()
	defer cancel()
	g, err := r.st.cli.Grant(ctx, sessionTTL)
	if err != nil {
		return 0, nil, err
	}
	alive, err := r.st.cli.KeepAlive(r.ctx, g.ID)
	if err != nil {
		return 0, nil, err
	}
	return g.ID, alive, nil
}

// sync writes to the cluster what changed in live since written, first
// clearing what this node left under its name under an earlier lease (clean
// false), in transactions of at most maxTxnOps operations. It reports
// whether it all went through.
//
// written holds the sessions that may be in the cluster under lease: true
// when a write of them was answered, false when its answer was lost (it may
// have been applied). A session is put again until written is true, and
// deleted once it ended if it is in written at all, so that a write applied
// with its answer lost does not leave an ended session listed for as long as
// the lease lives.
func (r *Sessions) sync(lease clientv3.LeaseID, written map[uint64]bool, clean *bool) bool {
	dir := r.st.key("sessions/" + r.st.node + "/")
	if !*clean {
		ctx, cancel := r.st.op()
		_, err := r.st.cli.Delete(ctx, dir, clientv3.WithPrefix())
		cancel()
		if err != nil {
			return r.syncFailed(err)
		}
		*clean = true
	}
	var ops []clientv3.Op
	var ids []uint64
	r.mu.Lock()
	for id, v := range r.live {
		if !written[id] {
			ops = append(ops, clientv3.OpPut(dir+strconv.FormatUint(id, 10), v, clientv3.WithLease(lease)))
			ids = append(ids, id)
		}
	}
	for id := range written {
		if _, ok := r.live[id]; !ok {
			ops = append(ops, clientv3.OpDelete(dir+strconv.FormatUint(id, 10)))
			ids = append(ids, id)
		}
	}
	r.mu.Unlock()
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		ctx, cancel := r.st.op()
		_, err := r.st.cli.Txn(ctx).Then(ops[:n]...).Commit()
		cancel()
		if err != nil {
			for i, id := range ids[:n] {
				if !ops[i].IsDelete() {
					written[id] = false
				}
			}
			return r.syncFailed(err)
		}
		for i, id := range ids[:n] {
			if ops[i].IsDelete() {
				delete(written, id)
			} else {
				written[id] = true
			}
		}
		ops, ids = ops[n:], ids[n:]
	}
	if r.failing {
		r.log.Info("session registry: this node's sessions are written to etcd again")
	}
	r.failing = false
	return true
}

// syncFailed logs the first of a run of failed syncs and returns false.
func (r *Sessions) syncFailed(err error) bool {
	if !r.failing {
		r.log.Warn("session registry: cannot write this node's sessions to etcd; trying again every second", "err", err)
	}
	r.failing = true
	return false
}

// watch delivers the requests put under name (under the prefix) on Kills
// until Close, skipping this node's own when own is set. After a broken
// watch it resumes after the last revision it saw, so that no request is
// missed while the cluster was out of reach; when the cluster compacted
// those revisions meanwhile, it reads the requests still live instead (they
// live requestTTL on their lease), so that a reset or kill made during the
// gap still reaches this node.
func (r *Sessions) watch(name string, skipOwn bool) {
	key := r.st.key(name)
	// deliver hands on the request stored in kv; false when Close came first.
	deliver := func(kv *mvccpb.KeyValue) bool {
		var req store.KillRequest
		if json.Unmarshal(kv.Value, &req) != nil || skipOwn && req.By == r.st.node {
			return true
		}
		if !skipOwn {
			// kill/NODE/ID: the key names the session.
			id, err := strconv.ParseUint(strings.TrimPrefix(string(kv.Key), key), 10, 64)
			if err != nil {
				return true
			}
			req.ID, req.User = id, ""
		}
		select {
		case r.kills <- req:
			return true
		case <-r.ctx.Done():
			return false
		}
	}
	var rev int64
	for r.ctx.Err() == nil {
		if rev == 0 {
			ctx, cancel := r.st.op()
			resp, err := r.st.cli.Get(ctx, key, clientv3.WithPrefix(), clientv3.WithCountOnly())
			cancel()
			if err != nil {
				sleep(r.ctx, retryEvery)
				continue
			}
			rev = resp.Header.Revision
		}
		ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(r.ctx))
		wc := r.st.cli.Watch(ctx, key, clientv3.WithPrefix(), clientv3.WithFilterDelete(), clientv3.WithRev(rev+1))
		for resp := range wc {
			if resp.CompactRevision != 0 {
				// The revisions after rev are gone: read what is live now.
				if !r.catchUp(key, &rev, deliver) {
					cancel()
					return
				}
				break
			}
			if resp.Err() != nil {
				break
			}
			for _, ev := range resp.Events {
				rev = max(rev, ev.Kv.ModRevision)
				if !deliver(ev.Kv) {
					cancel()
					return
				}
			}
		}
		cancel()
		sleep(r.ctx, retryEvery)
	}
}

// catchUp delivers the requests under key written after *rev and still
// live, and moves *rev to the revision it read at; when the read fails *rev
// stays, and the next watch (met by the compaction again) tries once more.
// False when Close came first.
func (r *Sessions) catchUp(key string, rev *int64, deliver func(*mvccpb.KeyValue) bool) bool {
	ctx, cancel := r.st.op()
	resp, err := r.st.cli.Get(ctx, key, clientv3.WithPrefix())
	cancel()
	if err != nil {
		return r.ctx.Err() == nil
	}
	for _, kv := range resp.Kvs {
		if kv.ModRevision > *rev && !deliver(kv) {
			return false
		}
	}
	*rev = resp.Header.Revision
	return true
}
