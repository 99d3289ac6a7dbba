package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// cleanEnv hides any GATEKEEPER_* variables of the machine running the tests: viper ignores
// empty variables, so setting them to "" is as good as unsetting them.
func cleanEnv(t testing.TB) {
	t.Helper()
	for _, s := range settings() {
		t.Setenv(envName(s.key), "")
	}
	t.Setenv(EnvConfigFile, "")
}

func writeFile(t testing.TB, path, data string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// knownHostsLine returns a known_hosts entry for a fresh ed25519 key.
func knownHostsLine(t testing.TB) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return knownhosts.Line([]string{"127.0.0.1:22"}, sp) + "\n"
}

// privateKeyPEM returns an OpenSSH private key, encrypted when passphrase is not empty.
func privateKeyPEM(t testing.TB, passphrase string) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var block *pem.Block
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "test")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "test", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(block))
}

// validYAML returns a config file whose paths all live under dir and pass validation.
func validYAML(t testing.TB, dir string) string {
	t.Helper()
	kh := writeFile(t, filepath.Join(dir, "etc", "known_hosts"), "# the lander\n"+knownHostsLine(t))
	return `listen: "127.0.0.1:2222"
host_key_files: ["` + filepath.Join(dir, "lib", "ssh_host_ed25519_key") + `"]
db: "` + filepath.Join(dir, "lib", "gatekeeper.db") + `"
secret_key_file: "` + filepath.Join(dir, "lib", "secret.key") + `"
upstream:
  address: "127.0.0.1:22"
  known_hosts: "` + kh + `"
admin:
  socket: "` + filepath.Join(dir, "run", "admin.sock") + `"
`
}

// validConfig loads validYAML without validating, for tests that break one setting.
func validConfig(t *testing.T) *Config {
	t.Helper()
	cleanEnv(t)
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "gatekeeper.yaml"), validYAML(t, dir))
	c, err := read(file, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("base config invalid: %v", err)
	}
	return c
}

func TestDefaults(t *testing.T) {
	cleanEnv(t)
	c, err := read("", nil, filepath.Join(t.TempDir(), "absent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen:            "0.0.0.0:22",
		HostKeyFiles:      []string{"/var/lib/gatekeeper/ssh_host_ed25519_key"},
		DB:                "/var/lib/gatekeeper/gatekeeper.db",
		SecretKeyFile:     "/var/lib/gatekeeper/secret.key",
		Upstream:          Upstream{Address: "127.0.0.1:22", KnownHosts: "/etc/gatekeeper/known_hosts"},
		FirstFactor:       "upstream",
		TrustedNetworks:   []string{},
		ProxyProtocol:     false,
		ProxyProtocolFrom: []string{},
		TOTP:              TOTP{Issuer: "gatekeeper", Skew: 1},
		RateLimit: RateLimit{Failures: 3, Window: 30 * time.Second, Lockout: 5 * time.Minute,
			MaxLockout: time.Hour, NetworkFailures: 10, TrustedFailures: 10},
		Enroll: Enroll{
			PortalListen:    "127.0.0.1:8080",
			SSHListen:       "127.0.0.1:2223",
			AllowedNetworks: []string{},
			ConfirmWithin:   10 * time.Minute,
		},
		Admin:         Admin{Socket: "/run/gatekeeper/admin.sock", Groups: []string{"root", "gatekeeper"}},
		MetricsListen: "127.0.0.1:9122",
		LogFormat:     "json",
		Store: Store{Backend: "bolt", Etcd: Etcd{Endpoints: []string{}, Prefix: "/gatekeeper/",
			DialTimeout: 5 * time.Second, RequestTimeout: 2 * time.Second}},
		LoginGraceTime: 60 * time.Second,
		MaxAuthTries:   6,
		MaxStartups:    100,
		Preauth: Preauth{HandshakeTimeout: 10 * time.Second, PerAddress: 10, PerNetwork: 32,
			DropStart: 0, TrustedReserve: 20},
		MaxChannels:  256,
		FailureDelay: 3 * time.Second,
		Audit:        Audit{Retention: 400 * 24 * time.Hour},
		Relay:        Relay{Window: "16MiB", WindowTotal: "512MiB"},
		Keys: Keys{LanderCAFile: "/var/lib/gatekeeper/lander_user_ca", CertValidity: 2 * time.Minute,
			AutomationMaxLifetime: 720 * time.Hour},
		source:  "no config file",
		origins: map[string]string{},
	}
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", *c, want)
	}
}

