package etcd

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// UpdateKeys updates a few keys under the prefix atomically: it calls fn
// with their values (nil for a missing key) and writes back what fn changed,
// comparing every key's revision with the one its values were read at, and
// retrying on a conflict (see readModifyWrite). Nothing is written when fn
// changes nothing. It is how the nodes share their lockout counters.
func (s *Store) UpdateKeys(keys []string, fn func(vals [][]byte) error) error {
	full := make([]string, len(keys))
	for i, k := range keys {
		full[i] = s.key(k)
	}
	return s.readModifyWrite("update "+strings.Join(keys, ", "), full, fn)
}

// readModifyWrite changes keys atomically: fn gets their values (nil for a
// missing key) and leaves the new ones in their place (nil: delete), and one
// transaction writes what changed if every key's ModRevision is still the
// one its value was read at. fn may run more than once and must depend on
// nothing but the values.
//
// The first try takes the values from s.cache instead of reading them (an
// unknown key as missing): a node settles the lockout counters it reserved,
// and spends the step of the record it has just read, so the guess is
// usually right, and then the change costs the cluster one round trip
// instead of two. The transaction's Else branch reads the keys, so a wrong
// guess costs nothing more than the read it replaced; fn then runs again on
// the values read. Nothing is decided on a guess alone: an error of fn, or a
// change of nothing, on guessed values is confirmed by the same comparison,
// with nothing to write, before it is returned.
func (s *Store) readModifyWrite(what string, keys []string, fn func(vals [][]byte) error) error {
	deadline := time.Now().Add(s.timeout)
	before := s.cache.revision()
	cur, confirmed := s.cache.lookup(keys), false
	// uncertain is the write whose answer was lost (nil: none): if the keys
	// now read as what it wrote, it was applied, and running fn again would
	// undo it or, for a user record, refuse the very login that wrote it (a
	// step "replayed").
	var uncertain []*pending
	var lastErr error
	for range maxRetries {
		if lastErr != nil && !s.retry(deadline) {
			return s.fail(what, lastErr)
		}
		ctx, cancel := s.attempt(deadline)
		if cur == nil { // after an error: read what is there now
			before = s.cache.revision()
			resp, err := s.cli.Txn(ctx).Then(getOps(keys)...).Commit()
			if err != nil {
				cancel()
				if !unavailable(err) { // refused as such: no retry changes that
					return s.fail(what, err)
				}
				lastErr = err
				continue
			}
			cur, confirmed = s.remember(keys, resp, before), true
			if uncertain != nil && allApplied(uncertain, cur) {
				cancel()
				return nil
			}
			uncertain = nil
		}
		vals := make([][]byte, len(keys))
		for i, c := range cur {
			vals[i] = bytes.Clone(c.val)
		}
		fnErr := fn(vals)
		if fnErr != nil && confirmed {
			cancel()
			return fnErr
		}
		conds := make([]clientv3.Cmp, len(keys))
		var writes []clientv3.Op
		wrote := make([]*pending, len(keys))
		for i, k := range keys {
			conds[i] = clientv3.Compare(clientv3.ModRevision(k), "=", cur[i].rev)
			switch {
			case fnErr != nil: // only to confirm the values fn refused
			case vals[i] == nil && cur[i].val != nil:
				writes = append(writes, clientv3.OpDelete(k))
				wrote[i] = &pending{del: true, rev: cur[i].rev, guess: !confirmed}
			case vals[i] != nil && !bytes.Equal(vals[i], cur[i].val):
				writes = append(writes, clientv3.OpPut(k, string(vals[i])))
				wrote[i] = &pending{value: vals[i], rev: cur[i].rev, guess: !confirmed}
			}
		}
		if len(writes) == 0 && confirmed {
			cancel()
			return nil
		}
		txn, err := s.cli.Txn(ctx).If(conds...).Then(writes...).Else(getOps(keys)...).Commit()
		cancel()
		if err != nil {
			// The cluster may be failing: nothing remembered is trusted any
			// more.
			s.cache.forget()
			if !unavailable(err) {
				// Refused as such (too large, not permitted): not applied.
				return s.fail(what, err)
			}
			// Lost with the old leader, or applied with its answer lost: the
			// next round reads the keys again and tells which.
			cur, lastErr = nil, err
			if len(writes) > 0 {
				uncertain = wrote
			}
			continue
		}
		lastErr = nil
		if !txn.Succeeded {
			cur, confirmed = s.remember(keys, txn, before), true
			continue
		}
		s.cache.observe(txn.Header.ClusterId, txn.Header.Revision, before)
		if fnErr != nil {
			return fnErr
		}
		for i, w := range wrote {
			switch {
			case w == nil:
			case w.del:
				cur[i] = seen{}
			default:
				// A copy: fn's slice is its own to keep and change.
				cur[i] = seen{val: bytes.Clone(w.value), rev: txn.Header.Revision}
			}
		}
		s.cache.store(keys, cur)
		return nil
	}
	return fmt.Errorf("%s: gave up after %d conflicting writes", what, maxRetries)
}

// read reads keys in one transaction and remembers them (see remember),
// trying again until the request timeout while the cluster does not answer.
// The client retries a plain Get itself, but not a transaction: without
// this a read that meets a leader election ("leader changed") would fail a
// login that a moment later would have gone through. A try takes at most
// half the request timeout (see attempt): a member that hangs (stalled, or
// cut off from its peers, when it holds a read for its own, longer
// timeout) must leave time for another.
func (s *Store) read(what string, keys []string) ([]seen, error) {
	deadline := time.Now().Add(s.timeout)
	for {
		ctx, cancel := s.attempt(deadline)
		before := s.cache.revision()
		resp, err := s.cli.Txn(ctx).Then(getOps(keys)...).Commit()
		cancel()
		if err == nil {
			return s.remember(keys, resp, before), nil
		}
		s.cache.forget()
		if !unavailable(err) || !s.retry(deadline) {
			return nil, s.fail(what, err)
		}
	}
}

// getOps reads keys.
func getOps(keys []string) []clientv3.Op {
	ops := make([]clientv3.Op, len(keys))
	for i, k := range keys {
		ops[i] = clientv3.OpGet(k)
	}
	return ops
}

// remember returns the values and revisions of keys that resp, the answer
// to getOps(keys) sent when the cache's revision was before, holds, and
// stores them in the cache.
func (s *Store) remember(keys []string, resp *clientv3.TxnResponse, before int64) []seen {
	s.cache.observe(resp.Header.ClusterId, resp.Header.Revision, before)
	cur := make([]seen, len(keys))
	for i, r := range resp.Responses {
		if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
			cur[i] = seen{val: kvs[0].Value, rev: kvs[0].ModRevision}
		}
	}
	s.cache.store(keys, cur)
	return cur
}

// ListKeys lists the keys under prefix (itself under the store's prefix),
// without it.
func (s *Store) ListKeys(prefix string) ([]string, error) {
	ctx, cancel := s.op()
	defer cancel()
	resp, err := s.cli.Get(ctx, s.key(prefix), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, s.fail("list "+prefix, err)
	}
	out := make([]string, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		out[i] = strings.TrimPrefix(string(kv.Key), s.prefix)
	}
	return out, nil
}

// allApplied reports whether every written key of a transaction whose
// answer was lost now shows its write (see pending).
func allApplied(wrote []*pending, cur []seen) bool {
	for i, p := range wrote {
		if p != nil && !p.applied(cur[i].val, cur[i].rev) {
			return false
		}
	}
	return true
}
