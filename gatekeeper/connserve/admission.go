package connserve

import (
	"math/rand/v2"
	"net/netip"
	"sync"
)

// Reasons Admission.Enter turns a connection away, for logs and metrics.
const (
	RefusedPerAddress = "per_address"
	RefusedPerNetwork = "per_network"
	RefusedFull       = "full"
	RefusedEarlyDrop  = "early_drop"
)

// earlyDropRate is the chance of refusal at DropStart, rising linearly to 1
// at Max, as in sshd's MaxStartups "start:30:full".
const earlyDropRate = 0.3

// Limits are Admission's caps on connections that have not authenticated.
type Limits struct {
	// PerAddress caps connections from one address (IPv6: one /64).
	PerAddress int
	// PerNetwork caps connections from one /24 (IPv6: one /48).
	PerNetwork int
	// Max caps connections from outside the trusted networks in total.
	Max int
	// DropStart is where random early drop begins (0: Max/2).
	DropStart int
	// TrustedReserve is how many connections from the trusted networks are
	// let in beyond Max.
	TrustedReserve int
}

// Or returns l with the caps it leaves zero (or negative) — PerAddress, PerNetwork, Max —
// taken from d. DropStart and TrustedReserve are kept: zero means something for them.
func (l Limits) Or(d Limits) Limits {
	pick := func(v, def int) int {
		if v <= 0 {
			return def
		}
		return v
	}
	l.PerAddress = pick(l.PerAddress, d.PerAddress)
	l.PerNetwork = pick(l.PerNetwork, d.PerNetwork)
	l.Max = pick(l.Max, d.Max)
	return l
}

// Admission decides which new connections may start authenticating, like
// sshd's MaxStartups and PerSourceMaxStartups together: per source address
// and per source network, so that one host or one network cannot take every
// slot; in total, with random early drop, so that a flood from many
// networks is thinned before the cap is reached; and with slots only the
// trusted networks may use, so that the campus gets in whatever happens
// outside. A connection holds its place from Enter until release (when it
// has authenticated or ended). It is safe for concurrent use.
type Admission struct {
	// random returns a number in [0, 1) for the early drop; tests replace it.
	random func() float64

	// mu protects the following.
	mu        sync.Mutex
	limits    Limits
	total     int
	perAddr   map[netip.Prefix]int
	perNet    map[netip.Prefix]int
	refusedBy map[string]uint64 // refusals since the last TakeRefused
}

// NewAdmission returns an Admission with limits.
func NewAdmission(limits Limits) *Admission {
	return &Admission{
		random:    rand.Float64,
		limits:    limits,
		perAddr:   map[netip.Prefix]int{},
		perNet:    map[netip.Prefix]int{},
		refusedBy: map[string]uint64{},
	}
}

// SetLimits replaces the limits (config reload); connections admitted keep
// their places.
func (a *Admission) SetLimits(l Limits) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.limits = l
}

// Enter asks for a place for a new connection from addr; trusted says
// whether addr is inside the trusted networks, whose connections skip the
// per-source caps (a campus NAT carries many users) and may use the reserve.
// When the connection is admitted, release gives its place back (calling it
// again does nothing) and refused is ""; otherwise refused is the reason.
func (a *Admission) Enter(addr netip.Addr, trusted bool) (release func(), refused string) {
	addr = addr.Unmap()
	host, net := sourcePrefixes(addr)
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.limits
	if refused = a.refusal(l, host, net, trusted); refused != "" {
		a.refusedBy[refused]++
		return func() {}, refused
	}
	a.total++
	if !trusted {
		a.perAddr[host]++
		a.perNet[net]++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.total--
			if !trusted {
				decrement(a.perAddr, host)
				decrement(a.perNet, net)
			}
		})
	}, ""
}

// refusal is why a connection may not enter now ("" if it may). a.mu must
// be held.
func (a *Admission) refusal(l Limits, host, net netip.Prefix, trusted bool) string {
	if trusted {
		if a.total >= l.Max+l.TrustedReserve {
			return RefusedFull
		}
		return ""
	}
	switch {
	case a.perAddr[host] >= l.PerAddress:
		return RefusedPerAddress
	case a.perNet[net] >= l.PerNetwork:
		return RefusedPerNetwork
	case a.total >= l.Max:
		return RefusedFull
	}
	start := l.DropStart
	if start <= 0 {
		start = max(l.Max/2, 1) // never drop a connection when none is waiting
	}
	if a.total >= start && l.Max > start {
		p := earlyDropRate + (1-earlyDropRate)*float64(a.total-start)/float64(l.Max-start)
		if a.random() < p {
			return RefusedEarlyDrop
		}
	}
	return ""
}

// Len is the number of connections holding a place.
func (a *Admission) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total
}

// TakeRefused returns the refusals by reason since the last call, and
// forgets them: the caller logs one summary line per period instead of one
// line per refused connection of a flood.
func (a *Admission) TakeRefused() map[string]uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.refusedBy) == 0 {
		return nil
	}
	out := a.refusedBy
	a.refusedBy = map[string]uint64{}
	return out
}

// sourcePrefixes are addr's host (IPv4 /32, IPv6 /64: one host usually owns
// a whole /64) and network (/24, /48).
func sourcePrefixes(addr netip.Addr) (host, net netip.Prefix) {
	hostBits, netBits := 32, 24
	if addr.Is6() {
		hostBits, netBits = 64, 48
	}
	host, _ = addr.Prefix(hostBits)
	net, _ = addr.Prefix(netBits)
	return host, net
}

func decrement(m map[netip.Prefix]int, k netip.Prefix) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
}