// TestSettingsCoverStruct keeps the key table and the struct in step: a field without a
// default would be invisible to GATEKEEPER_* variables.
func TestSettingsCoverStruct(t *testing.T) {
	var tags []string
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for f := range typ.Fields() {
			tag := f.Tag.Get("mapstructure")
			if tag == "" || tag == "-" {
				continue
			}
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Duration]() {
				walk(prefix+tag+".", f.Type)
				continue
			}
			tags = append(tags, prefix+tag)
		}
	}
	walk("", reflect.TypeFor[Config]())
	var keys []string
	for _, s := range settings() {
		keys = append(keys, s.key)
	}
	slices.Sort(tags)
	slices.Sort(keys)
	if !slices.Equal(tags, keys) {
		t.Errorf("struct keys %v\nsettings    %v", tags, keys)
	}
}

func TestYAMLOverrides(t *testing.T) {
	cleanEnv(t)
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "g.yaml"), validYAML(t, dir)+`
trusted_networks: ["10.0.0.0/8", "192.168.1.7", "fd00::/8"]
proxy_protocol: true
proxy_protocol_from: ["10.9.9.9"]
totp: {issuer: "Example HPC", skew: 2}
rate_limit: {failures: 5, window: "1m", lockout: "1h30m"}
enroll:
  portal_listen: ""
  confirm_within: "90s"
metrics_listen: "127.0.0.1:0"
log_format: text
login_grace_time: 2m
max_auth_tries: 3
max_startups: 10
failure_delay: 500ms
`)
	c, err := Load(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, "127.0.0.1:2222"},
		{"trusted_networks", c.TrustedNetworks, []string{"10.0.0.0/8", "192.168.1.7", "fd00::/8"}},
		{"Trusted", c.Trusted, []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"), netip.MustParsePrefix("fd00::/8")}},
		{"Enroll.Allowed defaults to Trusted", c.Enroll.Allowed, c.Trusted},
		{"proxy_protocol", c.ProxyProtocol, true},
		{"ProxyFrom", c.ProxyFrom, []netip.Prefix{netip.MustParsePrefix("10.9.9.9/32")}},
		{"totp.issuer", c.TOTP.Issuer, "Example HPC"},
		{"totp.skew", c.TOTP.Skew, 2},
		{"rate_limit (max_lockout raised to lockout)", c.RateLimit, RateLimit{Failures: 5, Window: time.Minute,
			Lockout: 90 * time.Minute, MaxLockout: 90 * time.Minute, NetworkFailures: 10, TrustedFailures: 10}},
		{"enroll.portal_listen", c.Enroll.PortalListen, ""},
		{"enroll.ssh_listen (default kept beside a set key)", c.Enroll.SSHListen, "127.0.0.1:2223"},
		{"enroll.confirm_within", c.Enroll.ConfirmWithin, 90 * time.Second},
		{"metrics_listen", c.MetricsListen, "127.0.0.1:0"},
		{"log_format", c.LogFormat, "text"},
		{"login_grace_time", c.LoginGraceTime, 2 * time.Minute},
		{"max_auth_tries", c.MaxAuthTries, 3},
		{"max_startups", c.MaxStartups, 10},
		{"failure_delay", c.FailureDelay, 500 * time.Millisecond},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	// A changed Trusted must not change Allowed behind the caller's back.
	if len(c.Trusted) > 0 && &c.Trusted[0] == &c.Enroll.Allowed[0] {
		t.Error("Enroll.Allowed shares its array with Trusted")
	}
}

func TestNullSectionKeepsDefaults(t *testing.T) {
	cleanEnv(t)
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "g.yaml"), validYAML(t, dir)+"enroll:\ntotp: ~\nlog_format:\n")
	c, err := Load(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Enroll.PortalListen != "127.0.0.1:8080" || c.TOTP.Issuer != "gatekeeper" || c.LogFormat != "json" {
		t.Errorf("empty sections lost their defaults: %+v %+v %q", c.Enroll, c.TOTP, c.LogFormat)
	}
}

