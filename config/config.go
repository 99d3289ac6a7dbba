// Package config loads gatekeeper's settings from a YAML file, GATEKEEPER_* environment
// variables and command-line flags (in rising precedence), validates them all at once and
// prints the effective result for `gatekeeper config check`.
//
// Viper is not safe for concurrent use, so every Load builds its own viper instance and the
// result is a plain typed struct that the daemon can share read-only.
package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// DefaultFile is read by Load when no file is named and $GATEKEEPER_CONFIG is unset, if it
// exists; otherwise Load uses defaults, environment and flags only.
const DefaultFile = "/etc/gatekeeper/gatekeeper.yaml"

// EnvPrefix prefixes every environment variable: key "rate_limit.failures" is read from
// GATEKEEPER_RATE_LIMIT_FAILURES. EnvConfigFile names the config file when no file is given.
const (
	EnvPrefix     = "GATEKEEPER"
	EnvConfigFile = EnvPrefix + "_CONFIG"
)

// maxFileSize bounds what Load reads: a real config is a few KiB, and a runaway file (or a
// device node given by mistake) must not exhaust memory.
const maxFileSize = 1 << 20

//go:embed gatekeeper.example.yaml
var example []byte

// RefusesCapitals reports whether the doors refuse name for its upper-case
// letters: allow_uppercase_usernames is off and name has some.
func (c *Config) RefusesCapitals(name string) bool {
	return !c.AllowUppercaseUsernames && strings.ToLower(name) != name
}

// Example returns the annotated example configuration, which documents every key with its
// default value. It returns a fresh copy so callers may modify it.
func Example() []byte { return bytes.Clone(example) }

// Config is the validated configuration of the daemon and its commands. Load fills the
// mapstructure-tagged fields; Validate fills the parsed ones (Trusted, ProxyFrom,
// Enroll.Allowed).
type Config struct {
	// Listen is the SSH front door, host:port.
	Listen string `mapstructure:"listen"`
	// HostKeyFiles are the gatekeeper's own SSH host keys; missing ones are created on first start.
	HostKeyFiles []string `mapstructure:"host_key_files"`
	// DB is the bbolt file holding all user state.
	DB string `mapstructure:"db"`
	// SecretKeyFile holds the key that encrypts TOTP secrets at rest.
	SecretKeyFile string `mapstructure:"secret_key_file"`
	// Upstream is the lander's sshd that connections are relayed to.
	Upstream Upstream `mapstructure:"upstream"`
	// FirstFactor names the password backend; only "upstream" (the lander's sshd) exists.
	FirstFactor string `mapstructure:"first_factor"`
	// TrustedNetworks are the raw trusted_networks entries, CIDR networks or bare addresses.
	TrustedNetworks []string `mapstructure:"trusted_networks"`
	// Trusted is TrustedNetworks parsed by Validate: no code is asked from these sources.
	Trusted []netip.Prefix `mapstructure:"-"`
	// ProxyProtocol accepts PROXY v1/v2 headers, but only from ProxyProtocolFrom.
	ProxyProtocol bool `mapstructure:"proxy_protocol"`
	// ProxyProtocolFrom are the raw proxy_protocol_from entries (load balancer addresses).
	ProxyProtocolFrom []string `mapstructure:"proxy_protocol_from"`
	// ProxyFrom is ProxyProtocolFrom parsed by Validate.
	ProxyFrom []netip.Prefix `mapstructure:"-"`
	// TOTP configures the one-time codes.
	TOTP TOTP `mapstructure:"totp"`
	// RateLimit configures lockouts after failed logins.
	RateLimit RateLimit `mapstructure:"rate_limit"`
	// Enroll configures device linking.
	Enroll Enroll `mapstructure:"enroll"`
	// Admin configures the local admin socket.
	Admin Admin `mapstructure:"admin"`
	// MetricsListen serves /metrics and /healthz; empty disables it.
	MetricsListen string `mapstructure:"metrics_listen"`
	// LogFormat is "json" or "text".
	LogFormat string `mapstructure:"log_format"`
	// NodeName names this gatekeeper in sessions, logs and metrics; Validate sets it to the
	// host name when empty.
	NodeName string `mapstructure:"node_name"`
	// Store picks where the state is kept: the bbolt file in DB, or an etcd cluster.
	Store Store `mapstructure:"store"`

	// LoginGraceTime is how long a client may take to authenticate.
	LoginGraceTime time.Duration `mapstructure:"login_grace_time"`
	// MaxAuthTries is the number of authentication attempts per connection.
	MaxAuthTries int `mapstructure:"max_auth_tries"`
	// AllowUppercaseUsernames lets user names with upper-case letters in at the doors. Off, they
	// are refused: a lander whose user directory ignores case would take "Alice" as alice, a
	// second name with its own device link, lockouts and resets (see gatekeeper.Server).
	AllowUppercaseUsernames bool `mapstructure:"allow_uppercase_usernames"`
	// MaxStartups caps concurrent unauthenticated connections from outside the trusted networks;
	// past Preauth.DropStart new ones are dropped at random, more often the fuller it gets.
	MaxStartups int `mapstructure:"max_startups"`
	// Preauth limits connections that have not authenticated yet, per source and in time.
	Preauth Preauth `mapstructure:"preauth"`
	// MaxChannels caps the channels (sessions, forwardings) open at once on one connection.
	MaxChannels int `mapstructure:"max_channels"`
	// FailureDelay is the least time every failed attempt takes, counted from the client's last
	// answer, so that failures look alike. The front door waits longer when the lander takes
	// longer to refuse a password (PAM's own randomised delay of 1-3 s).
	FailureDelay time.Duration `mapstructure:"failure_delay"`
	// Session limits live proxied sessions; zero values mean no limit.
	Session Session `mapstructure:"session"`
	// Audit configures the audit log in the database.
	Audit Audit `mapstructure:"audit"`
	// Relay tunes the data path of relayed connections.
	Relay Relay `mapstructure:"relay"`
	// Keys configures SSH keys registered at the gatekeeper as the first factor.
	Keys Keys `mapstructure:"keys"`

	// source describes where the file settings came from, for messages and Effective.
	source string
	// origins maps each key whose value came from a flag or a GATEKEEPER_* environment
	// variable to that flag ("--listen") or variable, for error messages (see keyFrom).
	origins map[string]string
	// warnings are Validate's findings that are allowed but probably a mistake.
	warnings []string
}

