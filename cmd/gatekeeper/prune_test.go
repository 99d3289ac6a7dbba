package main

import (
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/store/bolt"
)

func TestPruneAuditKeepsRecentEvents(t *testing.T) {
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "db"), filepath.Join(dir, "key"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	if err := st.Append(
		store.Event{Kind: store.EventLoginOK, User: "old", Time: now.Add(-48 * time.Hour)},
		store.Event{Kind: store.EventLoginOK, User: "new", Time: now.Add(-time.Minute)},
	); err != nil {
		t.Fatal(err)
	}
	// The first prune runs before stop returns.
	stop := pruneAudit(st, 24*time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
	stop()
	events, err := st.Events(store.EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].User != "new" {
		t.Fatalf("after pruning: %+v, want only the recent event", events)
	}
}
