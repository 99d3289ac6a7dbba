package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values used with Gatekeeper's vectors. Reasons are free-form but must
// come from a small fixed set (never a user name or address).
const (
	ResultOK      = "ok"
	ResultRefused = "refused"

	DirectionUp   = "up"   // client → lander
	DirectionDown = "down" // lander → client
)

// AuthBuckets returns the upper bounds (seconds) of the auth latency
// histogram: from a trusted bypass (milliseconds) through the upstream
// password check to failures held back by failure_delay (3 s by default)
// and slow landers.
func AuthBuckets() []float64 {
	return []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 2.5, 5, 10, 30, 60}
}

// StoreBuckets returns the upper bounds (seconds) of the store latency
// histogram: from a local bbolt read (well under a millisecond) through
// fsynced writes and etcd round trips to an operation that runs into
// store.etcd.request_timeout (2 s by default).
func StoreBuckets() []float64 {
	return []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2}
}

// Gatekeeper is the daemon's set of metrics, all registered in one Registry.
type Gatekeeper struct {
	// Logins counts finished authentications by result (ResultOK,
	// ResultRefused) and reason (e.g. "code", "trusted", "recovery" for ok;
	// "bad_code", "replay", "password", "locked", "unknown_user" for
	// refused).
	Logins *CounterVec
	// CodeReuseRefusals counts codes refused because their time step was
	// already used.
	CodeReuseRefusals *Counter
	// TrustedBypass counts logins from trusted networks that were not asked
	// for a code.
	TrustedBypass *Counter
	// Lockouts counts rate-limit lockouts started, by scope (user,
	// address, network, trusted_user, trusted_code, trusted_address).
	Lockouts *CounterVec
	// SecondFactorChecks counts codes and recovery codes checked against a
	// user's device: every one of them was first given a place in the
	// user's rate-limit budget.
	SecondFactorChecks *Counter
	// PreauthRefused counts connections turned away before authentication,
	// by reason (per_address, per_network, full, early_drop).
	PreauthRefused *CounterVec
	// StoreWriteErrors counts failed writes to the store by what failed
	// (no_space, other); audit events that could not be written are among
	// them.
	StoreWriteErrors *CounterVec
	// Sessions is the number of live relayed sessions.
	Sessions *Gauge
	// RelayedBytes counts bytes relayed by direction (DirectionUp,
	// DirectionDown); RelayedUp and RelayedDown are its two children.
	RelayedBytes           *CounterVec
	RelayedUp, RelayedDown *Counter
	// AuthDuration observes seconds from the start of authentication to the
	// decision, successes and failures alike (buckets: AuthBuckets()).
	AuthDuration *Histogram

	// The store's metrics, fed through ObserveStore and SetStoreUp.
	storeDuration *prometheus.HistogramVec // gatekeeper_store_duration_seconds{op}
	storeErrors   *prometheus.CounterVec   // gatekeeper_store_errors_total{op}
	storeUp       prometheus.Gauge         // gatekeeper_store_up
}

// NewGatekeeper registers gatekeeper's metrics in r. It panics if r already
// holds metrics of the same names.
func NewGatekeeper(r *Registry) *Gatekeeper {
	g := &Gatekeeper{
		Logins: r.NewCounterVec("gatekeeper_logins_total",
			"Finished SSH authentications by result and reason.", "result", "reason"),
		CodeReuseRefusals: r.NewCounter("gatekeeper_code_reuse_refusals_total",
			"Verification codes refused because their time step was already used."),
		TrustedBypass: r.NewCounter("gatekeeper_trusted_bypass_total",
			"Logins from trusted networks that were not asked for a verification code."),
		Lockouts: r.NewCounterVec("gatekeeper_lockouts_total",
			"Rate-limit lockouts started, by scope (user, address, network, trusted_user, trusted_code, trusted_address).", "scope"),
		SecondFactorChecks: r.NewCounter("gatekeeper_second_factor_checks_total",
			"Verification and recovery codes checked against a linked device."),
		PreauthRefused: r.NewCounterVec("gatekeeper_preauth_refused_total",
			"Connections refused before authentication, by reason (per_address, per_network, full, early_drop).", "reason"),
		StoreWriteErrors: r.NewCounterVec("gatekeeper_store_write_errors_total",
			"Failed writes to the store, by error (no_space, other).", "error"),
		Sessions: r.NewGauge("gatekeeper_sessions",
			"Live SSH sessions relayed to the lander."),
		RelayedBytes: r.NewCounterVec("gatekeeper_relayed_bytes_total",
			"Bytes relayed between clients and the lander, by direction (up: client to lander).", "direction"),
		AuthDuration: r.NewHistogram("gatekeeper_auth_duration_seconds",
			"Time from the start of authentication to the decision.", AuthBuckets()),
		storeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gatekeeper_store_duration_seconds",
			Help:    "Latency of store operations by operation, failed ones included.",
			Buckets: StoreBuckets(),
		}, []string{"op"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatekeeper_store_errors_total",
			Help: "Store operations that failed, by operation.",
		}, []string{"op"}),
		storeUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatekeeper_store_up",
			Help: "1 if the store answered its last health check, 0 otherwise.",
		}),
	}
	r.register("gatekeeper_store_duration_seconds", []string{"op"}, g.storeDuration)
	r.register("gatekeeper_store_errors_total", []string{"op"}, g.storeErrors)
	r.register("gatekeeper_store_up", nil, g.storeUp)
	// Created now so both directions are exported (at 0) from the first
	// scrape, and callers need no label lookups on the hot path.
	g.RelayedUp = g.RelayedBytes.With(DirectionUp)
	g.RelayedDown = g.RelayedBytes.With(DirectionDown)
	// Likewise both kinds of write error, so that the family is there (at
	// 0) before the first failure.
	g.StoreWriteErrors.With("no_space")
	g.StoreWriteErrors.With("other")
	return g
}

// ObserveStore records one store operation. op names it with a short word
// from a small fixed set, such as "get", "update", "append", "events",
// "ticket", "limit", "session"; never a user name or key. d is how long it
// took and err its outcome. d goes into gatekeeper_store_duration_seconds{op}
// whatever the outcome, so timeouts show as latency; a non-nil err also
// counts in gatekeeper_store_errors_total{op}. Pass nil for answers that are
// not a failure of the store (no such user, a lost compare-and-swap), so that
// the error rate means the store is in trouble. Both series of op exist, the
// error count at zero, from the first call with op. A nil g ignores the call.
func (g *Gatekeeper) ObserveStore(op string, d time.Duration, err error) {
	if g == nil {
		return
	}
	op = validUTF8([]string{op})[0]
	g.storeDuration.WithLabelValues(op).Observe(d.Seconds())
	errs := g.storeErrors.WithLabelValues(op)
	if err != nil {
		errs.Inc()
	}
}

// SetStoreUp records the outcome of the latest store health check in
// gatekeeper_store_up: 1 when the store answered, 0 when it did not. The
// gauge is 0 until the first call. A nil g ignores the call.
func (g *Gatekeeper) SetStoreUp(up bool) {
	if g == nil {
		return
	}
	if up {
		g.storeUp.Set(1)
	} else {
		g.storeUp.Set(0)
	}
}
