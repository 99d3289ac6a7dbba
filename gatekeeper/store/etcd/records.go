package etcd

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"gatekeeper/gatekeeper/store"
)

// auditKey is the key of an event at t from this node: the time first (so
// that the log of all nodes reads in time order), then the node and a counter
// (so that two events never share a key).
func (s *Store) auditKey(t time.Time) string {
	return fmt.Sprintf("%saudit/%020d-%s-%d", s.prefix, t.UnixNano(), s.node, s.seq.Add(1))
}

// Append adds events in one transaction, or for more than maxTxnOps events
// in one per maxTxnOps (see store.Store).
func (s *Store) Append(events ...store.Event) error {
	if len(events) == 0 {
		return nil
	}
	now := time.Now().UTC()
	ops := make([]clientv3.Op, 0, len(events))
	for _, e := range events {
		v, err := store.EncodeEvent(e, now)
		if err != nil {
			return err
		}
		t := e.Time
		if t.IsZero() {
			t = now
		}
		ops = append(ops, clientv3.OpPut(s.auditKey(t), string(v)))
	}
	// etcd takes at most 128 operations in one transaction: a larger batch
	// goes in several, each whole. A transaction the cluster did not answer
	// (a leader election) is sent again until the request timeout: its keys
	// are fixed, so one applied with its answer lost is only written twice,
	// not appended twice.
	deadline := time.Now().Add(s.timeout)
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		ctx, cancel := s.attempt(deadline)
		_, err := s.cli.Txn(ctx).Then(ops[:n]...).Commit()
		cancel()
		if err != nil {
			if unavailable(err) && s.retry(deadline) {
				continue
			}
			return s.fail("append to the audit log", err)
		}
		ops = ops[n:]
	}
	return nil
}

// eventPage is how many events Events reads per request.
const eventPage = 500

// Events returns the events q selects, oldest first, reading the log from
// the newest end in pages.
func (s *Store) Events(q store.EventQuery) ([]store.Event, error) {
	events := []store.Event{}
	from := s.key("audit/")
	if !q.Since.IsZero() {
		from = fmt.Sprintf("%saudit/%020d", s.prefix, q.Since.UnixNano())
	}
	end := clientv3.GetPrefixRangeEnd(s.key("audit/"))
	ctx, cancel := s.op()
	defer cancel()
	rev := int64(0)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(eventPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev)) // one snapshot across pages
		}
		resp, err := s.cli.Get(ctx, from, opts...)
		if err != nil {
			return nil, s.fail("read the audit log", err)
		}
		rev = resp.Header.Revision
		for _, kv := range resp.Kvs {
			e, ok := store.DecodeEvent(uint64(kv.CreateRevision), kv.Value)
			if !q.Matches(e, ok) {
				continue
			}
			events = append(events, e)
			if q.Limit > 0 && len(events) >= q.Limit {
				slices.Reverse(events)
				return events, nil
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		end = string(resp.Kvs[len(resp.Kvs)-1].Key) // exclusive: the next page ends before it
	}
	slices.Reverse(events)
	return events, nil
}

// pruneBatch is the most events PruneEvents deletes in one request.
const pruneBatch = 500

// PruneEvents deletes the events older than before, pruneBatch at a time.
func (s *Store) PruneEvents(before time.Time) (int, error) {
	from := s.key("audit/")
	until := fmt.Sprintf("%saudit/%020d", s.prefix, before.UnixNano())
	total := 0
	for {
		ctx, cancel := s.op()
		resp, err := s.cli.Get(ctx, from, clientv3.WithRange(until), clientv3.WithKeysOnly(), clientv3.WithLimit(pruneBatch),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		if err != nil || len(resp.Kvs) == 0 {
			cancel()
			if err != nil {
				return total, s.fail("prune the audit log", err)
			}
			return total, nil
		}
		last := string(resp.Kvs[len(resp.Kvs)-1].Key)
		del, err := s.cli.Delete(ctx, from, clientv3.WithRange(last+"\x00"))
		cancel()
		if err != nil {
			return total, s.fail("prune the audit log", err)
		}
		total += int(del.Deleted)
		if !resp.More {
			return total, nil
		}
	}
}

// ticketKey is the etcd key of a ticket's storage key (its token's hash).
func (s *Store) ticketKey(k []byte) string { return s.key("tickets/" + hex.EncodeToString(k)) }

// AddTicket stores a ticket on a lease that ends a minute after it expires
// (so etcd removes it), revoking the user's earlier tickets.
func (s *Store) AddTicket(user, token string, expires time.Time) error {
	k, v, err := s.codec.NewTicket(user, token, expires)
	if err != nil {
		return err
	}
	ctx, cancel := s.op()
	defer cancel()
	p := s.key("tickets/")
	resp, err := s.cli.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		return s.fail("read tickets", err)
	}
	var ops []clientv3.Op
	for _, kv := range resp.Kvs {
		hk, err := hex.DecodeString(strings.TrimPrefix(string(kv.Key), p))
		if err != nil {
			continue
		}
		if t, ok := s.codec.ReadTicket(hk, kv.Value); ok && t.User == user {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
	}
	ttl := int64(time.Until(expires)/time.Second) + 60
	lease, err := s.cli.Grant(ctx, max(ttl, 60))
	if err != nil {
		return s.fail("grant a ticket lease", err)
	}
	ops = append(ops, clientv3.OpPut(s.ticketKey(k), string(v), clientv3.WithLease(lease.ID)))
	if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return s.fail("store a ticket", err)
	}
	return nil
}

