package metrics_test

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"gatekeeper/gatekeeper/metrics"
)

// TestGatekeeperExposition pins, family by family, what a Prometheus server
// reads from the daemon's metrics: names, HELP, TYPE, labels and values.
// Users' dashboards and alerts depend on these.
func TestGatekeeperExposition(t *testing.T) {
	r := metrics.NewRegistry()
	g := metrics.NewGatekeeper(r)

	g.Logins.With(metrics.ResultOK, "code").Inc()
	g.Logins.With(metrics.ResultRefused, "replayed_code").Add(2)
	g.CodeReuseRefusals.Add(2)
	g.TrustedBypass.Inc()
	g.Lockouts.With("user").Inc()
	g.SecondFactorChecks.Add(3)
	g.PreauthRefused.With("per_address").Inc()
	g.StoreWriteErrors.With("no_space").Inc()
	g.Sessions.Inc()
	g.Sessions.Inc()
	g.Sessions.Dec()
	g.RelayedUp.Add(100)
	g.RelayedDown.Add(5000)
	g.AuthDuration.Observe(2.1)
	g.ObserveStore("get", 2*time.Millisecond, nil)
	g.ObserveStore("update", 3*time.Second, errors.New("context deadline exceeded"))
	g.SetStoreUp(true)

	want := map[string]string{
		"gatekeeper_logins_total": `# HELP gatekeeper_logins_total Finished SSH authentications by result and reason.
# TYPE gatekeeper_logins_total counter
gatekeeper_logins_total{reason="code",result="ok"} 1
gatekeeper_logins_total{reason="replayed_code",result="refused"} 2
`,
		"gatekeeper_code_reuse_refusals_total": `# HELP gatekeeper_code_reuse_refusals_total Verification codes refused because their time step was already used.
# TYPE gatekeeper_code_reuse_refusals_total counter
gatekeeper_code_reuse_refusals_total 2
`,
		"gatekeeper_trusted_bypass_total": `# HELP gatekeeper_trusted_bypass_total Logins from trusted networks that were not asked for a verification code.
# TYPE gatekeeper_trusted_bypass_total counter
gatekeeper_trusted_bypass_total 1
`,
		"gatekeeper_lockouts_total": `# HELP gatekeeper_lockouts_total Rate-limit lockouts started, by scope (user, address, network, trusted_user, trusted_code, trusted_address).
# TYPE gatekeeper_lockouts_total counter
gatekeeper_lockouts_total{scope="user"} 1
`,
		"gatekeeper_second_factor_checks_total": `# HELP gatekeeper_second_factor_checks_total Verification and recovery codes checked against a linked device.
# TYPE gatekeeper_second_factor_checks_total counter
gatekeeper_second_factor_checks_total 3
`,
		"gatekeeper_preauth_refused_total": `# HELP gatekeeper_preauth_refused_total Connections refused before authentication, by reason (per_address, per_network, full, early_drop).
# TYPE gatekeeper_preauth_refused_total counter
gatekeeper_preauth_refused_total{reason="per_address"} 1
`,
		"gatekeeper_store_write_errors_total": `# HELP gatekeeper_store_write_errors_total Failed writes to the store, by error (no_space, other).
# TYPE gatekeeper_store_write_errors_total counter
gatekeeper_store_write_errors_total{error="no_space"} 1
gatekeeper_store_write_errors_total{error="other"} 0
`,
		"gatekeeper_sessions": `# HELP gatekeeper_sessions Live SSH sessions relayed to the lander.
# TYPE gatekeeper_sessions gauge
gatekeeper_sessions 1
`,
		"gatekeeper_relayed_bytes_total": `# HELP gatekeeper_relayed_bytes_total Bytes relayed between clients and the lander, by direction (up: client to lander).
# TYPE gatekeeper_relayed_bytes_total counter
gatekeeper_relayed_bytes_total{direction="down"} 5000
gatekeeper_relayed_bytes_total{direction="up"} 100
`,
		"gatekeeper_auth_duration_seconds": `# HELP gatekeeper_auth_duration_seconds Time from the start of authentication to the decision.
# TYPE gatekeeper_auth_duration_seconds histogram
gatekeeper_auth_duration_seconds_bucket{le="0.005"} 0
gatekeeper_auth_duration_seconds_bucket{le="0.01"} 0
gatekeeper_auth_duration_seconds_bucket{le="0.025"} 0
gatekeeper_auth_duration_seconds_bucket{le="0.05"} 0
gatekeeper_auth_duration_seconds_bucket{le="0.1"} 0
gatekeeper_auth_duration_seconds_bucket{le="0.25"} 0
gatekeeper_auth_duration_seconds_bucket{le="0.5"} 0
gatekeeper_auth_duration_seconds_bucket{le="1"} 0
gatekeeper_auth_duration_seconds_bucket{le="2"} 0
gatekeeper_auth_duration_seconds_bucket{le="2.5"} 1
gatekeeper_auth_duration_seconds_bucket{le="5"} 1
gatekeeper_auth_duration_seconds_bucket{le="10"} 1
gatekeeper_auth_duration_seconds_bucket{le="30"} 1
gatekeeper_auth_duration_seconds_bucket{le="60"} 1
gatekeeper_auth_duration_seconds_bucket{le="+Inf"} 1
gatekeeper_auth_duration_seconds_sum 2.1
gatekeeper_auth_duration_seconds_count 1
`,
		"gatekeeper_store_duration_seconds": `# HELP gatekeeper_store_duration_seconds Latency of store operations by operation, failed ones included.
# TYPE gatekeeper_store_duration_seconds histogram
gatekeeper_store_duration_seconds_bucket{op="get",le="0.0005"} 0
gatekeeper_store_duration_seconds_bucket{op="get",le="0.001"} 0
gatekeeper_store_duration_seconds_bucket{op="get",le="0.0025"} 1
gatekeeper_store_duration_seconds_bucket{op="get",le="0.005"} 1
gatekeeper_store_duration_seconds_bucket{op="get",le="0.01"} 1
gatekeeper_store_duration_seconds_bucket{op="get",le="0.025"} 1
gatekeeper_store_duration_seconds_bucket{op="get",le="0.05"} 1
gatekeeper_store_duration_seconds_bucket{op="get",le="0.1"} 1
gatekeeper_store_duration_seconds_bucket{op="get",le="0.25"} 1
gatekeeper_store_duration_seconds_bucket{op="get",le="0.5"} 1
gatekeeper_store_duration_seconds_bucket{op="get",le="1"} 1
gatekeeper_store_duration_seconds_bucket{op="get",le="2"} 1
gatekeeper_store_duration_seconds_bucket{op="get",le="+Inf"} 1
gatekeeper_store_duration_seconds_sum{op="get"} 0.002
gatekeeper_store_duration_seconds_count{op="get"} 1
gatekeeper_store_duration_seconds_bucket{op="update",le="0.0005"} 0
gatekeeper_store_duration_seconds_bucket{op="update",le="0.001"} 0
gatekeeper_store_duration_seconds_bucket{op="update",le="0.0025"} 0
gatekeeper_store_duration_seconds_bucket{op="update",le="0.005"} 0
gatekeeper_store_duration_seconds_bucket{op="update",le="0.01"} 0
gatekeeper_store_duration_seconds_bucket{op="update",le="0.025"} 0
gatekeeper_store_duration_seconds_bucket{op="update",le="0.05"} 0
gatekeeper_store_duration_seconds_bucket{op="update",le="0.1"} 0
gatekeeper_store_duration_seconds_bucket{op="update",le="0.25"} 0
gatekeeper_store_duration_seconds_bucket{op="update",le="0.5"} 0
gatekeeper_store_duration_seconds_bucket{op="update",le="1"} 0
gatekeeper_store_duration_seconds_bucket{op="update",le="2"} 0
gatekeeper_store_duration_seconds_bucket{op="update",le="+Inf"} 1
gatekeeper_store_duration_seconds_sum{op="update"} 3
gatekeeper_store_duration_seconds_count{op="update"} 1
`,
		"gatekeeper_store_errors_total": `# HELP gatekeeper_store_errors_total Store operations that failed, by operation.
# TYPE gatekeeper_store_errors_total counter
gatekeeper_store_errors_total{op="get"} 0
gatekeeper_store_errors_total{op="update"} 1
`,
		"gatekeeper_store_up": `# HELP gatekeeper_store_up 1 if the store answered its last health check, 0 otherwise.
# TYPE gatekeeper_store_up gauge
gatekeeper_store_up 1
`,
	}

	raw, e := scrape(t, r.Handler())
	for name, w := range want {
		if got := block(raw, name); got != w {
			t.Errorf("%s as scraped:\n%s\nwant:\n%s", name, got, w)
		}
	}
	// No gatekeeper family more, none fewer.
	var names []string
	for _, name := range e.order {
		if strings.HasPrefix(name, "gatekeeper_") {
			names = append(names, name)
		}
	}
	if wantNames := slices.Sorted(maps.Keys(want)); !slices.Equal(names, wantNames) {
		t.Errorf("gatekeeper families %v, want %v", names, wantNames)
	}

	// A second set in the same registry is a programming error.
	defer func() {
		if recover() == nil {
			t.Error("second NewGatekeeper on one registry did not panic")
		}
	}()
	metrics.NewGatekeeper(r)
}

