// Package etcd is the store.Store shared by several gatekeeper nodes: every
// record lives in an etcd cluster, under one key prefix.
//
// # Keys
//
// Under the configured prefix P:
//
//	P meta/keycheck           the key check, sealed with the shared key file
//	P meta/hostkeys           the SSH host key fingerprints, as gatekeepers before key announcements check them
//	P hostkeys/NODE/LEASE     a running gatekeeper's SSH host keys, on its lease (see ClaimHostKeys)
//	P users/NAME              a user record (store.Codec's authenticated form)
//	P tickets/HEX             a ticket under the hex SHA-256 of its token, on a lease
//	P audit/NANOS-NODE-N      an audit event; keys sort by time, Seq is its revision
//	P limits/SCOPE/NAME       a lockout counter (see Limits)
//	P sessions/NODE/ID        a live SSH session, on its node's lease (see Sessions)
//	P kill/NODE/ID, P killuser/USER   requests to end sessions, on day-long leases
//	P election/prune          the node that prunes the audit log
//
// # Consistency
//
// Every read is linearizable and every change of a record is a transaction
// that compares the record's ModRevision with the one its value was read at
// and retries when another node wrote in between (Update may call its fn
// more than once). The value may be the one this node last read or wrote,
// remembered to save a read (see revCache): the comparison makes that as
// safe as a read, since a ModRevision names one value of a key. So
// the one-use rule of a time step holds for the whole cluster: of two nodes
// checking the same code at once, one transaction fails its comparison, and
// its retry sees the step used. Without quorum every call fails after
// request_timeout with an error matching store.ErrUnavailable: nothing is
// decided on stale data.
package etcd

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"gatekeeper/gatekeeper/store"
)

// Config is what Open needs to reach the cluster (config keys store.etcd.*).
type Config struct {
	Endpoints      []string
	Prefix         string
	DialTimeout    time.Duration
	RequestTimeout time.Duration
	TLSCA          string
	TLSCert        string
	TLSKey         string
	Username       string
	PasswordFile   string
	// KeyFile is the secret key file every node shares (secret_key_file).
	KeyFile string
	// Node names this gatekeeper (node_name) in audit keys and sessions.
	Node string
	// MustExist refuses a prefix that holds no store yet (no key check)
	// rather than start one there, writing nothing: for commands that only
	// read, to which an empty prefix is most likely a mistyped one.
	MustExist bool

	// dialOptions are added to the client's (tests count round trips).
	dialOptions []grpc.DialOption
}

// maxRetries bounds Update's compare-and-swap retries. Conflicts need
// another node writing the same record between a read and a write, a few
// milliseconds apart; this many in a row means something is wrong.
const maxRetries = 50

// Store is a store.Store in an etcd cluster. Its methods are safe for
// concurrent use.
type Store struct {
	cli     *clientv3.Client
	codec   *store.Codec
	prefix  string
	node    string
	timeout time.Duration
	keyPath string

	// seq makes audit keys of one node unique within a nanosecond.
	seq atomic.Uint64

	// ctx ends with Close; it stops the election and the watches.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// leader is whether this node holds the prune election.
	leader atomic.Bool

	// cache is what this node last saw of the keys it changes.
	cache revCache

	// requestTTL is how many seconds the kill requests this node writes
	// live (the const requestTTL; tests shorten it).
	requestTTL int64
}

// ErrNoStore is Open's error, with Config.MustExist, for a prefix that holds
// no store.
var ErrNoStore = errors.New("no store under this prefix")