func TestEnvOverrides(t *testing.T) {
	tests := []struct {
		env, value string
		got        func(*Config) any
		want       any
	}{
		{"GATEKEEPER_LISTEN", "127.0.0.1:2022", func(c *Config) any { return c.Listen }, "127.0.0.1:2022"},
		{"GATEKEEPER_UPSTREAM_ADDRESS", "10.1.1.1:2222", func(c *Config) any { return c.Upstream.Address }, "10.1.1.1:2222"},
		{"GATEKEEPER_RATE_LIMIT_FAILURES", "7", func(c *Config) any { return c.RateLimit.Failures }, 7},
		{"GATEKEEPER_RATE_LIMIT_WINDOW", "2m", func(c *Config) any { return c.RateLimit.Window }, 2 * time.Minute},
		{"GATEKEEPER_TRUSTED_NETWORKS", "10.0.0.0/8, fd00::/8,", func(c *Config) any { return c.Trusted },
			[]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}},
		{"GATEKEEPER_ENROLL_ALLOWED_NETWORKS", "192.168.0.0/16", func(c *Config) any { return c.Enroll.Allowed },
			[]netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}},
		{"GATEKEEPER_PROXY_PROTOCOL", "true", func(c *Config) any { return c.ProxyProtocol }, true},
		{"GATEKEEPER_TOTP_ISSUER", "Example HPC", func(c *Config) any { return c.TOTP.Issuer }, "Example HPC"},
		{"GATEKEEPER_ENROLL_CONFIRM_WITHIN", "15m", func(c *Config) any { return c.Enroll.ConfirmWithin }, 15 * time.Minute},
		{"GATEKEEPER_LOG_FORMAT", "text", func(c *Config) any { return c.LogFormat }, "text"},
		{"GATEKEEPER_MAX_STARTUPS", "5", func(c *Config) any { return c.MaxStartups }, 5},
		{"GATEKEEPER_FAILURE_DELAY", "0s", func(c *Config) any { return c.FailureDelay }, time.Duration(0)},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			cleanEnv(t)
			dir := t.TempDir()
			file := writeFile(t, filepath.Join(dir, "g.yaml"), validYAML(t, dir)+
				"proxy_protocol_from: [10.0.0.1]\nrate_limit: {failures: 4, window: 10s}\n")
			t.Setenv(tt.env, tt.value)
			c, err := Load(file, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.got(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s=%q: got %v, want %v", tt.env, tt.value, got, tt.want)
			}
		})
	}
}

// TestEnvOnly loads without any file, everything needed coming from the environment, the way
// a container would run the daemon.
func TestEnvOnly(t *testing.T) {
	cleanEnv(t)
	dir := t.TempDir()
	t.Setenv("GATEKEEPER_UPSTREAM_KNOWN_HOSTS", writeFile(t, filepath.Join(dir, "kh"), knownHostsLine(t)))
	t.Setenv("GATEKEEPER_HOST_KEY_FILES", filepath.Join(dir, "k1")+","+filepath.Join(dir, "k2"))
	c, err := read("", nil, filepath.Join(dir, "absent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if want := []string{filepath.Join(dir, "k1"), filepath.Join(dir, "k2")}; !slices.Equal(c.HostKeyFiles, want) {
		t.Errorf("host_key_files = %v, want %v", c.HostKeyFiles, want)
	}
}

func TestFileResolution(t *testing.T) {
	cleanEnv(t)
	dir := t.TempDir()
	envFile := writeFile(t, filepath.Join(dir, "env.yaml"), "listen: \"127.0.0.1:1\"\n")
	fallback := writeFile(t, filepath.Join(dir, "fallback.yaml"), "listen: \"127.0.0.1:2\"\n")
	explicit := writeFile(t, filepath.Join(dir, "explicit.yaml"), "listen: \"127.0.0.1:3\"\n")

	c, err := read("", nil, fallback)
	if err != nil || c.Listen != "127.0.0.1:2" {
		t.Errorf("fallback file: listen %q, err %v", c.Listen, err)
	}
	t.Setenv(EnvConfigFile, envFile)
	c, err = read("", nil, fallback)
	if err != nil || c.Listen != "127.0.0.1:1" {
		t.Errorf("$GATEKEEPER_CONFIG: listen %q, err %v", c.Listen, err)
	}
	c, err = read(explicit, nil, fallback)
	if err != nil || c.Listen != "127.0.0.1:3" {
		t.Errorf("explicit file: listen %q, err %v", c.Listen, err)
	}
	missing := filepath.Join(dir, "missing.yaml")
	if _, err := Load(missing, nil); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing explicit file: err %v, want one naming %s", err, missing)
	}
}