// TestGatekeeperAtStart: before anything happens, the series that need no
// label value from the daemon are there at zero.
func TestGatekeeperAtStart(t *testing.T) {
	r := metrics.NewRegistry()
	metrics.NewGatekeeper(r)
	_, e := scrape(t, r.Handler())
	zero := []struct {
		name string
		kv   []string
	}{
		{"gatekeeper_code_reuse_refusals_total", nil},
		{"gatekeeper_trusted_bypass_total", nil},
		{"gatekeeper_second_factor_checks_total", nil},
		{"gatekeeper_store_write_errors_total", []string{"error", "no_space"}},
		{"gatekeeper_store_write_errors_total", []string{"error", "other"}},
		{"gatekeeper_sessions", nil},
		{"gatekeeper_relayed_bytes_total", []string{"direction", "up"}},
		{"gatekeeper_relayed_bytes_total", []string{"direction", "down"}},
		{"gatekeeper_auth_duration_seconds_count", nil},
		{"gatekeeper_store_up", nil},
	}
	for _, z := range zero {
		if got := e.get(t, z.name, z.kv...); got != 0 {
			t.Errorf("%s%v = %v at start, want 0", z.name, z.kv, got)
		}
	}
	// The store families have no series before the first operation.
	for _, name := range []string{"gatekeeper_store_duration_seconds", "gatekeeper_store_errors_total"} {
		if _, ok := e.typ[name]; ok {
			t.Errorf("%s exported before any store operation", name)
		}
	}
}

