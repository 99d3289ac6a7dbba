package metrics

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
	// address, network, trusted_user, trusted_address).
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
			"Rate-limit lockouts started, by scope (user, address, network, trusted_user, trusted_address).", "scope"),
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
	}
	// Created now so both directions are exported (at 0) from the first
	// scrape, and callers need no label lookups on the hot path.
	g.RelayedUp = g.RelayedBytes.With(DirectionUp)
	g.RelayedDown = g.RelayedBytes.With(DirectionDown)
	return g
}
