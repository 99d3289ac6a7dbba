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
// unknown. Users lists the users the items hold a record of.
func (c *Codec) CheckItems(items []Item) (users []string, err error) {
	for i, it := range items {
		switch it.Kind {
		case ItemUser:
			if err := CheckName(it.Key); err != nil {
				return nil, fmt.Errorf("item %d: %w", i+1, err)
			}
			if _, err := c.Decode(it.Key, it.Value); err != nil {
				return nil, fmt.Errorf("item %d: %w (was the backup made with another secret key file?)", i+1, err)
			}
			users = append(users, it.Key)
		case ItemTicket:
			k, err := hex.DecodeString(it.Key)
			if err != nil {
				return nil, fmt.Errorf("item %d: ticket key %q is not hex", i+1, it.Key)
			}
			if _, ok := c.ReadTicket(k, it.Value); !ok {
				return nil, fmt.Errorf("item %d: ticket fails its integrity check (was the backup made with another secret key file?)", i+1)
			}
		case ItemEvent:
			if _, ok := DecodeEvent(1, it.Value); !ok {
				return nil, fmt.Errorf("item %d: audit event cannot be read", i+1)
			}
		default:
			return nil, fmt.Errorf("item %d: unknown kind %q", i+1, it.Kind)
		}
	}
	return users, nil
}

// ExistsError is Load's error for users who already have a record: it
// matches ErrExists and names them.
func ExistsError(users []string) error {
	slices.Sort(users)
	if len(users) > 10 {
		users = append(users[:10], fmt.Sprintf("and %d more", len(users)-10))
	}
	return fmt.Errorf("%w: %s (restore --force overwrites them)", ErrExists, strings.Join(users, ", "))
}