func TestFlagOverrides(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantListen string
		wantUp     string
		wantLog    string
	}{
		{"no flags: file and defaults", nil, "127.0.0.1:2222", "127.0.0.1:22", "json"},
		{"set flags win", []string{"--listen", "127.0.0.1:4022", "--upstream-address=10.0.0.5:22", "--log-format", "text"},
			"127.0.0.1:4022", "10.0.0.5:22", "text"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanEnv(t)
			dir := t.TempDir()
			file := writeFile(t, filepath.Join(dir, "g.yaml"), validYAML(t, dir))
			t.Setenv("GATEKEEPER_UPSTREAM_ADDRESS", "10.0.0.4:22") // a set flag beats env too
			if tt.args == nil {
				tt.wantUp = "10.0.0.4:22"
			}
			fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			RegisterFlags(fs)
			fs.Bool("verbose", false, "a flag that is no config key")
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			c, err := Load(file, fs)
			if err != nil {
				t.Fatal(err)
			}
			if c.Listen != tt.wantListen || c.Upstream.Address != tt.wantUp || c.LogFormat != tt.wantLog {
				t.Errorf("listen %q upstream %q log %q; want %q %q %q",
					c.Listen, c.Upstream.Address, c.LogFormat, tt.wantListen, tt.wantUp, tt.wantLog)
			}
		})
	}
}

// TestFlagDefaultDoesNotOverride: a flag's own default must not beat the file, even when it
// differs from the config default.
func TestFlagDefaultDoesNotOverride(t *testing.T) {
	cleanEnv(t)
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "g.yaml"), validYAML(t, dir))
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.String("log-format", "text", "")
	fs.String("listen", "0.0.0.0:9999", "")
	fs.Int("max-startups", 1, "")
	if err := fs.Parse([]string{"--max-startups", "9"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(file, fs)
	if err != nil {
		t.Fatal(err)
	}
	if c.LogFormat != "json" || c.Listen != "127.0.0.1:2222" || c.MaxStartups != 9 {
		t.Errorf("log_format %q listen %q max_startups %d; want json 127.0.0.1:2222 9", c.LogFormat, c.Listen, c.MaxStartups)
	}
}

func TestRegisterFlags(t *testing.T) {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	RegisterFlags(fs)
	for _, name := range []string{"listen", "upstream-address", "log-format", "db"} {
		if fs.Lookup(name) == nil {
			t.Errorf("flag --%s not registered", name)
		}
	}
}

func TestTypeErrors(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"rate_limit: {window: 30}\n", `rate_limit.window: 30 has no unit`},
		{"rate_limit: {window: soon}\n", `rate_limit.window: "soon" is not a duration`},
		{"totp: {skew: many}\n", `totp.skew: "many" is not a whole number`},
		{"totp: {skew: 1.5}\n", `totp.skew: 1.5 is not a whole number`},
		{"proxy_protocol: maybe\n", `proxy_protocol: "maybe" is not true or false`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			cleanEnv(t)
			file := writeFile(t, filepath.Join(t.TempDir(), "g.yaml"), tt.yaml)
			_, err := Load(file, nil)
			if err == nil || !hasLine(err, tt.want) {
				t.Errorf("err = %v, want a line starting %q", err, tt.want)
			}
		})
	}
	t.Run("env", func(t *testing.T) {
		cleanEnv(t)
		t.Setenv("GATEKEEPER_RATE_LIMIT_LOCKOUT", "forever")
		_, err := read("", nil, filepath.Join(t.TempDir(), "absent"))
		if err == nil || !hasLine(err, `rate_limit.lockout (from GATEKEEPER_RATE_LIMIT_LOCKOUT): "forever" is not a duration`) {
			t.Errorf("err = %v", err)
		}
	})
}

