package etcd

import (
	"bytes"
	"context"
	"crypto/sha256"
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

// dumpPage is how many keys Dump reads per request.
const dumpPage = 1000

// Dump calls fn with every record, ticket and (with audit) event, all read at
// one revision of the cluster, in pages of dumpPage keys, each request with
// its own deadline (a long audit log takes as long as it takes). Each item is
// checked (store.Codec.CheckItem): one that fails has Damaged set.
func (s *Store) Dump(audit bool, fn func(store.Item) error) error {
	var rev int64
	get := func(kind, sub string) error {
		p := s.key(sub)
		from, end := p, clientv3.GetPrefixRangeEnd(p)
		for {
			opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend),
				clientv3.WithLimit(dumpPage)}
			if rev != 0 {
				opts = append(opts, clientv3.WithRev(rev))
			}
			var resp *clientv3.GetResponse
			err := s.retried(func(ctx context.Context) (err error) {
				resp, err = s.cli.Get(ctx, from, opts...)
				return err
			})
			if err != nil {
				return s.fail("read for a backup", err)
			}
			if rev == 0 {
				rev = resp.Header.Revision
			}
			for _, kv := range resp.Kvs {
				it := store.Item{Kind: kind, Value: kv.Value}
				if kind != store.ItemEvent {
					it.Key = strings.TrimPrefix(string(kv.Key), p)
				}
				it.Damaged = s.codec.CheckItem(it)
				if err := fn(it); err != nil {
					return err
				}
			}
			if !resp.More || len(resp.Kvs) == 0 {
				return nil
			}
			from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		}
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
// most maxTxnOps puts, each with its own deadline and tried again within
// request_timeout when the cluster did not answer, like Append: a restore of
// a long audit log takes as long as it takes. A restore is an admin's act on
// a quiet cluster; a failure part-way leaves the earlier batches written and
// is a *store.LoadError that counts them. Without force, a user whose record
// is already exactly the backup's is left as it is (the same restore run
// again after such a failure goes on where it stopped), any other user with a
// record is refused, and each batch requires its users to be still without a
// record, so a user linked (or logged in, or reset) meanwhile is never
// overwritten. An audit event the log holds already (the same bytes) is not
// added again (heldEvents); one that is added is put under a key made from
// its time, its bytes and its place in items (restoredKey), so that a
// restore run again after a failure replaces the events it wrote already.
func (s *Store) Load(items []store.Item, force bool) (store.LoadResult, error) {
	var res store.LoadResult
	users, err := s.codec.CheckItems(items)
	if err != nil {
		return res, err
	}
	// What there is to write: the tickets that have not expired.
	now := time.Now()
	var total store.LoadResult
	expires := map[int]time.Time{}
	for i, it := range items {
		switch it.Kind {
		case store.ItemUser:
			total.Users++
		case store.ItemTicket:
			k, _ := hex.DecodeString(it.Key) // checked
			if t, _ := s.codec.ReadTicket(k, it.Value); now.Before(t.Expires) {
				expires[i] = t.Expires
				total.Tickets++
			}
		case store.ItemEvent:
			total.Events++
		}
	}
	// done: without force, the users whose record is already exactly the
	// backup's (a restore run again after it stopped part-way): left as they
	// are and counted as restored. Any other user with a record is refused.
	done := map[string]bool{}
	if !force && len(users) > 0 {
		if done, err = s.identicalUsers(items); err != nil {
			return res, err
		}
	}
	held, err := s.heldEvents(items)
	if err != nil {
		return res, err
	}
	ticketsWritten := false
	if len(done) > 0 {
		if ticketsWritten, err = s.ticketsRestored(items); err != nil {
			return res, err
		}
	}

	var (
		ops    []clientv3.Op
		absent []clientv3.Cmp    // without force: users still without a record
		puts   map[string]string // without force: the batch's users, key → value
		batch  store.LoadResult  // what ops write
		wrote  bool              // a batch was written: a failure from now on is a LoadError
	)
	// stopped is the error for a failure: a LoadError once something was or may have been
	// written (unsure: the failed write's answer was lost).
	stopped := func(err error, unsure bool) error {
		if !wrote && !unsure {
			return err // nothing was written
		}
		return &store.LoadError{Written: res, Of: total, Unsure: unsure, Err: err}
	}
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		deadline := time.Now().Add(s.timeout)
		lost := false // a try failed unanswered: it may have been applied
		for {
			ctx, cancel := s.attempt(deadline)
			txn, err := s.cli.Txn(ctx).If(absent...).Then(ops...).Commit()
			cancel()
			if err != nil {
				if unavailable(err) {
					lost = true
					if s.retry(deadline) {
						continue
					}
				}
				return stopped(s.fail("restore", err), lost)
			}
			if !txn.Succeeded && !(lost && s.applied(puts)) {
				// Nothing of this batch was written: the users it holds were linked meanwhile.
				return stopped(fmt.Errorf("%w: a user was linked while the restore ran", store.ErrExists), false)
			}
			wrote = true
			break
		}
		res.Users += batch.Users
		res.Tickets += batch.Tickets
		res.Events += batch.Events
		ops, absent, puts, batch = ops[:0], absent[:0], nil, store.LoadResult{}
		return nil
	}
	for i, it := range items {
		switch it.Kind {
		case store.ItemUser:
			if done[it.Key] {
				res.Users++
				continue
			}
			k := s.key("users/" + it.Key)
			if !force {
				absent = append(absent, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
				if puts == nil {
					puts = map[string]string{}
				}
				puts[k] = string(it.Value)
			}
			ops = append(ops, clientv3.OpPut(k, string(it.Value)))
			batch.Users++
		case store.ItemTicket:
			exp, ok := expires[i]
			if !ok || ticketsWritten {
				continue // expired, or written by the earlier run (see ticketsRestored)
			}
			k, _ := hex.DecodeString(it.Key) // checked
			var lease *clientv3.LeaseGrantResponse
			err := s.retried(func(ctx context.Context) (err error) {
				lease, err = s.cli.Grant(ctx, int64(time.Until(exp)/time.Second)+60)
				return err
			})
			if err != nil {
				return res, stopped(s.fail("grant a ticket lease", err), false)
			}
			ops = append(ops, clientv3.OpPut(s.ticketKey(k), string(it.Value), clientv3.WithLease(lease.ID)))
			batch.Tickets++
		case store.ItemEvent:
			if held.Take(it.Value) {
				res.Events++
				res.EventsHeld++
				continue
			}
			e, _ := store.DecodeEvent(1, it.Value)
			ops = append(ops, clientv3.OpPut(s.restoredKey(e.Time, it.Value, i), string(it.Value)))
			batch.Events++
		}
		if len(ops) >= maxTxnOps {
			if err := flush(); err != nil {
				return res, err
			}
		}
	}
	return res, flush()
}

// heldPage is how many events heldEvents reads in one request.
const heldPage = 1000

// heldEvents returns which of items' events the audit log holds already (a
// backup restored into the cluster it came from, or restored twice; see
// store.HeldEvents; restoredKey covers only the same restore run again). It
// reads the log between the first and the last of the events' times (the
// keys start with the time), heldPage events at a time; nil when items hold
// no event.
func (s *Store) heldEvents(items []store.Item) (*store.HeldEvents, error) {
	held := store.NewHeldEvents(items)
	if held == nil {
		return nil, nil
	}
	lo, hi := int64(-1), int64(0)
	for _, it := range items {
		if it.Kind == store.ItemEvent {
			e, _ := store.DecodeEvent(1, it.Value) // checked
			t := max(e.Time.UnixNano(), 0)
			if lo < 0 || t < lo {
				lo = t
			}
			hi = max(hi, t)
		}
	}
	from := fmt.Sprintf("%saudit/%020d", s.prefix, lo)
	end := fmt.Sprintf("%saudit/%020d", s.prefix, hi+1)
	for {
		var resp *clientv3.GetResponse
		err := s.retried(func(ctx context.Context) (err error) {
			resp, err = s.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(heldPage))
			return err
		})
		if err != nil {
			return nil, s.fail("read the audit log", err)
		}
		for _, kv := range resp.Kvs {
			held.See(kv.Value)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return held, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// identicalUsers reads the users' records and returns the users of items
// whose record is already exactly the backup's; a user of items with any
// other record is an ExistsError (see Load).
func (s *Store) identicalUsers(items []store.Item) (map[string]bool, error) {
	var resp *clientv3.GetResponse
	err := s.retried(func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, s.key("users/"), clientv3.WithPrefix())
		return err
	})
	if err != nil {
		return nil, s.fail("read users", err)
	}
	stored := map[string][]byte{}
	for _, kv := range resp.Kvs {
		stored[strings.TrimPrefix(string(kv.Key), s.key("users/"))] = kv.Value
	}
	done := map[string]bool{}
	var exist []string
	for _, it := range items {
		v, ok := stored[it.Key]
		switch {
		case it.Kind != store.ItemUser || !ok:
		case bytes.Equal(v, it.Value):
			done[it.Key] = true
		default:
			exist = append(exist, it.Key)
		}
	}
	if len(exist) > 0 {
		return nil, store.ExistsError(exist)
	}
	return done, nil
}

// ticketsRestored reports, for the same restore run again (see Load),
// whether the earlier run got past the tickets, which a backup holds before
// its events: its first event is stored already (under its fixed key), or it
// has none (then it cannot be told, and true keeps the tickets out to be
// safe). A ticket absent now may have been used since, and must not come
// back.
func (s *Store) ticketsRestored(items []store.Item) (bool, error) {
	for i, it := range items {
		if it.Kind != store.ItemEvent {
			continue
		}
		e, _ := store.DecodeEvent(1, it.Value)
		var resp *clientv3.GetResponse
		err := s.retried(func(ctx context.Context) (err error) {
			resp, err = s.cli.Get(ctx, s.restoredKey(e.Time, it.Value, i), clientv3.WithCountOnly())
			return err
		})
		if err != nil {
			return false, s.fail("read the audit log", err)
		}
		return resp.Count > 0, nil
	}
	return true, nil
}

// restoredKey is the key Load gives the event v at t, item i of a backup: the
// time first (the log reads in time order, as with auditKey), then a hash of
// the event and i, so that the same backup restored again puts each of its
// events under the key it had, replacing it rather than adding it twice.
func (s *Store) restoredKey(t time.Time, v []byte, i int) string {
	h := sha256.Sum256(v)
	return fmt.Sprintf("%saudit/%020d-restore-%x-%d", s.prefix, t.UnixNano(), h[:6], i)
}

// applied reports whether every key of puts holds its value: a batch whose
// answer was lost, tried again and then refused because its users exist,
// was applied by the try whose answer was lost.
func (s *Store) applied(puts map[string]string) bool {
	if len(puts) == 0 {
		return false
	}
	gets := make([]clientv3.Op, 0, len(puts))
	for k := range puts {
		gets = append(gets, clientv3.OpGet(k))
	}
	var resp *clientv3.TxnResponse
	if err := s.retried(func(ctx context.Context) (err error) {
		resp, err = s.cli.Txn(ctx).Then(gets...).Commit()
		return err
	}); err != nil {
		return false
	}
	for _, r := range resp.Responses {
		kvs := r.GetResponseRange().GetKvs()
		if len(kvs) != 1 || string(kvs[0].Value) != puts[string(kvs[0].Key)] {
			return false
		}
	}
	return true
}

// retried runs fn, a request, and runs it again when the cluster did not
// answer, within request_timeout (see attempt).
func (s *Store) retried(fn func(ctx context.Context) error) error {
	deadline := time.Now().Add(s.timeout)
	for {
		ctx, cancel := s.attempt(deadline)
		err := fn(ctx)
		cancel()
		if err == nil || !unavailable(err) || !s.retry(deadline) {
			return err
		}
	}
}
