package etcd

import (
	"sync"
	"time"
)

// Bounds of a Store's revCache: a flood of made-up user names or addresses
// can fill it, never grow it.
const (
	maxCachedKeys  = 2048
	maxCachedBytes = 4 << 20
	// cacheFor is how long a value is remembered: long enough for a login
	// (a record read, then its step spent; places reserved, then given
	// back once the lander answered), short enough that an etcd cluster
	// restored from a snapshot, whose revisions start again from the
	// snapshot's, has forgotten every value by the time it is back.
	cacheFor = 10 * time.Second
)

// seen is a key's value and ModRevision as this node last saw them (nil
// and 0: the key did not exist), and when.
type seen struct {
	val []byte
	rev int64
	at  time.Time
}

// revCache remembers the value and ModRevision this node last read or wrote
// of the keys it changes (user records, lockout counters), so that a
// read-modify-write can send its compare-and-swap at once instead of reading
// first: one round trip to the cluster instead of two when nothing changed
// the key meanwhile. What it holds is only ever a guess. A change is always
// a transaction comparing the key's ModRevision with the cached one, and a
// key's ModRevision names one value of it, so a stale entry costs a failed
// comparison, never a decision on stale data (see Store.readModifyWrite).
//
// A ModRevision names one value only while the cluster's revisions go
// forward. They go back when the cluster is restored from a snapshot; the
// cache then forgets everything as soon as an answer shows it (a revision
// below one seen before the request was sent, or another cluster ID), and
// whatever it still holds expires after cacheFor.
type revCache struct {
	now func() time.Time // the clock; nil: time.Now

	// mu protects the following.
	mu    sync.Mutex
	m     map[string]seen
	bytes int
	// cluster and rev are the cluster ID and the highest revision seen in
	// the cluster's answers.
	cluster uint64
	rev     int64
}

func (c *revCache) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// lookup returns what the cache holds of keys: an unknown key reads as one
// that does not exist, the usual case for a lockout counter.
func (c *revCache) lookup(keys []string) []seen {
	out := make([]seen, len(keys))
	now := c.clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, k := range keys {
		if s, ok := c.m[k]; ok && now.Sub(s.at) < cacheFor {
			out[i] = s
		}
	}
	return out
}

// store remembers vals for keys, making room when the cache is full by
// dropping other entries (any: a dropped entry costs one read later). A key
// that does not exist is dropped instead: that is what an unknown key reads
// as.
func (c *revCache) store(keys []string, vals []seen) {
	now := c.clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]seen{}
	}
	for i, k := range keys {
		c.dropLocked(k)
		v := vals[i]
		if v.rev == 0 || len(v.val) > maxCachedBytes/64 {
			continue // a record this large is read when it changes
		}
		for k2 := range c.m {
			if len(c.m) < maxCachedKeys && c.bytes+len(v.val) <= maxCachedBytes {
				break
			}
			c.dropLocked(k2)
		}
		v.at = now
		c.m[k] = v
		c.bytes += len(v.val)
	}
}

func (c *revCache) dropLocked(k string) {
	if old, ok := c.m[k]; ok {
		c.bytes -= len(old.val)
		delete(c.m, k)
	}
}

// forget empties the cache: the cluster did not answer, and may come back
// restored from a snapshot.
func (c *revCache) forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m, c.bytes = nil, 0
}

// revision is the highest revision seen in the cluster's answers; pass it
// to observe with the answer to a request sent after this call.
func (c *revCache) revision() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rev
}

// observe takes in the header of an answer, cluster ID and revision, to a
// request sent when revision() was before. Every request gatekeeper sends is
// linearizable, so its answer's revision is at least any revision seen
// before it was sent, unless the cluster went back in time (or is another
// cluster): then everything cached is forgotten.
func (c *revCache) observe(cluster uint64, rev, before int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rev < before || c.cluster != 0 && cluster != c.cluster {
		c.m, c.bytes, c.rev = nil, 0, 0
	}
	c.cluster = cluster
	c.rev = max(c.rev, rev)
}