// TestErrorsNameTheirSource: a problem with a value from the environment or a flag names that
// variable or flag, so that the admin does not search the file for it.
func TestErrorsNameTheirSource(t *testing.T) {
	tests := []struct {
		name string
		file string            // added to validYAML
		env  map[string]string // set after cleanEnv
		args []string          // serve's flags
		want string            // the start of one line of Load's error
	}{
		{name: "type error from env", env: map[string]string{"GATEKEEPER_TOTP_SKEW": "x"},
			want: `totp.skew (from GATEKEEPER_TOTP_SKEW): "x" is not a whole number`},
		{name: "validation error from env", env: map[string]string{"GATEKEEPER_TOTP_SKEW": "20"},
			want: `totp.skew (from GATEKEEPER_TOTP_SKEW): 20 is out of range`},
		{name: "env beats the file", file: "totp: {skew: 2}\n", env: map[string]string{"GATEKEEPER_TOTP_SKEW": "20"},
			want: `totp.skew (from GATEKEEPER_TOTP_SKEW): 20 is out of range`},
		{name: "list entry from env", env: map[string]string{"GATEKEEPER_TRUSTED_NETWORKS": "10.0.0.0/8, 10.1.2.3/8"},
			want: `trusted_networks[1] (from GATEKEEPER_TRUSTED_NETWORKS): "10.1.2.3/8" has host bits set`},
		{name: "from the file", file: "totp: {skew: 20}\n",
			want: `totp.skew: 20 is out of range`},
		{name: "an empty variable does not count", file: "totp: {skew: 20}\n", env: map[string]string{"GATEKEEPER_TOTP_SKEW": ""},
			want: `totp.skew: 20 is out of range`},
		{name: "flag", args: []string{"--listen", "nohost"},
			want: `listen (from --listen): "nohost" is not host:port`},
		{name: "flag beats env", env: map[string]string{"GATEKEEPER_LOG_FORMAT": "text"}, args: []string{"--log-format=xml"},
			want: `log_format (from --log-format): "xml" is not supported`},
		{name: "unset flag does not count", file: "log_format: xml\n", args: []string{},
			want: `log_format: "xml" is not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			dir := t.TempDir()
			file := writeFile(t, filepath.Join(dir, "g.yaml"), validYAML(t, dir)+tt.file)
			var fs *pflag.FlagSet
			if tt.args != nil {
				fs = pflag.NewFlagSet("serve", pflag.ContinueOnError)
				RegisterFlags(fs)
				if err := fs.Parse(tt.args); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Load(file, fs)
			if err == nil || !hasLine(err, tt.want) {
				t.Errorf("err = %v\nwant a line starting %q", err, tt.want)
			}
		})
	}
}

// hasLine reports whether one line of err starts with prefix: every problem must lead with
// its key so the admin knows what to fix.
func hasLine(err error, prefix string) bool {
	for line := range strings.SplitSeq(err.Error(), "\n") {
		if strings.HasPrefix(line, prefix) {
			return true
		}
	}
	return false
}

func TestUnknownAndMistypedKeys(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"typo", "listen: \":22\"\ntrusted_network: [10.0.0.0/8]\n",
			`:2: unknown key "trusted_network" (did you mean "trusted_networks"?)`},
		{"nested typo", "upstream:\n  adress: \"x:22\"\n", `:2: unknown key "upstream.adress" (did you mean "upstream.address"?)`},
		{"unrelated", "colour: blue\n", `:1: unknown key "colour"`},
		{"section as scalar", "upstream: \"10.0.0.1:22\"\n", `:1: upstream: expected a mapping`},
		{"leaf as mapping", "listen: {host: x}\n", `:1: listen: expected a single value`},
		{"list of mappings", "trusted_networks:\n  - {net: x}\n", `:2: trusted_networks[0]: expected a single value`},
		{"duplicate", "listen: \":22\"\nlisten: \":23\"\n", `:2: listen: set twice (first at line 1)`},
		{"top level list", "- listen\n", `:1: expected a mapping of settings`},
		{"two documents", "listen: \":22\"\n---\nlisten: \":23\"\n", `:2: a second YAML document`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanEnv(t)
			file := writeFile(t, filepath.Join(t.TempDir(), "g.yaml"), tt.yaml)
			_, err := Load(file, nil)
			if err == nil || !strings.Contains(err.Error(), file+tt.want) {
				t.Errorf("err = %v\nwant it to contain %q", err, file+tt.want)
			}
		})
	}
}

func TestMalformedYAML(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"unclosed flow", "listen: [\nfoo: bar\n", "line 2"},
		{"bad indent", "upstream:\n  address: x\n known_hosts: y\n", "line 2"},
		{"tab", "listen:\n\t- x\n", "line 2"},
		{"binary", "\x00\x01\x02\xff", "yaml"},
		{"unclosed quote", "listen: \"127.0.0.1:22\n", "line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanEnv(t)
			file := writeFile(t, filepath.Join(t.TempDir(), "g.yaml"), tt.yaml)
			_, err := Load(file, nil)
			if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want file name and %q", err, tt.want)
			}
		})
	}
}

func TestEmptyFileMeansDefaults(t *testing.T) {
	cleanEnv(t)
	for _, body := range []string{"", "# only a comment\n", "~\n"} {
		file := writeFile(t, filepath.Join(t.TempDir(), "g.yaml"), body)
		c, err := read(file, nil, "")
		if err != nil || c.Listen != "0.0.0.0:22" {
			t.Errorf("%q: listen %v err %v", body, c, err)
		}
	}
}

func TestTrustedAndEnrollAllowed(t *testing.T) {
	c := validConfig(t)
	c.TrustedNetworks = []string{"10.0.0.0/8", "fd00::/8", "192.0.2.7", "::ffff:172.16.0.0/108"}
	c.Enroll.AllowedNetworks = nil
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr    string
		trusted bool
	}{
		{"10.1.2.3", true},
		{"::ffff:10.1.2.3", true}, // IPv4-mapped, as a dual-stack listener reports it
		{"11.0.0.1", false},
		{"::ffff:11.0.0.1", false},
		{"fd12::1", true},
		{"fe80::1", false},
		{"192.0.2.7", true}, // a bare address is a /32
		{"192.0.2.8", false},
		{"172.16.5.5", true}, // from the IPv4-mapped network
		{"2001:db8::1", false},
	}
	for _, tt := range tests {
		a := netip.MustParseAddr(tt.addr)
		if got := c.IsTrusted(a); got != tt.trusted {
			t.Errorf("IsTrusted(%s) = %v, want %v", tt.addr, got, tt.trusted)
		}
		if got := c.IsEnrollAllowed(a); got != tt.trusted {
			t.Errorf("IsEnrollAllowed(%s) = %v, want %v (default: trusted networks)", tt.addr, got, tt.trusted)
		}
	}
	if c.IsTrusted(netip.Addr{}) {
		t.Error("the zero address is trusted")
	}

	c.Enroll.AllowedNetworks = []string{"192.168.0.0/16"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.IsEnrollAllowed(netip.MustParseAddr("10.1.2.3")) || !c.IsEnrollAllowed(netip.MustParseAddr("::ffff:192.168.3.4")) {
		t.Error("explicit enroll.allowed_networks not honoured")
	}

	var none Config
	if none.IsTrusted(netip.MustParseAddr("127.0.0.1")) {
		t.Error("nothing is trusted unless configured")
	}
}

func TestAcceptsProxyFrom(t *testing.T) {
	c := validConfig(t)
	c.ProxyProtocolFrom = []string{"10.0.0.1"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	lb := netip.MustParseAddr("::ffff:10.0.0.1")
	if c.AcceptsProxyFrom(lb) {
		t.Error("PROXY header honoured with proxy_protocol off")
	}
	c.ProxyProtocol = true
	if !c.AcceptsProxyFrom(lb) || c.AcceptsProxyFrom(netip.MustParseAddr("10.0.0.2")) {
		t.Error("PROXY header policy wrong")
	}
}

func TestEffectiveRoundTrip(t *testing.T) {
	cleanEnv(t)
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "g.yaml"), validYAML(t, dir)+
		"trusted_networks: [\"::ffff:10.0.0.0/104\", \"192.0.2.1\"]\nrate_limit: {lockout: 2h}\n")
	c, err := Load(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := c.Effective()
	if out != c.Effective() {
		t.Fatal("Effective is not deterministic")
	}
	for _, want := range []string{"trusted_networks:\n  - 10.0.0.0/8\n  - 192.0.2.1/32\n", "lockout: 2h\n",
		"enroll:\n  portal_listen: 127.0.0.1:8080\n", "  allowed_networks:\n    - 10.0.0.0/8\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("Effective lacks %q:\n%s", want, out)
		}
	}
	// Order follows DESIGN.md.
	last := -1
	for _, key := range []string{"\nlisten:", "\nhost_key_files:", "\ndb:", "\nupstream:", "\ntrusted_networks:",
		"\ntotp:", "\nrate_limit:", "\nenroll:", "\nadmin:", "\nmetrics_listen:", "\nlog_format:", "\nfailure_delay:"} {
		i := strings.Index(out, key)
		if i <= last {
			t.Errorf("%s out of order in\n%s", key, out)
		}
		last = i
	}
	// Feeding the output back gives the same configuration.
	again := writeFile(t, filepath.Join(dir, "again.yaml"), out)
	c2, err := Load(again, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body := func(s string) string { _, b, _ := strings.Cut(s, "\n"); return b }; body(c2.Effective()) != body(out) {
		t.Errorf("round trip differs:\n%s\n---\n%s", out, c2.Effective())
	}
}

// TestExample checks the shipped example: it documents every key, its values are the
// defaults, and it loads and validates once its paths point somewhere that exists.
func TestExample(t *testing.T) {
	cleanEnv(t)
	ex := string(Example())

	lines := strings.Split(ex, "\n")
	for _, s := range settings() {
		leaf := s.key[strings.LastIndex(s.key, ".")+1:]
		i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), leaf+":") })
		if i < 0 {
			t.Errorf("example lacks %s", s.key)
			continue
		}
		// The key sits in a block (no blank line in between) that starts with a comment.
		commented := false
		for j := i - 1; j >= 0 && strings.TrimSpace(lines[j]) != ""; j-- {
			commented = commented || strings.HasPrefix(strings.TrimSpace(lines[j]), "#")
		}
		if !commented {
			t.Errorf("example: %s has no comment", s.key)
		}
	}

	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "etc", "known_hosts"), knownHostsLine(t))
	rewritten := strings.NewReplacer(
		"/var/lib/gatekeeper/", filepath.Join(dir, "lib")+"/",
		"/etc/gatekeeper/", filepath.Join(dir, "etc")+"/",
		"/run/gatekeeper/", filepath.Join(dir, "run")+"/",
	).Replace(ex)
	file := writeFile(t, filepath.Join(dir, "gatekeeper.yaml"), rewritten)
	c, err := Load(file, nil)
	if err != nil {
		t.Fatalf("example does not load: %v", err)
	}

	def, err := read("", nil, filepath.Join(dir, "absent"))
	if err != nil {
		t.Fatal(err)
	}
	defFile := writeFile(t, filepath.Join(dir, "defaults.yaml"), strings.NewReplacer(
		"/var/lib/gatekeeper/", filepath.Join(dir, "lib")+"/",
		"/etc/gatekeeper/", filepath.Join(dir, "etc")+"/",
		"/run/gatekeeper/", filepath.Join(dir, "run")+"/",
	).Replace(def.Effective()))
	def, err = Load(defFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := func(s string) string { _, b, _ := strings.Cut(s, "\n"); return b }
	if body(c.Effective()) != body(def.Effective()) {
		t.Errorf("example values differ from the defaults:\nexample:\n%s\ndefaults:\n%s", c.Effective(), def.Effective())
	}
}

func TestExampleIsACopy(t *testing.T) {
	a := Example()
	a[0] = 'X'
	if Example()[0] == 'X' {
		t.Error("Example returns shared bytes")
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{{"", "", 0}, {"abc", "", 3}, {"kitten", "sitting", 3}, {"trusted_network", "trusted_networks", 1}}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