// Warnings returns what Validate found allowed but probably a mistake (such as a load balancer
// inside the trusted networks), for `config check` to print and the daemon to log.
func (c *Config) Warnings() []string { return slices.Clone(c.warnings) }

// Upstream is the lander's sshd.
type Upstream struct {
	// Address is the lander's sshd, host:port.
	Address string `mapstructure:"address"`
	// KnownHosts holds the lander's host key(s); the key is always verified.
	KnownHosts string `mapstructure:"known_hosts"`
}

// TOTP configures RFC 6238 codes.
type TOTP struct {
	// Issuer is shown in the authenticator app and is part of the otpauth label.
	Issuer string `mapstructure:"issuer"`
	// Skew is the number of 30 s steps accepted on either side of now.
	Skew int `mapstructure:"skew"`
}

// RateLimit locks users and source addresses out after repeated failures. Failures from
// outside the trusted networks and from inside them are counted apart, so that an attacker on
// the internet can never lock anyone out of logins from the trusted networks.
type RateLimit struct {
	// Failures within Window lock out a user (outside logins, counted across all sources) and a
	// source address (IPv4 /32, IPv6 /64). Every attempt reserves its place before its code is
	// checked, so at most this many codes are ever checked per user per lockout.
	Failures int `mapstructure:"failures"`
	// Window is the period in which failures are counted.
	Window time.Duration `mapstructure:"window"`
	// Lockout is how long a first lockout lasts; each consecutive one doubles, up to MaxLockout.
	Lockout time.Duration `mapstructure:"lockout"`
	// MaxLockout caps the doubling of consecutive lockouts.
	MaxLockout time.Duration `mapstructure:"max_lockout"`
	// NetworkFailures within Window lock out a source network (IPv4 /24, IPv6 /48).
	NetworkFailures int `mapstructure:"network_failures"`
	// TrustedFailures within Window lock out a user's logins from the trusted networks, and
	// (times five) a trusted source address: a campus NAT carries many users.
	TrustedFailures int `mapstructure:"trusted_failures"`
}

// Preauth holds the "preauth" keys: limits on connections before they authenticate, against
// floods of idle or slow connections. They apply to the SSH front door and SSH linking.
type Preauth struct {
	// HandshakeTimeout bounds the version exchange and key exchange; login_grace_time then
	// bounds authentication.
	HandshakeTimeout time.Duration `mapstructure:"handshake_timeout"`
	// PerAddress caps unauthenticated connections from one address (IPv6: one /64).
	PerAddress int `mapstructure:"per_address"`
	// PerNetwork caps unauthenticated connections from one /24 (IPv6: one /48).
	PerNetwork int `mapstructure:"per_network"`
	// DropStart is where random early drop begins: from here to max_startups a new connection is
	// refused with a probability rising from 30% to 100%, as sshd's MaxStartups start:30:full.
	// Zero means half of max_startups.
	DropStart int `mapstructure:"drop_start"`
	// TrustedReserve is how many connections from the trusted networks are let in beyond
	// max_startups, so that a flood from outside cannot keep the campus out.
	TrustedReserve int `mapstructure:"trusted_reserve"`
}

// Enroll configures device linking.
type Enroll struct {
	// PortalListen is the browser portal's address; empty disables the portal.
	PortalListen string `mapstructure:"portal_listen"`
	// SSHListen is the terminal linking SSH listener; empty disables it.
	SSHListen string `mapstructure:"ssh_listen"`
	// AllowedNetworks are the raw allowed_networks entries.
	AllowedNetworks []string `mapstructure:"allowed_networks"`
	// Allowed is AllowedNetworks parsed by Validate, or a copy of Trusted when none are given:
	// linking is allowed from here without a ticket.
	Allowed []netip.Prefix `mapstructure:"-"`
	// ConfirmWithin is how long an unconfirmed link stays pending.
	ConfirmWithin time.Duration `mapstructure:"confirm_within"`
	// TLSCert and TLSKey serve the portal over HTTPS when both are set.
	TLSCert string `mapstructure:"tls_cert"`
	// TLSKey is the private key for TLSCert.
	TLSKey string `mapstructure:"tls_key"`
}