// UseTicket spends a ticket: the delete is conditional on the revision that
// was checked, so of two nodes spending it at once only one succeeds.
func (s *Store) UseTicket(user, token string, now time.Time) error {
	k := store.TicketKey(token)
	if k == nil {
		return s.codec.CheckTicket(nil, nil, user, now)
	}
	ctx, cancel := s.op()
	defer cancel()
	ek := s.ticketKey(k)
	resp, err := s.cli.Get(ctx, ek)
	if err != nil {
		return s.fail("read a ticket", err)
	}
	var v []byte
	var rev int64
	if len(resp.Kvs) > 0 {
		v, rev = resp.Kvs[0].Value, resp.Kvs[0].ModRevision
	}
	if err := s.codec.CheckTicket(k, v, user, now); err != nil {
		return err
	}
	txn, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(ek), "=", rev)).Then(clientv3.OpDelete(ek)).Commit()
	if err != nil {
		return s.fail("spend a ticket", err)
	}
	if !txn.Succeeded {
		return s.codec.CheckTicket(k, nil, user, now) // spent by another node meanwhile
	}
	return nil
}

// CheckTicket reports whether a ticket is valid without spending it.
func (s *Store) CheckTicket(user, token string, now time.Time) error {
	k := store.TicketKey(token)
	if k == nil {
		return s.codec.CheckTicket(nil, nil, user, now)
	}
	ctx, cancel := s.op()
	defer cancel()
	resp, err := s.cli.Get(ctx, s.ticketKey(k))
	if err != nil {
		return s.fail("read a ticket", err)
	}
	var v []byte
	if len(resp.Kvs) > 0 {
		v = resp.Kvs[0].Value
	}
	return s.codec.CheckTicket(k, v, user, now)
}

// Dump calls fn with every record, ticket and (with audit) event, all read at
// one revision of the cluster.
func (s *Store) Dump(audit bool, fn func(store.Item) error) error {
	ctx, cancel := context.WithTimeout(s.ctx, 10*s.timeout)
	defer cancel()
	var rev int64
	get := func(kind, sub string) error {
		p := s.key(sub)
		opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, p, opts...)
		if err != nil {
			return s.fail("read for a backup", err)
		}
		rev = resp.Header.Revision
		for _, kv := range resp.Kvs {
			it := store.Item{Kind: kind, Value: kv.Value}
			if kind != store.ItemEvent {
				it.Key = strings.TrimPrefix(string(kv.Key), p)
			}
			if err := fn(it); err != nil {
				return err
			}
		}
		return nil
	}
	if err := get(store.ItemUser, "users/"); err != nil {
		return err
	}
	if err := get(store.ItemTicket, "tickets/"); err != nil {
		return err
	}
	if audit {
		return get(store.ItemEvent, "audit/")
	}
	return nil
}

// maxTxnOps is how many operations this package puts in one transaction
// (Load's puts, Append's events, the session registry's changes): etcd
// refuses transactions of more than 128 operations by default. It is at
// least store.MaxAppend, so that an Append of that many is one transaction.
const maxTxnOps = 100

// Load writes items from a backup (see store.Store), in transactions of at
// most maxTxnOps puts: a restore is an admin's act on a quiet cluster, and a
// failure part-way leaves the earlier batches written. Without force, each
// batch also requires its users to be still without a record, so a user
// linked meanwhile is never overwritten.
func (s *Store) Load(items []store.Item, force bool) (store.LoadResult, error) {
	var res store.LoadResult
	users, err := s.codec.CheckItems(items)
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*s.timeout)
	defer cancel()
	if !force && len(users) > 0 {
		var exist []string
		for _, u := range users {
			resp, err := s.cli.Get(ctx, s.key("users/"+u), clientv3.WithCountOnly())
			if err != nil {
				return res, s.fail("read users", err)
			}
			if resp.Count > 0 {
				exist = append(exist, u)
			}
		}
		if len(exist) > 0 {
			return res, store.ExistsError(exist)
		}
	}
	var ops []clientv3.Op
	var absent []clientv3.Cmp // without force: users still without a record
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		txn, err := s.cli.Txn(ctx).If(absent...).Then(ops...).Commit()
		ops, absent = ops[:0], absent[:0]
		if err != nil {
			return s.fail("restore", err)
		}
		if !txn.Succeeded {
			return fmt.Errorf("%w: a user was linked while the restore ran; nothing of this batch was written, earlier batches were", store.ErrExists)
		}
		return nil
	}
	for _, it := range items {
		switch it.Kind {
		case store.ItemUser:
			k := s.key("users/" + it.Key)
			if !force {
				absent = append(absent, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
			}
			ops = append(ops, clientv3.OpPut(k, string(it.Value)))
			res.Users++
		case store.ItemTicket:
			k, _ := hex.DecodeString(it.Key) // checked
			t, _ := s.codec.ReadTicket(k, it.Value)
			if !time.Now().Before(t.Expires) {
				continue // expired: nothing to restore
			}
			lease, err := s.cli.Grant(ctx, int64(time.Until(t.Expires)/time.Second)+60)
			if err != nil {
				return res, s.fail("grant a ticket lease", err)
			}
			ops = append(ops, clientv3.OpPut(s.ticketKey(k), string(it.Value), clientv3.WithLease(lease.ID)))
			res.Tickets++
		case store.ItemEvent:
			e, _ := store.DecodeEvent(1, it.Value)
			ops = append(ops, clientv3.OpPut(s.auditKey(e.Time), string(it.Value)))
			res.Events++
		}
		if len(ops) >= maxTxnOps {
			if err := flush(); err != nil {
				return res, err
			}
		}
	}
	return res, flush()
}
