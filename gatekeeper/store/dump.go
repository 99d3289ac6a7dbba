package store

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// CheckItems checks items read from a backup before a backend's Load writes
// any of them: every user record and ticket must verify under this codec's
// key (a backup made with another key file cannot be loaded: its secrets
// could not be opened), every event must be readable, and no kind may be
// unknown. Users lists the users the items hold a record of. The error for a
// bad item is an *ItemError.
func (c *Codec) CheckItems(items []Item) (users []string, err error) {
	for i, it := range items {
		bad := func(format string, a ...any) error { return &ItemError{Index: i + 1, Err: fmt.Errorf(format, a...)} }
		switch it.Kind {
		case ItemUser:
			if err := CheckName(it.Key); err != nil {
				return nil, bad("%w", err)
			}
			if _, err := c.Decode(it.Key, it.Value); err != nil {
				return nil, bad("%w (was the backup made with another secret key file?)", err)
			}
			users = append(users, it.Key)
		case ItemTicket:
			k, err := hex.DecodeString(it.Key)
			if err != nil {
				return nil, bad("ticket key %q is not hex", it.Key)
			}
			if _, ok := c.ReadTicket(k, it.Value); !ok {
				return nil, bad("ticket fails its integrity check (was the backup made with another secret key file?)")
			}
		case ItemEvent:
			if _, ok := DecodeEvent(1, it.Value); !ok {
				return nil, bad("audit event cannot be read")
			}
		default:
			return nil, bad("unknown kind %q", it.Kind)
		}
	}
	return users, nil
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