// Admin configures the admin Unix socket.
type Admin struct {
	// Socket is the admin socket's path.
	Socket string `mapstructure:"socket"`
	// Groups may use the admin socket besides root: a caller is let in when its uid is 0 or its
	// primary or a supplementary group is one of these.
	Groups []string `mapstructure:"groups"`
}

// Store holds the "store" keys.
type Store struct {
	// Backend is "bolt" (the file in db, one node) or "etcd" (shared by several nodes).
	Backend string `mapstructure:"backend"`
	// Etcd configures the etcd backend.
	Etcd Etcd `mapstructure:"etcd"`
}

// Etcd holds the "store.etcd" keys.
type Etcd struct {
	// Endpoints are the cluster's client URLs (http:// or https://).
	Endpoints []string `mapstructure:"endpoints"`
	// Prefix is put before every key gatekeeper writes; it starts and ends with "/".
	Prefix string `mapstructure:"prefix"`
	// DialTimeout bounds the first connection to the cluster.
	DialTimeout time.Duration `mapstructure:"dial_timeout"`
	// RequestTimeout bounds every request; without quorum a request fails after it.
	RequestTimeout time.Duration `mapstructure:"request_timeout"`
	// TLSCA, TLSCert and TLSKey configure client TLS (all empty: plain, for loopback tests).
	TLSCA   string `mapstructure:"tls_ca"`
	TLSCert string `mapstructure:"tls_cert"`
	TLSKey  string `mapstructure:"tls_key"`
	// Username and PasswordFile log in to etcd when its authentication is on.
	Username     string `mapstructure:"username"`
	PasswordFile string `mapstructure:"password_file"`
}

// Audit holds the "audit" keys.
type Audit struct {
	// Retention is how long audit events are kept; older ones are deleted (0: forever).
	Retention time.Duration `mapstructure:"retention"`
}

// Session holds the "session" keys: limits on live proxied sessions.
type Session struct {
	// IdleTimeout ends a session with no traffic in either direction for this long (0: never).
	IdleTimeout time.Duration `mapstructure:"idle_timeout"`
	// MaxDuration ends a session this long after login (0: never).
	MaxDuration time.Duration `mapstructure:"max_duration"`
	// MaxPerUser caps one user's live sessions on this node (0: no cap), as pam_limits'
	// maxlogins does on a login node: one account cannot make the node hold an unbounded number
	// of connections.
	MaxPerUser int `mapstructure:"max_per_user"`
}

// Relay tunes the data path of relayed connections.
type Relay struct {
	// Window is the largest receive window advertised to clients for each channel they open, a
	// size such as "16MiB": over a long round trip it, not the CPU, sets the upload speed (a
	// client may send this much ahead of what the lander has taken). OpenSSH's own is 2 MiB. Each
	// client gets its handshake's round trip times 1 GiB/s within 2 MiB and Window (package relay).
	Window string `mapstructure:"window"`
	// WindowTotal bounds the memory the windows above 2 MiB may hold on this node at once;
	// channels opened past it get 2 MiB.
	WindowTotal string `mapstructure:"window_total"`
	// WindowBytes and WindowTotalBytes are Window and WindowTotal parsed by Validate.
	WindowBytes      int64 `mapstructure:"-"`
	WindowTotalBytes int64 `mapstructure:"-"`
}

// Keys holds the "keys" keys: SSH keys registered at the gatekeeper as the first factor, and
// lander logins by short-lived certificate.
type Keys struct {
	// Enabled lets registered keys log in (with a code from outside the trusted networks).
	Enabled bool `mapstructure:"enabled"`
	// LanderCAFile is the ed25519 user CA that signs the certificate of each key login at the
	// lander, created 0600 on first start; its public half (LanderCAFile + ".pub") goes into
	// the lander's TrustedUserCAKeys.
	LanderCAFile string `mapstructure:"lander_ca_file"`
	// CertValidity is the lifetime of that certificate.
	CertValidity time.Duration `mapstructure:"cert_validity"`
	// Remember, when not zero, lets a key that logged in with a code log in again from the
	// same /24 (IPv6 /64) without one for this long.
	Remember time.Duration `mapstructure:"remember"`
	// AutomationMaxLifetime bounds, and is the default of, an automation key's lifetime.
	AutomationMaxLifetime time.Duration `mapstructure:"automation_max_lifetime"`
}

// setting is one configuration key with its default. The key's kind (scalar or list) follows
// from the default's type.
type setting struct {
	key string
	def any
}

