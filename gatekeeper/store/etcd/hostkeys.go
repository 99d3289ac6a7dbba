package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// hostKeysTTL is the TTL in seconds of the lease a node's hostkeys/NODE
// entry lives on (kept alive while the node runs): a node that died stops
// counting this long after.
const hostKeysTTL = 10

// HostKeys names a node's SSH host keys by their SHA-256 fingerprints:
// Handshake, the key of each type it offers in key exchanges (the first of
// each type in host_key_files), by key type; and Announced, all of them,
// sorted, which it tells clients after login (OpenSSH's UpdateHostKeys).
type HostKeys struct {
	Handshake map[string]string `json:"handshake"`
	Announced []string          `json:"announced"`
}

// compatible reports whether a node presenting h may serve beside one
// presenting o, behind the same name: they share a key type in key
// exchanges, and for each type they share, each one's key is announced by
// the other. A client that logs in at either then learns (or keeps) the key
// the other would show it; OpenSSH's client asks first for the key types it
// knows, so a type only one of them offers, being added, does not change the
// key a client sees. (A type being dropped does, for a client that knows
// only that type: it is then asked to accept the other type's key.)
func (h HostKeys) compatible(o HostKeys) bool {
	shared := false
	for typ, fp := range h.Handshake {
		ofp, ok := o.Handshake[typ]
		if !ok {
			continue
		}
		shared = true
		if !slices.Contains(o.Announced, fp) || !slices.Contains(h.Announced, ofp) {
			return false
		}
	}
	return shared
}

// String lists the keys for people: those in use, then the others.
func (h HostKeys) String() string {
	var used, more []string
	for _, typ := range slices.Sorted(maps.Keys(h.Handshake)) {
		used = append(used, typ+" "+h.Handshake[typ])
	}
	inUse := slices.Collect(maps.Values(h.Handshake))
	for _, fp := range h.Announced {
		if !slices.Contains(inUse, fp) {
			more = append(more, fp)
		}
	}
	if len(more) == 0 {
		return "in use: " + strings.Join(used, ", ")
	}
	return "in use: " + strings.Join(used, ", ") + "; also announced: " + strings.Join(more, ", ")
}

// ClaimHostKeys checks this node's host keys against those of every running
// gatekeeper and, when they go together (see HostKeys.compatible), records
// them under P hostkeys/NODE/LEASE, on a lease kept alive until Close:
// clients behind the load balancer would otherwise see the host key change
// from one login to the next. A key rotation so rolls through the nodes one
// at a time (a new key listed last on every node, then first, then the old
// one removed), and a node that is a step ahead of another, or has another
// key, is refused with a HostKeyError. Each process has an entry of its own
// (a second process with the same node_name is checked like any other; a
// node killed without Close leaves its entry for the lease's 10 s). The
// entries are read and this one written in one transaction that fails if an
// entry was added or changed in between, so two nodes starting at once are
// checked against each other. With no other node running, anything goes:
// after a key is lost or stolen, stop every node and start them with the
// new key. When the lease is lost (the cluster out of reach for longer than
// its TTL) the entry is claimed again, with the same check; a node that
// started meanwhile with keys that do not go with these is logged to log
// at Error until one of them is restarted. Call it once per Store.
//
// P meta/hostkeys gets the announced fingerprints, in the form gatekeepers
// before key announcements compare with theirs, so that one of those still
// starts beside this one when the keys are the same.
func (s *Store) ClaimHostKeys(mine HostKeys, log *slog.Logger) error {
	b, err := json.Marshal(mine)
	if err != nil {
		return err
	}
	value := string(b)
	lease, err := s.claimHostKeys(mine, value)
	if err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s.wg.Go(func() { s.keepHostKeys(mine, value, lease, log) })
	return nil
}

