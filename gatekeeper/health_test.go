package gatekeeper

import (
	"context"
	"errors"
	"testing"

	"gatekeeper/gatekeeper/store"
)

// healthStore is a memStore that reports, like bbolt after a write broke on a damaged page,
// that it takes no more writes while its reads still answer.
type healthStore struct {
	*memStore
	health error
}

func (h healthStore) Health() error { return h.health }

// TestHealthStoreWritesBroken: /healthz's check fails when the store can be read but says its
// writes have broken (store.HealthChecker), and passes while it says nothing is wrong.
func TestHealthStoreWritesBroken(t *testing.T) {
	broken := errors.New("database /x.db is damaged; it takes no more writes")
	tests := []struct {
		name   string
		health error
		want   error
	}{
		{"writes work", nil, nil},
		{"writes broken", broken, broken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newTestGateWith(t, nil, func(o *Options) {
				o.Store = healthStore{memStore: o.Store.(*memStore), health: tt.health}
			})
			err := g.srv.Health(context.Background())
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Health = %v, want %v", err, tt.want)
			}
		})
	}
	var _ store.HealthChecker = healthStore{}
}