// settings lists every key in the order Effective and the example use. It is the single place
// that knows the keys: defaults, env names, flag names and the unknown-key check derive from it.
func settings() []setting {
	return []setting{
		{"listen", "0.0.0.0:22"},
		{"host_key_files", []string{"/var/lib/gatekeeper/ssh_host_ed25519_key"}},
		{"db", "/var/lib/gatekeeper/gatekeeper.db"},
		{"secret_key_file", "/var/lib/gatekeeper/secret.key"},
		{"upstream.address", "127.0.0.1:22"},
		{"upstream.known_hosts", "/etc/gatekeeper/known_hosts"},
		{"first_factor", "upstream"},
		{"trusted_networks", []string{}},
		{"proxy_protocol", false},
		{"proxy_protocol_from", []string{}},
		{"totp.issuer", "gatekeeper"},
		{"totp.skew", 1},
		{"rate_limit.failures", 3},
		{"rate_limit.window", 30 * time.Second},
		{"rate_limit.lockout", 5 * time.Minute},
		{"rate_limit.max_lockout", time.Hour},
		{"rate_limit.network_failures", 10},
		{"rate_limit.trusted_failures", 10},
		{"enroll.portal_listen", "127.0.0.1:8080"},
		{"enroll.ssh_listen", "127.0.0.1:2223"},
		{"enroll.allowed_networks", []string{}},
		{"enroll.confirm_within", 10 * time.Minute},
		{"enroll.tls_cert", ""},
		{"enroll.tls_key", ""},
		{"admin.socket", "/run/gatekeeper/admin.sock"},
		{"admin.groups", []string{"root", "gatekeeper"}},
		{"metrics_listen", "127.0.0.1:9122"},
		{"log_format", "json"},
		{"node_name", ""},
		{"store.backend", "bolt"},
		{"store.etcd.endpoints", []string{}},
		{"store.etcd.prefix", "/gatekeeper/"},
		{"store.etcd.dial_timeout", 5 * time.Second},
		{"store.etcd.request_timeout", 2 * time.Second},
		{"store.etcd.tls_ca", ""},
		{"store.etcd.tls_cert", ""},
		{"store.etcd.tls_key", ""},
		{"store.etcd.username", ""},
		{"store.etcd.password_file", ""},
		{"login_grace_time", 60 * time.Second},
		{"max_auth_tries", 6},
		{"allow_uppercase_usernames", false},
		{"max_startups", 100},
		{"preauth.handshake_timeout", 10 * time.Second},
		{"preauth.per_address", 10},
		{"preauth.per_network", 32},
		{"preauth.drop_start", 0},
		{"preauth.trusted_reserve", 20},
		{"max_channels", 256},
		{"failure_delay", 3 * time.Second},
		{"session.idle_timeout", time.Duration(0)},
		{"session.max_duration", time.Duration(0)},
		{"session.max_per_user", 0},
		{"audit.retention", 400 * 24 * time.Hour},
		{"relay.window", "16MiB"},
		{"relay.window_total", "512MiB"},
		{"keys.enabled", false},
		{"keys.lander_ca_file", "/var/lib/gatekeeper/lander_user_ca"},
		{"keys.cert_validity", 2 * time.Minute},
		{"keys.remember", time.Duration(0)},
		{"keys.automation_max_lifetime", 720 * time.Hour},
	}
}

func (s setting) isList() bool {
	_, ok := s.def.([]string)
	return ok
}

// flagName is the command-line flag for a key: "upstream.address" → "upstream-address".
func flagName(key string) string {
	return strings.NewReplacer(".", "-", "_", "-").Replace(key)
}

// envName is the environment variable for a key: "upstream.address" → "GATEKEEPER_UPSTREAM_ADDRESS".
func envName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// RegisterFlags defines the flags `gatekeeper serve` offers on fs. Load binds every flag
// whose name is a key with "." and "_" replaced by "-"; a flag overrides file and
// environment only when it was given on the command line.
func RegisterFlags(fs *pflag.FlagSet) {
	def := make(map[string]string)
	for _, s := range settings() {
		def[s.key] = fmt.Sprint(s.def)
	}
	fs.String(flagName("listen"), def["listen"], "SSH front door address, host:port")
	fs.String(flagName("upstream.address"), def["upstream.address"], "the lander's sshd, host:port")
	fs.String(flagName("log_format"), def["log_format"], "log format: json or text")
	fs.String(flagName("db"), def["db"], "path of the state database")
}

// Load reads the configuration and validates it. The file is file if given, else
// $GATEKEEPER_CONFIG if set, else DefaultFile if it exists; without one, defaults apply.
// GATEKEEPER_* environment variables override the file and flags set on flags (may be nil)
// override both. All validation problems are reported together.
func Load(file string, flags *pflag.FlagSet) (*Config, error) {
	c, err := read(file, flags, DefaultFile)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		source := c.source
		if source == noFile {
			// The defaults alone rarely validate (known_hosts): say why no file was read.
			source = fmt.Sprintf("%s: %s does not exist, and neither --config nor $%s names one", noFile, DefaultFile, EnvConfigFile)
		}
		return nil, fmt.Errorf("invalid configuration (%s):\n%w", source, err)
	}
	return c, nil
}

// noFile is Config.source when no config file was read.
const noFile = "no config file"