func TestObserveStore(t *testing.T) {
	errDown := errors.New("etcdserver: request timed out")
	type obs struct {
		op  string
		d   time.Duration
		err error
	}
	tests := []struct {
		name string
		obs  []obs
		// per op: observations at or below each bound (cumulative), the
		// count, the sum in seconds, and the errors
		buckets map[string]map[string]float64
		count   map[string]float64
		sum     map[string]float64
		errs    map[string]float64
	}{
		{
			name:    "one fast read",
			obs:     []obs{{"get", 300 * time.Microsecond, nil}},
			buckets: map[string]map[string]float64{"get": {"0.0005": 1, "2": 1, "+Inf": 1}},
			count:   map[string]float64{"get": 1},
			sum:     map[string]float64{"get": 0.0003},
			errs:    map[string]float64{"get": 0},
		},
		{
			name: "bounds belong to their bucket",
			obs: []obs{
				{"update", 500 * time.Microsecond, nil},
				{"update", time.Millisecond, nil},
				{"update", 2 * time.Second, nil},
			},
			buckets: map[string]map[string]float64{"update": {"0.0005": 1, "0.001": 2, "1": 2, "2": 3, "+Inf": 3}},
			count:   map[string]float64{"update": 3},
			sum:     map[string]float64{"update": 2.0015},
			errs:    map[string]float64{"update": 0},
		},
		{
			name: "failures are timed and counted, by operation",
			obs: []obs{
				{"append", 4 * time.Millisecond, nil},
				{"append", 5 * time.Second, errDown},
				{"ticket", 20 * time.Millisecond, errDown},
				{"ticket", 20 * time.Millisecond, errDown},
				{"session", 0, nil},
			},
			buckets: map[string]map[string]float64{
				"append":  {"0.0025": 0, "0.005": 1, "2": 1, "+Inf": 2},
				"ticket":  {"0.01": 0, "0.025": 2, "+Inf": 2},
				"session": {"0.0005": 1, "+Inf": 1},
			},
			count: map[string]float64{"append": 2, "ticket": 2, "session": 1},
			sum:   map[string]float64{"append": 5.004, "ticket": 0.04, "session": 0},
			errs:  map[string]float64{"append": 1, "ticket": 2, "session": 0},
		},
		{
			name:    "an invalid UTF-8 op does not crash the daemon",
			obs:     []obs{{"li\xffmit", time.Millisecond, errDown}},
			buckets: map[string]map[string]float64{"li\uFFFDmit": {"0.001": 1}},
			count:   map[string]float64{"li\uFFFDmit": 1},
			sum:     map[string]float64{"li\uFFFDmit": 0.001},
			errs:    map[string]float64{"li\uFFFDmit": 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := metrics.NewRegistry()
			g := metrics.NewGatekeeper(r)
			for _, o := range tt.obs {
				g.ObserveStore(o.op, o.d, o.err)
			}
			_, e := scrape(t, r.Handler())
			if e.typ["gatekeeper_store_duration_seconds"] != "histogram" || e.typ["gatekeeper_store_errors_total"] != "counter" {
				t.Fatalf("types %q, %q", e.typ["gatekeeper_store_duration_seconds"], e.typ["gatekeeper_store_errors_total"])
			}
			for op, bs := range tt.buckets {
				for le, want := range bs {
					if got := e.get(t, "gatekeeper_store_duration_seconds_bucket", "op", op, "le", le); got != want {
						t.Errorf("bucket{op=%q,le=%s} = %v, want %v", op, le, got, want)
					}
				}
			}
			for op, want := range tt.count {
				if got := e.get(t, "gatekeeper_store_duration_seconds_count", "op", op); got != want {
					t.Errorf("count{op=%q} = %v, want %v", op, got, want)
				}
			}
			for op, want := range tt.sum {
				if got := e.get(t, "gatekeeper_store_duration_seconds_sum", "op", op); !near(got, want) {
					t.Errorf("sum{op=%q} = %v, want %v", op, got, want)
				}
			}
			for op, want := range tt.errs {
				if got := e.get(t, "gatekeeper_store_errors_total", "op", op); got != want {
					t.Errorf("errors{op=%q} = %v, want %v", op, got, want)
				}
			}
			// Every op seen has both series, and no other op has any.
			var ops []string
			for _, s := range e.samples {
				if s.name == "gatekeeper_store_errors_total" {
					ops = append(ops, s.labels["op"])
				}
			}
			if want := slices.Sorted(maps.Keys(tt.errs)); !slices.Equal(ops, want) {
				t.Errorf("ops with an error series %v, want %v", ops, want)
			}
		})
	}
}