// Open connects to the cluster, checks (or, on an empty prefix, writes) the
// key check against cfg.KeyFile and starts campaigning for the audit pruning
// election. A key file that does not match the cluster's is ErrKeyMismatch;
// a cluster that cannot be reached within DialTimeout + RequestTimeout is
// ErrUnavailable.
func Open(cfg Config) (*Store, error) {
	ccfg := clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		Username:    cfg.Username,
		// The client logs every retry at warning level; gatekeeper reports
		// what matters (a failed request) itself.
		Logger: zap.NewNop(),
		// Without this a member that is down keeps the client waiting on it.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		DialOptions:          cfg.dialOptions,
	}
	if cfg.PasswordFile != "" {
		pw, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("etcd password file: %w", err)
		}
		ccfg.Password = strings.TrimRight(string(pw), "\r\n")
	}
	if cfg.TLSCA != "" || cfg.TLSCert != "" {
		tc, err := tlsConfig(cfg)
		if err != nil {
			return nil, err
		}
		ccfg.TLS = tc
	}
	cli, err := clientv3.New(ccfg)
	if err != nil {
		return nil, fmt.Errorf("etcd cluster %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{cli: cli, prefix: cfg.Prefix, node: cfg.Node, timeout: cfg.RequestTimeout, keyPath: cfg.KeyFile, ctx: ctx, cancel: cancel,
		requestTTL: requestTTL}
	if err := s.init(cfg); err != nil {
		s.cancel()
		_ = cli.Close()
		return nil, err
	}
	s.wg.Go(s.campaign)
	return s, nil
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSCA != "" {
		pem, err := os.ReadFile(cfg.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("store.etcd.tls_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("store.etcd.tls_ca %s holds no PEM certificate", cfg.TLSCA)
		}
		tc.RootCAs = pool
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("store.etcd.tls_cert/tls_key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// init loads the key file and checks it against the cluster's key check,
// writing one when the prefix holds none yet (the first node).
func (s *Store) init(cfg Config) error {
	where := fmt.Sprintf("etcd cluster %s (prefix %s)", strings.Join(cfg.Endpoints, ","), s.prefix)
	ctx, cancel := context.WithTimeout(s.ctx, cfg.DialTimeout+s.timeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.key("meta/keycheck"))
	if err != nil {
		// Members that answer TCP but form no majority time out here too: say both.
		return s.fail(fmt.Sprintf("reach the cluster at %s (are a majority of its members up and reachable?)",
			strings.Join(cfg.Endpoints, ",")), err)
	}
	var check []byte
	if len(resp.Kvs) > 0 {
		check = resp.Kvs[0].Value
	}
	if check == nil && cfg.MustExist {
		return fmt.Errorf("%s holds no gatekeeper store (no %s): check store.etcd.prefix and endpoints in the config (or --config); "+
			"the daemon starts the store when it first starts: %w", where, s.key("meta/keycheck"), ErrNoStore)
	}
	key, _, err := store.LoadKey(cfg.KeyFile, where, check != nil)
	if err != nil {
		return err
	}
	if s.codec, err = store.NewCodec(key, where); err != nil {
		return fmt.Errorf("secret key %s: %w", cfg.KeyFile, err)
	}
	if check != nil {
		plain, err := s.codec.OpenKeyCheck(check)
		if err != nil || string(plain) != store.CheckPlain {
			return fmt.Errorf("secret key file %s is not the one the records in %s were sealed with: "+
				"copy secret_key_file from a node of the cluster (every node needs the same one): %w",
				cfg.KeyFile, where, store.ErrKeyMismatch)
		}
		return nil
	}
	sealed, err := s.codec.KeyCheck()
	if err != nil {
		return err
	}
	k := s.key("meta/keycheck")
	txn, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(sealed))).Commit()
	if err != nil {
		return s.fail("write the key check", err)
	}
	if !txn.Succeeded {
		// Another node was first, at the same moment: check against its key.
		return s.init(cfg)
	}
	return nil
}

// key is the full etcd key of name under the prefix.
func (s *Store) key(name string) string { return s.prefix + name }

// op returns a context bounded by the request timeout.
func (s *Store) op() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, s.timeout)
}

// attempt returns the context of one try of a write that is retried until
// deadline: half the request timeout, so that a write lost with a leader
// that died (etcd does not retry it, and it hangs until its deadline) leaves
// time for another try once a new leader is elected, well under a second on
// a healthy cluster.
func (s *Store) attempt(deadline time.Time) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithDeadline(s.ctx, deadline)
	inner, cancel2 := context.WithTimeout(ctx, s.timeout/2)
	return inner, func() { cancel2(); cancel() }
}

// fail turns a client error into one saying what was being done, matching
// store.ErrUnavailable when the cluster did not answer (see unavailable).
func (s *Store) fail(what string, err error) error {
	if !unavailable(err) {
		return fmt.Errorf("etcd: %s: %w", what, err)
	}
	return fmt.Errorf("etcd: %s: %w (%w)", what, store.ErrUnavailable, err)
}

// unavailable reports whether err is the cluster failing to answer (no
// quorum, no member reachable, out of space, a timeout) rather than a
// request it refused as such (too large, not permitted).
func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	// The client turns the server's errors into EtcdErrors, which carry
	// their gRPC code but show status.Code as Unknown.
	code := status.Code(err)
	if e, ok := errors.AsType[rpctypes.EtcdError](err); ok {
		code = e.Code()
	}
	// One member's answers while it is a learner being added, or during an
	// upgrade: another member serves the request.
	if errors.Is(err, rpctypes.ErrNotCapable) || rpctypes.ErrorDesc(err) == rpctypes.ErrorDesc(rpctypes.ErrGRPCNotSupportedForLearner) {
		return true
	}
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.ResourceExhausted, codes.Unknown:
		return true
	}
	return false
}

// Close stops the election and closes the connection.
func (s *Store) Close() error {
	s.cancel()
	s.wg.Wait()
	return s.cli.Close()
}

