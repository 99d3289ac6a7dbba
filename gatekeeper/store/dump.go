package store

import (
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// CheckItem checks one item as Dump hands it out and Load takes it: a user
// record under a valid user name that verifies under this codec's key and
// holds possible values, a ticket that verifies, a readable audit event. The
// error says what is wrong without naming the item (the caller knows where
// it is); for a record or ticket that fails its check it matches ErrDamaged.
// Dump sets Item.Damaged to it, so that a backup leaves the item out.
func (c *Codec) CheckItem(it Item) error {
	switch it.Kind {
	case ItemUser:
		if err := CheckName(it.Key); err != nil {
			return err
		}
		var r Record
		err := c.Verify(BucketUsers, []byte(it.Key), it.Value, &r)
		switch {
		case IsIntegrity(err):
			return Damaged(err)
		case err != nil:
			return Damaged(fmt.Errorf("cannot be read: %w", err))
		}
		if err := r.check(); err != nil {
			return Damaged(fmt.Errorf("holds impossible values: %w", err))
		}
	case ItemTicket:
		k, err := hex.DecodeString(it.Key)
		if err != nil {
			return fmt.Errorf("ticket key %q is not hex", it.Key)
		}
		if _, ok := c.ReadTicket(k, it.Value); !ok {
			return Damaged(errIntegrity)
		}
	case ItemEvent:
		if _, ok := DecodeEvent(1, it.Value); !ok {
			return errors.New("cannot be read")
		}
	default:
		return fmt.Errorf("unknown kind %q", it.Kind)
	}
	return nil
}

// CheckItems checks items read from a backup before a backend's Load writes
// any of them (CheckItem): every user record and ticket must verify under
// this codec's key (a backup made with another key file cannot be loaded:
// its secrets could not be opened), every event must be readable, and no
// kind may be unknown. Users lists the users the items hold a record of. The
// error for a bad item is an *ItemError; its message speaks of the item in
// the backup, not of this store (which holds nothing of it yet).
func (c *Codec) CheckItems(items []Item) (users []string, err error) {
	for i, it := range items {
		if err := c.CheckItem(it); err != nil {
			return nil, &ItemError{Index: i + 1, Err: backupItemError(it, err)}
		}
		if it.Kind == ItemUser {
			users = append(users, it.Key)
		}
	}
	return users, nil
}

// backupItemError is CheckItem's err about it, an item of a backup, as a
// restore reports it.
func backupItemError(it Item, err error) error {
	why := ""
	if IsIntegrity(err) {
		why = " (damaged or edited in the backup, or the backup was made with another secret key file)"
	}
	switch it.Kind {
	case ItemUser:
		if errors.Is(err, ErrBadName) {
			return err
		}
		return fmt.Errorf("user %q: its record in the backup %w%s", it.Key, err, why)
	case ItemTicket:
		return fmt.Errorf("ticket %.8s…: in the backup it %w%s", it.Key, err, why)
	case ItemEvent:
		return fmt.Errorf("audit event %w", err)
	}
	return err
}

// ItemError is CheckItems' (and so Load's) error for an item it refuses:
// Index counts the items from 1, so that a caller reading them from a file
// can name the line.
type ItemError struct {
	Index int
	Err   error
}

func (e *ItemError) Error() string { return fmt.Sprintf("item %d: %v", e.Index, e.Err) }
func (e *ItemError) Unwrap() error { return e.Err }

// ExistsError is Load's error for users who already have a record: it
// matches ErrExists and names them.
func ExistsError(users []string) error {
	slices.Sort(users)
	if len(users) > 10 {
		users = append(users[:10], fmt.Sprintf("and %d more", len(users)-10))
	}
	return fmt.Errorf("%w: %s (restore --force overwrites them)", ErrExists, strings.Join(users, ", "))
}

// LoadError is Load's error for a failure after it may have written
// something: a store that writes a restore in several transactions (etcd)
// stops part-way. Written counts what was written for certain, Of what the
// items hold (tickets that had expired left out); Unsure is set when the
// write that failed may have been applied all the same (its answer was
// lost). Err is the failure; LoadError matches what it matches. A Load that
// fails without a LoadError wrote nothing.
type LoadError struct {
	Written, Of LoadResult
	Unsure      bool
	Err         error
}

func (e *LoadError) Error() string { return e.Err.Error() + "; " + e.Progress() }
func (e *LoadError) Unwrap() error { return e.Err }

// Progress says what was written and what to do: the error's message after
// its cause.
func (e *LoadError) Progress() string {
	s := fmt.Sprintf("the restore stopped part-way: %s, %s and %s were written", of(e.Written.Users, e.Of.Users, "user"),
		of(e.Written.Tickets, e.Of.Tickets, "ticket"), of(e.Written.Events, e.Of.Events, "event"))
	if e.Unsure {
		s += " (and the batch being written when it failed may have been too)"
	}
	if errors.Is(e.Err, ErrExists) {
		return s + "; see who linked meanwhile (admin list) before you run restore again with --force, which would overwrite them"
	}
	return s + "; run the same restore again, without --force, to write the rest: the records written already are " +
		"left as they are, the audit events replaced, not added twice (with --force it would also overwrite what " +
		"users did since: a login's used code, a reset)"
}

// of is "2 of 3 users".
func of(n, m int, what string) string {
	if m != 1 {
		what += "s"
	}
	return fmt.Sprintf("%d of %d %s", n, m, what)
}