// read is Load without validation; fallback stands in for DefaultFile so tests do not depend
// on the machine's /etc.
func read(file string, flags *pflag.FlagSet, fallback string) (*Config, error) {
	file = resolveFile(file, fallback)

	v := viper.New()
	for _, s := range settings() {
		v.SetDefault(s.key, s.def)
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()

	source := noFile
	if file != "" {
		source = file
		m, err := readFile(file)
		if err != nil {
			return nil, err
		}
		if err := v.MergeConfigMap(m); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
	}
	if flags != nil {
		for _, s := range settings() {
			if f := flags.Lookup(flagName(s.key)); f != nil {
				if err := v.BindPFlag(s.key, f); err != nil {
					return nil, fmt.Errorf("flag --%s: %w", f.Name, err)
				}
			}
		}
	}

	origins := valueOrigins(flags)

	// Check types first: viper's weak decoding would otherwise turn `window: 30` into 30ns and
	// report other mismatches without the value or in Go type names.
	var errs []error
	for _, s := range settings() {
		if err := checkType(s, v.Get(s.key)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", keyFrom(s.key, origins), err))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid configuration (%s):\n%w", source, errors.Join(errs...))
	}

	var c Config
	if err := v.Unmarshal(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	// Lists from the environment arrive comma-separated: "10.0.0.0/8, fd00::/8," is two entries.
	c.HostKeyFiles = cleanList(c.HostKeyFiles)
	c.TrustedNetworks = cleanList(c.TrustedNetworks)
	c.ProxyProtocolFrom = cleanList(c.ProxyProtocolFrom)
	c.Enroll.AllowedNetworks = cleanList(c.Enroll.AllowedNetworks)
	c.Admin.Groups = cleanList(c.Admin.Groups)
	c.source = source
	c.origins = origins
	return &c, nil
}

// valueOrigins finds the keys whose value comes from a flag or an environment variable rather
// than the file or a default. Viper cannot say where a value came from, so this repeats its
// precedence: a bound flag wins when it was given on the command line (Changed), then a
// variable when it is set and not empty (viper ignores empty ones without AllowEmptyEnv).
func valueOrigins(flags *pflag.FlagSet) map[string]string {
	origins := make(map[string]string)
	for _, s := range settings() {
		if flags != nil {
			if f := flags.Lookup(flagName(s.key)); f != nil && f.Changed {
				origins[s.key] = "--" + f.Name
				continue
			}
		}
		if os.Getenv(envName(s.key)) != "" {
			origins[s.key] = envName(s.key)
		}
	}
	return origins
}

// keyFrom returns key as an error message names it: "totp.skew (from GATEKEEPER_TOTP_SKEW)"
// when its value came from the environment or a flag, so that the admin does not search the
// file for it; key alone otherwise. A list entry's key ("trusted_networks[1]") is looked up
// by its list's key.
func keyFrom(key string, origins map[string]string) string {
	base, _, _ := strings.Cut(key, "[")
	if from := origins[base]; from != "" {
		return fmt.Sprintf("%s (from %s)", key, from)
	}
	return key
}

// checkType reports whether val, from whichever source won, fits the setting's type.
func checkType(s setting, val any) error {
	switch s.def.(type) {
	case []string:
		switch val := val.(type) {
		case string, []string:
			return nil
		case []any:
			for i, e := range val {
				if !isScalar(e) {
					return fmt.Errorf("entry %d: expected a single value", i)
				}
			}
			return nil
		}
		return fmt.Errorf("expected a list")
	case string:
		if !isScalar(val) {
			return fmt.Errorf("expected a single value")
		}
	case bool:
		switch val := val.(type) {
		case bool:
		case string:
			if _, err := strconv.ParseBool(val); err != nil {
				return fmt.Errorf("%q is not true or false", val)
			}
		default:
			return fmt.Errorf("%v is not true or false", val)
		}
	case int:
		switch val := val.(type) {
		case int, int64, uint64:
		case float64:
			if val != float64(int64(val)) {
				return fmt.Errorf("%v is not a whole number", val)
			}
		case string:
			if _, err := strconv.Atoi(strings.TrimSpace(val)); err != nil {
				return fmt.Errorf("%q is not a whole number", val)
			}
		default:
			return fmt.Errorf("%v is not a whole number", val)
		}
	case time.Duration:
		switch val := val.(type) {
		case time.Duration:
		case string:
			if _, err := time.ParseDuration(strings.TrimSpace(val)); err != nil {
				return fmt.Errorf("%q is not a duration (like \"30s\", \"5m\", \"1h30m\")", val)
			}
		case int, int64, uint64, float64:
			if fmt.Sprint(val) != "0" {
				return fmt.Errorf("%v has no unit (write e.g. \"%vs\" for seconds)", val, val)
			}
		default:
			return fmt.Errorf("%v is not a duration (like \"30s\", \"5m\", \"1h30m\")", val)
		}
	}
	return nil
}

func isScalar(v any) bool {
	switch v.(type) {
	case string, bool, int, int64, uint64, float64:
		return true
	}
	return false
}

func resolveFile(file, fallback string) string {
	if file != "" {
		return file
	}
	if env := os.Getenv(EnvConfigFile); env != "" {
		return env
	}
	if _, err := os.Stat(fallback); err == nil || !errors.Is(err, fs.ErrNotExist) {
		// Present, or present but unreadable: reading it reports the real problem.
		return fallback
	}
	return ""
}

// cleanList trims entries and drops empty ones, so trailing commas and spaces in environment
// lists do not become bogus entries.
func cleanList(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func readFile(name string) (map[string]any, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes, not a gatekeeper config", name, maxFileSize)
	}
	return parseYAML(name, data)
}

// parseYAML parses a config file strictly: one document, a mapping at the top, only known keys,
// sections as mappings and lists as sequences (or comma-separated strings). Null values are
// dropped so that an empty `enroll:` means "defaults" rather than zeroing the section in viper.
func parseYAML(name string, data []byte) (m map[string]any, err error) {
	defer func() {
		// The YAML parser is third-party code fed with whatever the file holds; a bug there must
		// surface as a config error, never take the daemon down.
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("%s: cannot parse YAML: %v", name, r)
		}
	}()

	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return map[string]any{}, nil
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return nil, fmt.Errorf("%s:%d: a second YAML document; the config must be a single document", name, next.Line)
	}

	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return map[string]any{}, nil
		}
		root = root.Content[0]
	}
	if isNull(root) {
		return map[string]any{}, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: expected a mapping of settings (key: value) at the top level", name, root.Line)
	}
	if err := checkKeys(name, root); err != nil {
		return nil, err
	}
	if err := root.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	dropNulls(m)
	return m, nil
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	// Aliases of aliases are bounded by the document; the loop ends at a non-alias node.
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// checkKeys reports every unknown, duplicate or mistyped key of the file at once, with its line.
func checkKeys(name string, root *yaml.Node) error {
	kinds := make(map[string]bool) // key → is a list
	sections := make(map[string]bool)
	for _, s := range settings() {
		kinds[s.key] = s.isList()
		// Every prefix of a key is a section: "store" and "store.etcd" of "store.etcd.prefix".
		for i := strings.Index(s.key, "."); i >= 0; i = nextDot(s.key, i) {
			sections[s.key[:i]] = true
		}
	}

	var errs []error
	var walk func(prefix string, m *yaml.Node)
	walk = func(prefix string, m *yaml.Node) {
		seen := make(map[string]int)
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, val := m.Content[i], resolveAlias(m.Content[i+1])
			key := prefix + k.Value
			if k.Kind != yaml.ScalarNode {
				errs = append(errs, fmt.Errorf("%s:%d: a key must be a plain name", name, k.Line))
				continue
			}
			if line, dup := seen[k.Value]; dup {
				errs = append(errs, fmt.Errorf("%s:%d: %s: set twice (first at line %d)", name, k.Line, key, line))
				continue
			}
			seen[k.Value] = k.Line
			isList, known := kinds[key]
			switch {
			case sections[key]:
				if !isNull(val) && val.Kind != yaml.MappingNode {
					errs = append(errs, fmt.Errorf("%s:%d: %s: expected a mapping of settings", name, k.Line, key))
					continue
				}
				if val.Kind == yaml.MappingNode {
					walk(key+".", val)
				}
			case !known:
				msg := fmt.Sprintf("%s:%d: unknown key %q", name, k.Line, key)
				if s := suggest(key, kinds, sections); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				}
				errs = append(errs, errors.New(msg))
			case isList:
				switch val.Kind {
				case yaml.ScalarNode: // comma-separated, like the environment
				case yaml.SequenceNode:
					for j, e := range val.Content {
						if resolveAlias(e).Kind != yaml.ScalarNode {
							errs = append(errs, fmt.Errorf("%s:%d: %s[%d]: expected a single value", name, e.Line, key, j))
						}
					}
				default:
					errs = append(errs, fmt.Errorf("%s:%d: %s: expected a list", name, k.Line, key))
				}
			default:
				if val.Kind != yaml.ScalarNode {
					errs = append(errs, fmt.Errorf("%s:%d: %s: expected a single value, not a list or mapping", name, k.Line, key))
				}
			}
		}
	}
	walk("", root)
	return errors.Join(errs...)
}

