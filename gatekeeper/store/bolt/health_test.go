package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"gatekeeper/gatekeeper/store"
)

// damageAuditTail overwrites the page id in the header of every leaf page of
// the (closed) database whose last key is the audit log's last sequence
// number, as a damaged disk block would: bbolt reads such a page only when
// it walks to the end of the audit log, which every Append does, and then
// panics ("Page expected to be ..."). The users bucket is untouched.
func damageAuditTail(t *testing.T, dbPath string, lastSeq uint64) {
	t.Helper()
	raw, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	pageSize := int(binary.LittleEndian.Uint32(raw[24:28])) // meta page: header, magic, version, page size
	want := seqKey(lastSeq)
	hit := 0
	for off := 0; off+pageSize <= len(raw); off += pageSize {
		p := raw[off : off+pageSize]
		flags, count := binary.LittleEndian.Uint16(p[8:10]), int(binary.LittleEndian.Uint16(p[10:12]))
		if flags != 0x02 || count == 0 || 16+16*count > pageSize { // leaf pages only
			continue
		}
		el := 16 + 16*(count-1) // the last leaf element: flags, pos, ksize, vsize
		pos, ksize := int(binary.LittleEndian.Uint32(p[el+4:])), int(binary.LittleEndian.Uint32(p[el+8:]))
		if el+pos+ksize > pageSize || !bytes.Equal(p[el+pos:el+pos+ksize], want) {
			continue
		}
		binary.LittleEndian.PutUint64(p[0:8], binary.LittleEndian.Uint64(p[0:8])+1000)
		hit++
	}
	if hit == 0 {
		t.Fatal("no leaf page of the audit log found")
	}
	if err := os.WriteFile(dbPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestHealthAfterBrokenWrite: a damaged page in the audit log lets reads go
// on but breaks the first write that reaches it, and every write after it.
// Health says so (it backs /healthz), with what to do; before that it is nil.
func TestHealthAfterBrokenWrite(t *testing.T) {
	dbPath, keyPath := paths(t)
	s, err := Open(dbPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	enroll(t, s, "alice", []byte("alice's secret"))
	events := make([]store.Event, store.MaxAppend)
	for i := range events {
		events[i] = store.Event{Kind: store.EventLoginOK, User: "alice", Detail: strings.Repeat("x", 200)}
	}
	for range 10 {
		if err := s.Append(events...); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	damageAuditTail(t, dbPath, 10*store.MaxAppend)

	s = mustOpen(t, dbPath, keyPath)
	if err := s.Health(); err != nil {
		t.Fatalf("Health before any write = %v", err)
	}
	if u, err := s.Get("alice"); err != nil || u.State != store.StateActive {
		t.Fatalf("Get(alice) = %+v, %v", u, err)
	}
	// The first write to reach the damaged page breaks writing; reads go on.
	if err := s.Append(store.Event{Kind: store.EventLoginOK, User: "alice"}); err == nil {
		t.Fatal("Append over a damaged page succeeded")
	}
	if u, err := s.Get("alice"); err != nil || u.State != store.StateActive {
		t.Errorf("Get(alice) after the broken write = %+v, %v; reads should go on", u, err)
	}
	err = s.Health()
	for _, want := range []string{"database " + dbPath + " is damaged", "no more writes", "admin backup FILE", "without --audit", "admin restore FILE"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Health after the broken write = %v, want it to say %q", err, want)
		}
	}
	if uerr := s.Update("alice", func(u *store.User) error { u.LastStep++; return nil }); uerr == nil || !errors.Is(uerr, err) && uerr.Error() != err.Error() {
		t.Errorf("Update after the broken write = %v, want the same error", uerr)
	}
}
