package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

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
// knows, so a type only one of them offers (one being added or dropped) does
// not change the key it sees.
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
	for _, fp := range h.Announced {
		if !slices.Contains(slices.Collect(maps.Values(h.Handshake)), fp) {
			more = append(more, fp)
		}
	}
	if len(more) == 0 {
		return "in use: " + strings.Join(used, ", ")
	}
	return "in use: " + strings.Join(used, ", ") + "; also announced: " + strings.Join(more, ", ")
}

// ClaimHostKeys checks this node's host keys against those of every other
// running node and, when they go together (see HostKeys.compatible), records
// them under P hostkeys/NODE, on a lease kept alive until Close: clients
// behind the load balancer would otherwise see the host key change from one
// login to the next. A key rotation so rolls through the nodes one at a
// time (a new key listed last on every node, then first, then the old one
// removed), and a node that is a step ahead of another, or has another
// key, is refused with a HostKeyError. The entries are read and this one
// written in one transaction that fails if an entry changed in between, so
// two nodes starting at once are checked against each other. With no other
// node running, anything goes: after a key is lost or stolen, stop every
// node and start them with the new key. Call it once per Store.
//
// P meta/hostkeys gets the announced fingerprints, in the form gatekeepers
// before key announcements compare with theirs, so that one of those still
// starts beside this one when the keys are the same.
func (s *Store) ClaimHostKeys(mine HostKeys) error {
	value, err := json.Marshal(mine)
	if err != nil {
		return err
	}
	prefix, own := s.key("hostkeys/"), s.key("hostkeys/"+s.node)
	for range 5 {
		ctx, cancel := s.op()
		resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
		cancel()
		if err != nil {
			return s.fail("check the host keys", err)
		}
		for _, kv := range resp.Kvs {
			if string(kv.Key) == own {
				continue // this node's, from before a restart
			}
			var other HostKeys
			if err := json.Unmarshal(kv.Value, &other); err != nil {
				continue // not a gatekeeper's entry: nothing to compare
			}
			if !mine.compatible(other) {
				return &HostKeyError{Have: mine, Node: strings.TrimPrefix(string(kv.Key), prefix), Other: other}
			}
		}
		ctx, cancel = s.op()
		lease, err := s.cli.Grant(ctx, hostKeysTTL)
		if err != nil {
			cancel()
			return s.fail("record the host keys", err)
		}
		txn, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(prefix).WithPrefix(), "<", resp.Header.Revision+1)).
			Then(clientv3.OpPut(own, string(value), clientv3.WithLease(lease.ID)),
				clientv3.OpPut(s.key("meta/hostkeys"), strings.Join(mine.Announced, " "))).
			Commit()
		cancel()
		if err == nil && txn.Succeeded {
			s.wg.Go(func() { s.keepHostKeys(own, string(value), lease.ID) })
			return nil
		}
		s.revoke(lease.ID)
		if err != nil {
			return s.fail("record the host keys", err)
		}
		// Another node's entry changed in between: check against it.
	}
	return s.fail("record the host keys", errors.New("the other nodes' entries kept changing"))
}

// keepHostKeys keeps the lease of this node's hostkeys/NODE entry alive
// until Close, which revokes it; when the lease is lost (the cluster was out
// of reach for longer than its TTL) it writes the entry again on a new one.
func (s *Store) keepHostKeys(key, value string, lease clientv3.LeaseID) {
	defer func() { s.revoke(lease) }()
	for {
		if alive, err := s.cli.KeepAlive(s.ctx, lease); err == nil {
			for range alive {
			}
		}
		if s.ctx.Err() != nil {
			return
		}
		sleep(s.ctx, retryEvery)
		ctx, cancel := s.op()
		g, err := s.cli.Grant(ctx, hostKeysTTL)
		if err == nil {
			if _, err = s.cli.Put(ctx, key, value, clientv3.WithLease(g.ID)); err == nil {
				lease = g.ID
			}
		}
		cancel()
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