// nextDot is the index of the next "." in key after i, or -1.
func nextDot(key string, i int) int {
	j := strings.Index(key[i+1:], ".")
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// suggest returns the known key closest to a misspelt one, or "" when none is close.
func suggest(key string, kinds, sections map[string]bool) string {
	best, bestDist := "", 4
	consider := func(cand string) {
		if d := editDistance(key, cand); d < bestDist || (d == bestDist && cand < best) {
			best, bestDist = cand, d
		}
	}
	for k := range kinds {
		consider(k)
	}
	for k := range sections {
		consider(k)
	}
	if bestDist > len(key)/2 {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance, small strings only.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func dropNulls(m map[string]any) {
	for k, v := range m {
		switch v := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			dropNulls(v)
		}
	}
}

// IsTrusted reports whether a login from addr skips the verification code. IPv4-mapped IPv6
// addresses (::ffff:10.1.2.3, as seen on a dual-stack listener) count as their IPv4 address.
func (c *Config) IsTrusted(addr netip.Addr) bool {
	return contains(c.Trusted, addr)
}

// IsEnrollAllowed reports whether device linking is allowed from addr without a ticket.
func (c *Config) IsEnrollAllowed(addr netip.Addr) bool {
	return contains(c.Enroll.Allowed, addr)
}

// AcceptsProxyFrom reports whether a PROXY protocol header from the direct peer addr is to be
// honoured: only with proxy_protocol on and addr inside proxy_protocol_from, or anyone could
// claim a trusted source address.
func (c *Config) AcceptsProxyFrom(addr netip.Addr) bool {
	return c.ProxyProtocol && contains(c.ProxyFrom, addr)
}

func contains(nets []netip.Prefix, addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	addr = addr.Unmap().WithZone("")
	return slices.ContainsFunc(nets, func(p netip.Prefix) bool { return p.Contains(addr) })
}

// effective mirrors Config with YAML tags and readable durations; its field order is the order
// of DESIGN.md, extras last.
type effective struct {
	Listen        string   `yaml:"listen"`
	HostKeyFiles  []string `yaml:"host_key_files"`
	DB            string   `yaml:"db"`
	SecretKeyFile string   `yaml:"secret_key_file"`
	Upstream      struct {
		Address    string `yaml:"address"`
		KnownHosts string `yaml:"known_hosts"`
	} `yaml:"upstream"`
	FirstFactor       string   `yaml:"first_factor"`
	TrustedNetworks   []string `yaml:"trusted_networks"`
	ProxyProtocol     bool     `yaml:"proxy_protocol"`
	ProxyProtocolFrom []string `yaml:"proxy_protocol_from"`
	TOTP              struct {
		Issuer string `yaml:"issuer"`
		Skew   int    `yaml:"skew"`
	} `yaml:"totp"`
	RateLimit struct {
		Failures        int    `yaml:"failures"`
		Window          string `yaml:"window"`
		Lockout         string `yaml:"lockout"`
		MaxLockout      string `yaml:"max_lockout"`
		NetworkFailures int    `yaml:"network_failures"`
		TrustedFailures int    `yaml:"trusted_failures"`
	} `yaml:"rate_limit"`
	Enroll struct {
		PortalListen    string   `yaml:"portal_listen"`
		SSHListen       string   `yaml:"ssh_listen"`
		AllowedNetworks []string `yaml:"allowed_networks"`
		ConfirmWithin   string   `yaml:"confirm_within"`
		TLSCert         string   `yaml:"tls_cert"`
		TLSKey          string   `yaml:"tls_key"`
	} `yaml:"enroll"`
	Admin struct {
		Socket string   `yaml:"socket"`
		Groups []string `yaml:"groups"`
	} `yaml:"admin"`
	MetricsListen string `yaml:"metrics_listen"`
	LogFormat     string `yaml:"log_format"`
	NodeName      string `yaml:"node_name"`
	Store         struct {
		Backend string `yaml:"backend"`
		Etcd    struct {
			Endpoints      []string `yaml:"endpoints"`
			Prefix         string   `yaml:"prefix"`
			DialTimeout    string   `yaml:"dial_timeout"`
			RequestTimeout string   `yaml:"request_timeout"`
			TLSCA          string   `yaml:"tls_ca"`
			TLSCert        string   `yaml:"tls_cert"`
			TLSKey         string   `yaml:"tls_key"`
			Username       string   `yaml:"username"`
			PasswordFile   string   `yaml:"password_file"`
		} `yaml:"etcd"`
	} `yaml:"store"`
	LoginGraceTime          string `yaml:"login_grace_time"`
	MaxAuthTries            int    `yaml:"max_auth_tries"`
	AllowUppercaseUsernames bool   `yaml:"allow_uppercase_usernames"`
	MaxStartups             int    `yaml:"max_startups"`
	Preauth                 struct {
		HandshakeTimeout string `yaml:"handshake_timeout"`
		PerAddress       int    `yaml:"per_address"`
		PerNetwork       int    `yaml:"per_network"`
		DropStart        int    `yaml:"drop_start"`
		TrustedReserve   int    `yaml:"trusted_reserve"`
	} `yaml:"preauth"`
	MaxChannels  int    `yaml:"max_channels"`
	FailureDelay string `yaml:"failure_delay"`
	Session      struct {
		IdleTimeout string `yaml:"idle_timeout"`
		MaxDuration string `yaml:"max_duration"`
		MaxPerUser  int    `yaml:"max_per_user"`
	} `yaml:"session"`
	Audit struct {
		Retention string `yaml:"retention"`
	} `yaml:"audit"`
	Relay struct {
		Window      string `yaml:"window"`
		WindowTotal string `yaml:"window_total"`
	} `yaml:"relay"`
	Keys struct {
		Enabled               bool   `yaml:"enabled"`
		LanderCAFile          string `yaml:"lander_ca_file"`
		CertValidity          string `yaml:"cert_validity"`
		Remember              string `yaml:"remember"`
		AutomationMaxLifetime string `yaml:"automation_max_lifetime"`
	} `yaml:"keys"`
}

// Effective returns the settings in effect as YAML, in a fixed order, for
// `gatekeeper config check`. After Validate, networks appear in canonical form and
// enroll.allowed_networks shows what linking really allows (trusted_networks when unset).
func (c *Config) Effective() string {
	var e effective
	e.Listen = c.Listen
	e.HostKeyFiles = nonNil(c.HostKeyFiles)
	e.DB = c.DB
	e.SecretKeyFile = c.SecretKeyFile
	e.Upstream.Address = c.Upstream.Address
	e.Upstream.KnownHosts = c.Upstream.KnownHosts
	e.FirstFactor = c.FirstFactor
	e.TrustedNetworks = networks(c.TrustedNetworks, c.Trusted)
	e.ProxyProtocol = c.ProxyProtocol
	e.ProxyProtocolFrom = networks(c.ProxyProtocolFrom, c.ProxyFrom)
	e.TOTP.Issuer = c.TOTP.Issuer
	e.TOTP.Skew = c.TOTP.Skew
	e.RateLimit.Failures = c.RateLimit.Failures
	e.RateLimit.Window = formatDuration(c.RateLimit.Window)
	e.RateLimit.Lockout = formatDuration(c.RateLimit.Lockout)
	e.RateLimit.MaxLockout = formatDuration(c.RateLimit.MaxLockout)
	e.RateLimit.NetworkFailures = c.RateLimit.NetworkFailures
	e.RateLimit.TrustedFailures = c.RateLimit.TrustedFailures
	e.Enroll.PortalListen = c.Enroll.PortalListen
	e.Enroll.SSHListen = c.Enroll.SSHListen
	e.Enroll.AllowedNetworks = networks(c.Enroll.AllowedNetworks, c.Enroll.Allowed)
	if len(c.Enroll.AllowedNetworks) == 0 && len(c.Enroll.Allowed) > 0 {
		e.Enroll.AllowedNetworks = networks(nil, c.Enroll.Allowed)
	}
	e.Enroll.ConfirmWithin = formatDuration(c.Enroll.ConfirmWithin)
	e.Enroll.TLSCert = c.Enroll.TLSCert
	e.Enroll.TLSKey = c.Enroll.TLSKey
	e.Admin.Socket = c.Admin.Socket
	e.Admin.Groups = nonNil(c.Admin.Groups)
	e.MetricsListen = c.MetricsListen
	e.LogFormat = c.LogFormat
	e.NodeName = c.NodeName
	e.Store.Backend = c.Store.Backend
	e.Store.Etcd.Endpoints = nonNil(c.Store.Etcd.Endpoints)
	e.Store.Etcd.Prefix = c.Store.Etcd.Prefix
	e.Store.Etcd.DialTimeout = formatDuration(c.Store.Etcd.DialTimeout)
	e.Store.Etcd.RequestTimeout = formatDuration(c.Store.Etcd.RequestTimeout)
	e.Store.Etcd.TLSCA = c.Store.Etcd.TLSCA
	e.Store.Etcd.TLSCert = c.Store.Etcd.TLSCert
	e.Store.Etcd.TLSKey = c.Store.Etcd.TLSKey
	e.Store.Etcd.Username = c.Store.Etcd.Username
	e.Store.Etcd.PasswordFile = c.Store.Etcd.PasswordFile
	e.LoginGraceTime = formatDuration(c.LoginGraceTime)
	e.MaxAuthTries = c.MaxAuthTries
	e.AllowUppercaseUsernames = c.AllowUppercaseUsernames
	e.MaxStartups = c.MaxStartups
	e.Preauth.HandshakeTimeout = formatDuration(c.Preauth.HandshakeTimeout)
	e.Preauth.PerAddress = c.Preauth.PerAddress
	e.Preauth.PerNetwork = c.Preauth.PerNetwork
	e.Preauth.DropStart = c.Preauth.DropStart
	e.Preauth.TrustedReserve = c.Preauth.TrustedReserve
	e.MaxChannels = c.MaxChannels
	e.FailureDelay = formatDuration(c.FailureDelay)
	e.Session.IdleTimeout = formatDuration(c.Session.IdleTimeout)
	e.Session.MaxDuration = formatDuration(c.Session.MaxDuration)
	e.Session.MaxPerUser = c.Session.MaxPerUser
	e.Audit.Retention = formatDuration(c.Audit.Retention)
	e.Relay.Window = formatSize(c.Relay.WindowBytes, c.Relay.Window)
	e.Relay.WindowTotal = formatSize(c.Relay.WindowTotalBytes, c.Relay.WindowTotal)
	e.Keys.Enabled = c.Keys.Enabled
	e.Keys.LanderCAFile = c.Keys.LanderCAFile
	e.Keys.CertValidity = formatDuration(c.Keys.CertValidity)
	e.Keys.Remember = formatDuration(c.Keys.Remember)
	e.Keys.AutomationMaxLifetime = formatDuration(c.Keys.AutomationMaxLifetime)

	var buf bytes.Buffer
	if c.source != "" {
		fmt.Fprintf(&buf, "# effective gatekeeper configuration (%s, environment, flags)\n", c.source)
	}
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&e); err != nil {
		// Encoding a struct of strings, ints and bools cannot fail; say so rather than hide it.
		return fmt.Sprintf("# cannot encode configuration: %v\n", err)
	}
	_ = enc.Close()
	return buf.String()
}

// networks prints parsed prefixes when Validate produced them one for one, the raw entries
// otherwise.
func networks(raw []string, parsed []netip.Prefix) []string {
	if len(parsed) == 0 || (raw != nil && len(parsed) != len(raw)) {
		return nonNil(raw)
	}
	out := make([]string, len(parsed))
	for i, p := range parsed {
		out[i] = p.String()
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// formatSize prints a size Validate parsed in the largest binary unit that
// divides it, or raw when it was not parsed.
func formatSize(n int64, raw string) string {
	if n <= 0 {
		return raw
	}
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.suffix)
		}
	}
	return strconv.FormatInt(n, 10)
}

// formatDuration prints "5m" rather than Go's "5m0s", so the output reads like the example.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