func near(a, b float64) bool {
	d := a - b
	return d < 1e-12 && d > -1e-12
}

func TestSetStoreUp(t *testing.T) {
	tests := []struct {
		name  string
		calls []bool
		want  float64
	}{
		{"before the first check", nil, 0},
		{"answered", []bool{true}, 1},
		{"did not answer", []bool{false}, 0},
		{"went down", []bool{true, true, false}, 0},
		{"came back", []bool{false, true}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := metrics.NewRegistry()
			g := metrics.NewGatekeeper(r)
			for _, up := range tt.calls {
				g.SetStoreUp(up)
			}
			_, e := scrape(t, r.Handler())
			if e.typ["gatekeeper_store_up"] != "gauge" {
				t.Errorf("gatekeeper_store_up TYPE %q, want gauge", e.typ["gatekeeper_store_up"])
			}
			if got := e.get(t, "gatekeeper_store_up"); got != tt.want {
				t.Errorf("gatekeeper_store_up = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestNilGatekeeper: code that has no metrics (a store opened by an admin
// command) may call the store methods on a nil *Gatekeeper.
func TestNilGatekeeper(t *testing.T) {
	var g *metrics.Gatekeeper
	g.ObserveStore("get", time.Millisecond, errors.New("x"))
	g.SetStoreUp(true)
}

func TestStoreBuckets(t *testing.T) {
	b := metrics.StoreBuckets()
	if b[0] != 0.0005 || b[len(b)-1] != 2 || !slices.IsSorted(b) {
		t.Errorf("StoreBuckets() = %v, want increasing from 0.0005 to 2", b)
	}
	// Callers get their own copy.
	b[0] = 99
	if metrics.StoreBuckets()[0] != 0.0005 {
		t.Error("StoreBuckets shares its slice")
	}
}
