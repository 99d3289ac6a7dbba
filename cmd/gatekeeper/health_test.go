package main

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"gatekeeper/gatekeeper/metrics"
	"gatekeeper/gatekeeper/store"
)

// brokenWrites is a store whose reads answer and whose Health says whether its writes broke.
type brokenWrites struct {
	store.Store // nil: only Get and Health are called
	health      error
}

func (brokenWrites) Get(name string) (store.User, error) { return store.User{Name: name}, nil }
func (b brokenWrites) Health() error                     { return b.health }

// storeUp scrapes gatekeeper_store_up.
func storeUp(t *testing.T, reg *metrics.Registry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	reg.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "gatekeeper_store_up "); ok {
			return v
		}
	}
	t.Fatalf("no gatekeeper_store_up in:\n%s", body)
	return ""
}

// TestInstrumentedHealth: the metrics wrapper passes the backend's Health on (so /healthz sees
// it) and keeps gatekeeper_store_up at 0 while the backend's writes are broken, even though
// its reads keep answering.
func TestInstrumentedHealth(t *testing.T) {
	broken := errors.New("database x is damaged; it takes no more writes")
	tests := []struct {
		name   string
		health error
		want   string
	}{
		{"writes work", nil, "1"},
		{"writes broken", broken, "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := metrics.NewRegistry()
			gm := metrics.NewGatekeeper(reg)
			gm.SetStoreUp(true)
			st := instrumented{brokenWrites{health: tt.health}, gm}
			if err := st.Health(); !errors.Is(err, tt.health) || (tt.health == nil) != (err == nil) {
				t.Errorf("Health = %v, want %v", err, tt.health)
			}
			if got := storeUp(t, reg); got != tt.want {
				t.Errorf("after Health gatekeeper_store_up = %s, want %s", got, tt.want)
			}
			if _, err := st.Get("alice"); err != nil { // a read that answers
				t.Fatal(err)
			}
			if got := storeUp(t, reg); got != tt.want {
				t.Errorf("after a read gatekeeper_store_up = %s, want %s", got, tt.want)
			}
		})
	}
	var _ store.HealthChecker = instrumented{}
}