// claimHostKeys is ClaimHostKeys' check and write, on a new lease it returns.
func (s *Store) claimHostKeys(mine HostKeys, value string) (clientv3.LeaseID, error) {
	prefix := s.key("hostkeys/")
	for range 5 {
		ctx, cancel := s.op()
		resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
		cancel()
		if err != nil {
			return 0, s.fail("check the host keys", err)
		}
		for _, kv := range resp.Kvs {
			var other HostKeys
			if err := json.Unmarshal(kv.Value, &other); err != nil {
				continue // not a gatekeeper's entry: nothing to compare
			}
			if !mine.compatible(other) {
				node := strings.TrimPrefix(string(kv.Key), prefix)
				if i := strings.LastIndexByte(node, '/'); i >= 0 {
					node = node[:i]
				}
				return 0, &HostKeyError{Have: mine, Node: node, Other: other}
			}
		}
		ctx, cancel = s.op()
		lease, err := s.cli.Grant(ctx, hostKeysTTL)
		if err != nil {
			cancel()
			return 0, s.fail("record the host keys", err)
		}
		own := s.key(fmt.Sprintf("hostkeys/%s/%x", s.node, int64(lease.ID)))
		txn, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(prefix).WithPrefix(), "<", resp.Header.Revision+1)).
			Then(clientv3.OpPut(own, value, clientv3.WithLease(lease.ID)),
				clientv3.OpPut(s.key("meta/hostkeys"), strings.Join(mine.Announced, " "))).
			Commit()
		cancel()
		if err == nil && txn.Succeeded {
			return lease.ID, nil
		}
		s.revoke(lease.ID)
		if err != nil {
			return 0, s.fail("record the host keys", err)
		}
		// Another entry was added or changed in between: check against it.
	}
	return 0, s.fail("record the host keys", errors.New("the other nodes' entries kept changing"))
}

// keepHostKeys keeps the lease of this node's entry alive until Close, which
// revokes it; when the lease is lost it claims the entry again
// (claimHostKeys), every second while the cluster is out of reach and every
// hostKeysTTL seconds while a running node's keys do not go with these.
func (s *Store) keepHostKeys(mine HostKeys, value string, lease clientv3.LeaseID, log *slog.Logger) {
	defer func() { s.revoke(lease) }()
	var conflict string // the HostKeyError logged last, if any
	for {
		if alive, err := s.cli.KeepAlive(s.ctx, lease); err == nil {
			for range alive {
			}
		}
		if s.ctx.Err() != nil {
			return
		}
		log.Warn("host keys: this node's entry in the etcd cluster was lost (the cluster was out of reach); claiming it again")
		for {
			sleep(s.ctx, retryEvery)
			if s.ctx.Err() != nil {
				return
			}
			id, err := s.claimHostKeys(mine, value)
			if err == nil {
				if conflict != "" {
					log.Info("host keys: this node's entry in the etcd cluster is back; its keys go with the running nodes' again")
				}
				lease, conflict = id, ""
				break
			}
			var he *HostKeyError
			if errors.As(err, &he) {
				if err.Error() != conflict {
					log.Error("host keys: a node started while this one was cut off from the etcd cluster, and "+
						"their keys do not go together: clients may see the host key change between logins; restart "+
						"one of them with the other's host_key_files", "err", err)
					conflict = err.Error()
				}
				sleep(s.ctx, hostKeysTTL*time.Second)
			}
		}
	}
}

// revoke revokes lease, if the cluster answers in time.
func (s *Store) revoke(lease clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	_, _ = s.cli.Revoke(ctx, lease)
}

// HostKeyError is ClaimHostKeys' error for a node whose host keys do not go
// with those of a running node.
type HostKeyError struct {
	Have  HostKeys
	Node  string // the running node
	Other HostKeys
}

func (e *HostKeyError) Error() string {
	return fmt.Sprintf("this node's SSH host keys (%s) do not go with those of the running node %s (%s): clients "+
		"would see the host key change. Copy the files of host_key_files from a running node to this one (same "+
		"paths, mode 0600) and start again; to replace the host key, take each step of the README's rotation "+
		"(new key listed last, then first, then the old one removed) on every node before the next",
		e.Have, e.Node, e.Other)
}
