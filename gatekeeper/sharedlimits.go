package gatekeeper

import (
	"encoding/json"
	"fmt"
	"strings"
)

// SharedKV is what the lockout counters of several nodes need of the store
// they share (package store/etcd implements it): atomic updates of a few
// keys at once, and a listing.
type SharedKV interface {
	// UpdateKeys calls fn with the values of keys (nil for a missing one)
	// and stores what fn leaves in their place (nil: delete), atomically;
	// when another writer changed one of them meanwhile, fn runs again on
	// the new values. Values fn leaves unchanged are not written.
	UpdateKeys(keys []string, fn func(vals [][]byte) error) error
	// ListKeys lists the keys under prefix.
	ListKeys(prefix string) ([]string, error)
}

// limitsPrefix is where the counters live in a SharedKV.
const limitsPrefix = "limits/"

// NewSharedLimits returns a LimitStore on kv: the lockouts, failures and
// reserved places of every node of a cluster in one place, so that the
// lockout policy (and the bound on guesses the README states) holds for the
// cluster as a whole, not per node.
func NewSharedLimits(kv SharedKV) LimitStore { return sharedLimits{kv} }

type sharedLimits struct{ kv SharedKV }

func limitKey(k LockKey) string { return limitsPrefix + string(k.Scope) + "/" + k.Name }

// Update decodes the entries, runs fn and encodes them back. An entry that
// cannot be decoded (written by a newer version, or damaged) counts as none.
func (s sharedLimits) Update(keys []LockKey, fn func([]*LimitEntry) error) error {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = limitKey(k)
	}
	return s.kv.UpdateKeys(names, func(vals [][]byte) error {
		es := make([]*LimitEntry, len(keys))
		for i, v := range vals {
			if v == nil {
				continue
			}
			var e LimitEntry
			if json.Unmarshal(v, &e) == nil {
				es[i] = &e
			}
		}
		if err := fn(es); err != nil {
			return err
		}
		for i, e := range es {
			if e == nil {
				vals[i] = nil
				continue
			}
			v, err := json.Marshal(e)
			if err != nil {
				return fmt.Errorf("encode lockout counter: %w", err)
			}
			vals[i] = v
		}
		return nil
	})
}

// Keys lists the counters.
func (s sharedLimits) Keys() ([]LockKey, error) {
	names, err := s.kv.ListKeys(limitsPrefix)
	if err != nil {
		return nil, err
	}
	keys := make([]LockKey, 0, len(names))
	for _, n := range names {
		scope, name, ok := strings.Cut(strings.TrimPrefix(n, limitsPrefix), "/")
		if ok {
			keys = append(keys, LockKey{Scope(scope), name})
		}
	}
	return keys, nil
}
