package etcd

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// UpdateKeys updates a few keys under the prefix atomically: it reads them,
// calls fn with their values (nil for a missing key) and writes back what fn
// changed in one transaction that compares every key's revision with the one
// read, retrying on a conflict. Nothing is written when fn changes nothing.
// It is how the nodes share their lockout counters.
func (s *Store) UpdateKeys(keys []string, fn func(vals [][]byte) error) error {
	full := make([]string, len(keys))
	for i, k := range keys {
		full[i] = s.key(k)
	}
	deadline := time.Now().Add(s.timeout)
	for range maxRetries {
		ctx, cancel := s.attempt(deadline)
		ops := make([]clientv3.Op, len(full))
		for i, k := range full {
			ops[i] = clientv3.OpGet(k)
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			cancel()
			if time.Now().Before(deadline) && s.ctx.Err() == nil {
				continue // see Update
			}
			return s.fail("read "+strings.Join(keys, ", "), err)
		}
		vals := make([][]byte, len(full))
		old := make([][]byte, len(full))
		revs := make([]int64, len(full))
		for i, r := range resp.Responses {
			if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
				vals[i], old[i], revs[i] = bytes.Clone(kvs[0].Value), kvs[0].Value, kvs[0].ModRevision
			}
		}
		if err := fn(vals); err != nil {
			cancel()
			return err
		}
		var conds []clientv3.Cmp
		var writes []clientv3.Op
		for i, k := range full {
			conds = append(conds, clientv3.Compare(clientv3.ModRevision(k), "=", revs[i]))
			switch {
			case vals[i] == nil && old[i] != nil:
				writes = append(writes, clientv3.OpDelete(k))
			case vals[i] != nil && !bytes.Equal(vals[i], old[i]):
				writes = append(writes, clientv3.OpPut(k, string(vals[i])))
			}
		}
		if len(writes) == 0 {
			cancel()
			return nil
		}
		txn, err := s.cli.Txn(ctx).If(conds...).Then(writes...).Commit()
		cancel()
		if err != nil {
			if time.Now().Before(deadline) && s.ctx.Err() == nil {
				continue // see Update
			}
			return s.fail("write "+strings.Join(keys, ", "), err)
		}
		if txn.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("%s: gave up after %d conflicting writes", strings.Join(keys, ", "), maxRetries)
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
