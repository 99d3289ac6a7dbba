package etcd

import "sync"

// Bounds of a Store's revCache: a flood of made-up user names or addresses
// can fill it, never grow it.
const (
	maxCachedKeys  = 2048
	maxCachedBytes = 4 << 20
)

// seen is a key's value and ModRevision as this node last saw them (nil
// and 0: the key did not exist).
type seen struct {
	val []byte
	rev int64
}

// revCache remembers the value and ModRevision this node last read or wrote
// of the keys it changes (user records, lockout counters), so that a
// read-modify-write can send its compare-and-swap at once instead of reading
// first: one round trip to the cluster instead of two when nothing changed
// the key meanwhile. What it holds is only ever a guess. A change is always
// a transaction comparing the key's ModRevision with the cached one, and a
// key's ModRevision names one value of it, so a stale entry costs a failed
// comparison, never a decision on stale data (see Store.readModifyWrite).
type revCache struct {
	// mu protects the following.
	mu    sync.Mutex
	m     map[string]seen
	bytes int
}

// lookup returns what the cache holds of keys: an unknown key reads as one
// that does not exist, the usual case for a lockout counter.
func (c *revCache) lookup(keys []string) []seen {
	out := make([]seen, len(keys))
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, k := range keys {
		out[i] = c.m[k]
	}
	return out
}

// store remembers vals for keys, making room when the cache is full by
// dropping other entries (any: a dropped entry costs one read later).
func (c *revCache) store(keys []string, vals []seen) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]seen{}
	}
	for i, k := range keys {
		c.dropLocked(k)
		if len(vals[i].val) > maxCachedBytes/64 {
			continue // a record this large is read when it changes
		}
		for k2 := range c.m {
			if len(c.m) < maxCachedKeys && c.bytes+len(vals[i].val) <= maxCachedBytes {
				break
			}
			c.dropLocked(k2)
		}
		c.m[k] = vals[i]
		c.bytes += len(vals[i].val)
	}
}

// drop forgets keys: their state is not known (a write whose answer was
// lost).
func (c *revCache) drop(keys []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		c.dropLocked(k)
	}
}

func (c *revCache) dropLocked(k string) {
	if old, ok := c.m[k]; ok {
		c.bytes -= len(old.val)
		delete(c.m, k)
	}
}