// Client is the etcd client, for the parts of the daemon that keep their
// own keys under the prefix (Limits, Sessions).
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix is the key prefix every key lives under.
func (s *Store) Prefix() string { return s.prefix }

// Node is this gatekeeper's node name.
func (s *Store) Node() string { return s.node }

// Timeout is the request timeout.
func (s *Store) Timeout() time.Duration { return s.timeout }

// Get returns name's record without its secrets (see store.Store).
func (s *Store) Get(name string) (store.User, error) {
	if err := store.CheckName(name); err != nil {
		return store.User{}, err
	}
	// Remembered for the Update that usually follows (a login spends a step
	// of the record it has just read).
	cur, err := s.read("read user "+name, []string{s.key("users/" + name)})
	if err != nil {
		return store.User{Name: name}, err
	}
	return s.codec.DecodeUser(name, cur[0].val)
}

// List returns every user with a record, sorted by name; damaged records
// come back apart (see store.Store).
func (s *Store) List() ([]store.User, error) {
	ctx, cancel := s.op()
	defer cancel()
	p := s.key("users/")
	resp, err := s.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, s.fail("list users", err)
	}
	l := store.Lister{Codec: s.codec}
	for _, kv := range resp.Kvs {
		l.Add(strings.TrimPrefix(string(kv.Key), p), kv.Value)
	}
	return l.Result()
}

// Delete removes name's record. A record stored under an invalid name (put
// there by hand with etcdctl) is removed too: the delete is of that one key,
// never a range; an invalid name without a record is ErrBadName.
func (s *Store) Delete(name string) (bool, error) {
	ctx, cancel := s.op()
	defer cancel()
	resp, err := s.cli.Delete(ctx, s.key("users/"+name))
	if err != nil {
		return false, s.fail(fmt.Sprintf("delete user %q", name), err)
	}
	if err := store.CheckDeleteName(name, resp.Deleted > 0); err != nil {
		return false, err
	}
	return resp.Deleted > 0, nil
}

// Update changes name's record with a compare-and-swap on its revision,
// retried when another node wrote it in between; fn may run more than once
// (see readModifyWrite).
func (s *Store) Update(name string, fn func(u *store.User) error) error {
	if err := store.CheckName(name); err != nil {
		return err
	}
	return s.readModifyWrite("update user "+name, []string{s.key("users/" + name)}, func(vals [][]byte) error {
		v, del, err := s.codec.Apply(name, vals[0], fn)
		if err != nil {
			return err
		}
		if del {
			v = nil
		}
		vals[0] = v
		return nil
	})
}

// pending is a write whose outcome is unknown: the bytes it put (or that it
// deleted) over the revision it compared against, and whether that revision
// was only the one remembered (see revCache).
type pending struct {
	value []byte
	del   bool
	rev   int64
	guess bool
}

// applied reports whether the key, now holding raw at revision rev (0 and
// nil: gone), shows the pending write: changed since, and to what it wrote.
// A key gone after a delete compared against a remembered revision is not
// taken as applied: another node may have deleted it before, failing the
// comparison; fn then runs again on what is there.
func (p *pending) applied(raw []byte, rev int64) bool {
	if p.del {
		return raw == nil && p.rev != 0 && !p.guess
	}
	return rev > p.rev && bytes.Equal(raw, p.value)
}

// retry reports whether a failed call may be tried again before deadline,
// after a short pause: an error that comes back at once (no member
// reachable) must not spin through the retries.
func (s *Store) retry(deadline time.Time) bool {
	if s.ctx.Err() != nil || !time.Now().Add(retryPause).Before(deadline) {
		return false
	}
	sleep(s.ctx, retryPause)
	return true
}

// retryPause is the pause before a failed call is tried again.
const retryPause = 50 * time.Millisecond

// campaign keeps this node in the election for pruning the audit log, for as
// long as the store is open: on a lost session (quorum gone, this node cut
// off) it starts again.
func (s *Store) campaign() {
	for s.ctx.Err() == nil {
		sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(10), concurrency.WithContext(s.ctx))
		if err != nil {
			sleep(s.ctx, time.Second)
			continue
		}
		e := concurrency.NewElection(sess, s.key("election/prune"))
		if err := e.Campaign(s.ctx, s.node); err == nil {
			s.leader.Store(true)
			select {
			case <-sess.Done():
			case <-s.ctx.Done():
			}
			s.leader.Store(false)
		}
		_ = sess.Close()
	}
}

// Leader reports whether this node is the one that prunes the audit log.
func (s *Store) Leader() bool { return s.leader.Load() }

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

var (
	_ store.Store  = (*Store)(nil)
	_ store.Pruner = (*Store)(nil)
)
