package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gatekeeper/internal/nobodytest"
)

// selfSigned writes a certificate and key pair for the portal's TLS settings.
func selfSigned(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "portal"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cert = writeFile(t, filepath.Join(dir, "portal.crt"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	key = writeFile(t, filepath.Join(dir, "portal.key"), string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
	return cert, key
}

func TestValidateNamesTheKey(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(t *testing.T, c *Config, dir string)
		want   string // the start of the one expected error line; "" = valid
	}{
		// trusted networks and other network lists
		{"bad CIDR", func(t *testing.T, c *Config, dir string) { c.TrustedNetworks = []string{"10.0.0.0/8", "10.0.0.300/8"} },
			`trusted_networks[1]: "10.0.0.300/8" is not a CIDR network`},
		{"trust everyone", func(t *testing.T, c *Config, dir string) { c.TrustedNetworks = []string{"0.0.0.0/0"} },
			`trusted_networks[0]: "0.0.0.0/0" would trust every address`},
		{"trust everyone v6", func(t *testing.T, c *Config, dir string) { c.TrustedNetworks = []string{"::/0"} },
			`trusted_networks[0]: "::/0" would trust every address`},
		{"zone", func(t *testing.T, c *Config, dir string) { c.TrustedNetworks = []string{"fe80::1%eth0"} },
			`trusted_networks[0]: "fe80::1%eth0" is not a CIDR network`},
		{"bare IPs, full-length and IPv4-mapped prefixes are fine", func(t *testing.T, c *Config, dir string) {
			c.TrustedNetworks = []string{"10.1.2.3", "2001:db8::1", "10.1.2.4/32", "2001:db8::2/128", "::ffff:172.16.0.0/108"}
		}, ""},

		// host bits set past the prefix length: a typo or an address copied from `ip addr`, never masked
		{"host bits in trusted", func(t *testing.T, c *Config, dir string) { c.TrustedNetworks = []string{"10.0.0.0/8", "10.1.2.3/8"} },
			`trusted_networks[1]: "10.1.2.3/8" has host bits set past the /8 (did you mean 10.0.0.0/8, or the single address 10.1.2.3?)`},
		{"host bits in trusted v6", func(t *testing.T, c *Config, dir string) { c.TrustedNetworks = []string{"fd00::1/8"} },
			`trusted_networks[0]: "fd00::1/8" has host bits set past the /8 (did you mean fd00::/8, or the single address fd00::1?)`},
		{"host bits in trusted IPv4-mapped", func(t *testing.T, c *Config, dir string) { c.TrustedNetworks = []string{"::ffff:10.1.2.3/104"} },
			`trusted_networks[0]: "::ffff:10.1.2.3/104" has host bits set past the /104 (did you mean ::ffff:10.0.0.0/104, or the single address ::ffff:10.1.2.3?)`},
		{"host bits in allowed networks", func(t *testing.T, c *Config, dir string) { c.Enroll.AllowedNetworks = []string{"192.168.1.7/24"} },
			`enroll.allowed_networks[0]: "192.168.1.7/24" has host bits set past the /24 (did you mean 192.168.1.0/24, or the single address 192.168.1.7?)`},
		{"host bits in proxy from", func(t *testing.T, c *Config, dir string) {
			c.ProxyProtocol = true
			c.ProxyProtocolFrom = []string{"10.0.0.5/24"}
		}, `proxy_protocol_from[0]: "10.0.0.5/24" has host bits set past the /24 (did you mean 10.0.0.0/24, or the single address 10.0.0.5?)`},
		{"allowed networks", func(t *testing.T, c *Config, dir string) { c.Enroll.AllowedNetworks = []string{"any"} },
			`enroll.allowed_networks[0]: "any" is not a CIDR network`},
		{"proxy from", func(t *testing.T, c *Config, dir string) {
			c.ProxyProtocol = true
			c.ProxyProtocolFrom = []string{"lb.example.org"}
		}, `proxy_protocol_from[0]: "lb.example.org" is not a CIDR network or IP address`},
		{"proxy on without peers", func(t *testing.T, c *Config, dir string) { c.ProxyProtocol = true },
			`proxy_protocol_from: required when proxy_protocol is true`},
		{"proxy from IP and CIDR", func(t *testing.T, c *Config, dir string) {
			c.ProxyProtocol = true
			c.ProxyProtocolFrom = []string{"10.0.0.1", "fd00::/64"}
		}, ""},
		{"trusted half the internet", func(t *testing.T, c *Config, dir string) { c.TrustedNetworks = []string{"0.0.0.0/1"} },
			`trusted_networks[0]: "0.0.0.0/1" is broader than a /8`},
		{"trusted an IPv6 /7", func(t *testing.T, c *Config, dir string) { c.TrustedNetworks = []string{"fc00::/7"} },
			`trusted_networks[0]: "fc00::/7" is broader than a /8`},
		{"proxy from everyone", func(t *testing.T, c *Config, dir string) {
			c.ProxyProtocol = true
			c.ProxyProtocolFrom = []string{"0.0.0.0/0"}
		}, `proxy_protocol_from[0]: 0.0.0.0/0 is too broad`},
		{"proxy from an IPv4 /15", func(t *testing.T, c *Config, dir string) {
			c.ProxyProtocolFrom = []string{"10.0.0.0/16", "10.2.0.0/15"}
		}, `proxy_protocol_from[1]: 10.2.0.0/15 is too broad`},
		{"proxy from an IPv6 /47", func(t *testing.T, c *Config, dir string) {
			c.ProxyProtocolFrom = []string{"2001:db8::/48", "2001:db8::/47"}
		}, `proxy_protocol_from[1]: 2001:db8::/47 is too broad`},
		{"proxy from ::/0", func(t *testing.T, c *Config, dir string) { c.ProxyProtocolFrom = []string{"::/0"} },
			`proxy_protocol_from[0]: ::/0 is too broad`},
		{"preauth handshake zero", func(t *testing.T, c *Config, dir string) { c.Preauth.HandshakeTimeout = 0 },
			`preauth.handshake_timeout: must be positive`},
		{"preauth handshake over grace", func(t *testing.T, c *Config, dir string) { c.Preauth.HandshakeTimeout = 2 * time.Minute },
			`preauth.handshake_timeout: 2m is longer than login_grace_time (1m)`},
		{"preauth per address zero", func(t *testing.T, c *Config, dir string) { c.Preauth.PerAddress = 0 },
			`preauth.per_address: must be at least 1`},
		{"preauth per network below per address", func(t *testing.T, c *Config, dir string) { c.Preauth.PerNetwork = 5 },
			`preauth.per_network: 5 is less than preauth.per_address (10)`},
		{"preauth drop start over max", func(t *testing.T, c *Config, dir string) { c.Preauth.DropStart = 101 },
			`preauth.drop_start: 101 is out of range`},
		{"preauth reserve negative", func(t *testing.T, c *Config, dir string) { c.Preauth.TrustedReserve = -1 },
			`preauth.trusted_reserve: must not be negative`},
		{"max channels zero", func(t *testing.T, c *Config, dir string) { c.MaxChannels = 0 }, `max_channels: must be at least 1`},
		{"relay window not a size", func(t *testing.T, c *Config, dir string) { c.Relay.Window = "lots" }, `relay.window: "lots" is not a size (such as 16MiB)`},
		{"relay window too small", func(t *testing.T, c *Config, dir string) { c.Relay.Window = "64KiB" }, `relay.window: must be between 2MiB and 64MiB, not 64KiB`},
		{"relay window too large", func(t *testing.T, c *Config, dir string) { c.Relay.Window = "1G" }, `relay.window: must be between 2MiB and 64MiB, not 1G`},
		{"relay window total below window", func(t *testing.T, c *Config, dir string) {
			c.Relay.Window, c.Relay.WindowTotal = "16MiB", "8MiB"
		}, `relay.window_total: must be at least relay.window (16MiB)`},
		{"trusted failures zero", func(t *testing.T, c *Config, dir string) { c.RateLimit.TrustedFailures = 0 },
			`rate_limit.trusted_failures: must be at least 1`},
		{"admin group", func(t *testing.T, c *Config, dir string) { c.Admin.Groups = []string{"wheel", "bad group"} },
			`admin.groups[1]: "bad group" is not a group name`},

		// durations and numbers
		{"window zero", func(t *testing.T, c *Config, dir string) { c.RateLimit.Window = 0 }, `rate_limit.window: must be positive`},
		{"lockout negative", func(t *testing.T, c *Config, dir string) { c.RateLimit.Lockout = -time.Second }, `rate_limit.lockout: must be positive`},
		{"failures zero", func(t *testing.T, c *Config, dir string) { c.RateLimit.Failures = 0 }, `rate_limit.failures: must be at least 1`},
		{"confirm_within", func(t *testing.T, c *Config, dir string) { c.Enroll.ConfirmWithin = 0 }, `enroll.confirm_within: must be positive`},
		{"skew high", func(t *testing.T, c *Config, dir string) { c.TOTP.Skew = 11 }, `totp.skew: 11 is out of range (0..10`},
		{"skew negative", func(t *testing.T, c *Config, dir string) { c.TOTP.Skew = -1 }, `totp.skew: -1 is out of range`},
		{"skew zero ok", func(t *testing.T, c *Config, dir string) { c.TOTP.Skew = 0 }, ""},
		{"login_grace_time", func(t *testing.T, c *Config, dir string) { c.LoginGraceTime = 0 }, `login_grace_time: must be positive`},
		{"max_auth_tries", func(t *testing.T, c *Config, dir string) { c.MaxAuthTries = 0 }, `max_auth_tries: must be at least 1`},
		{"max_startups", func(t *testing.T, c *Config, dir string) { c.MaxStartups = -1 }, `max_startups: must be at least 1`},
		{"failure_delay", func(t *testing.T, c *Config, dir string) { c.FailureDelay = -time.Second }, `failure_delay: must not be negative`},

		// strings with fixed choices
		{"first factor", func(t *testing.T, c *Config, dir string) { c.FirstFactor = "ldap" },
			`first_factor: "ldap" is not supported (supported: upstream)`},
		{"log format", func(t *testing.T, c *Config, dir string) { c.LogFormat = "xml" },
			`log_format: "xml" is not supported (supported: json, text)`},
		{"issuer empty", func(t *testing.T, c *Config, dir string) { c.TOTP.Issuer = "" }, `totp.issuer: required`},
		{"issuer colon", func(t *testing.T, c *Config, dir string) { c.TOTP.Issuer = "HPC:Login" }, `totp.issuer: "HPC:Login" must not contain ':'`},
		{"issuer control", func(t *testing.T, c *Config, dir string) { c.TOTP.Issuer = "HPC\n" }, `totp.issuer: "HPC\n" must not contain control`},
		{"issuer long", func(t *testing.T, c *Config, dir string) { c.TOTP.Issuer = strings.Repeat("x", 65) }, `totp.issuer: longer than 64`},

		// addresses
		{"listen missing", func(t *testing.T, c *Config, dir string) { c.Listen = "" }, `listen: required (host:port)`},
		{"listen no port", func(t *testing.T, c *Config, dir string) { c.Listen = "0.0.0.0" }, `listen: "0.0.0.0" is not host:port`},
		{"listen bad port", func(t *testing.T, c *Config, dir string) { c.Listen = ":99999" }, `listen: ":99999": port "99999" is not a number`},
		{"listen bad host", func(t *testing.T, c *Config, dir string) { c.Listen = "bad host:22" }, `listen: "bad host:22": "bad host" is not an IP address or host name`},
		{"listen v6", func(t *testing.T, c *Config, dir string) { c.Listen = "[::]:2222" }, ""},
		{"portal", func(t *testing.T, c *Config, dir string) { c.Enroll.PortalListen = "8080" }, `enroll.portal_listen: "8080" is not host:port`},
		{"enroll ssh", func(t *testing.T, c *Config, dir string) { c.Enroll.SSHListen = "localhost:ssh" }, `enroll.ssh_listen: "localhost:ssh": port "ssh"`},
		{"metrics", func(t *testing.T, c *Config, dir string) { c.MetricsListen = "127.0.0.1:" }, `metrics_listen: "127.0.0.1:": port ""`},
		{"optional listeners may be off", func(t *testing.T, c *Config, dir string) {
			c.Enroll.PortalListen, c.Enroll.SSHListen, c.MetricsListen = "", "", ""
		}, ""},
		{"port clash", func(t *testing.T, c *Config, dir string) { c.Enroll.SSHListen = "0.0.0.0:2222" },
			`enroll.ssh_listen: "0.0.0.0:2222" uses the same port as listen ("127.0.0.1:2222")`},
		{"port 0 never clashes", func(t *testing.T, c *Config, dir string) {
			c.Listen, c.Enroll.PortalListen, c.Enroll.SSHListen, c.MetricsListen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		}, ""},
		{"upstream missing", func(t *testing.T, c *Config, dir string) { c.Upstream.Address = "" }, `upstream.address: required (host:port)`},
		{"upstream no port", func(t *testing.T, c *Config, dir string) { c.Upstream.Address = "lander" }, `upstream.address: "lander" is not host:port`},
		{"upstream no host", func(t *testing.T, c *Config, dir string) { c.Upstream.Address = ":22" }, `upstream.address: ":22" has no host`},
		{"upstream port 0", func(t *testing.T, c *Config, dir string) { c.Upstream.Address = "lander:0" }, `upstream.address: "lander:0": port 0`},
		{"upstream by name", func(t *testing.T, c *Config, dir string) { c.Upstream.Address = "lander-01.example.org:22" }, ""},

		// known_hosts
		{"known_hosts missing", func(t *testing.T, c *Config, dir string) { c.Upstream.KnownHosts = filepath.Join(dir, "nope") },
			`upstream.known_hosts: DIR/nope does not exist: record the lander's host key first (ssh-keyscan -p PORT HOST > DIR/nope)`},
		{"known_hosts empty path", func(t *testing.T, c *Config, dir string) { c.Upstream.KnownHosts = "" }, `upstream.known_hosts: required`},
		{"known_hosts empty", func(t *testing.T, c *Config, dir string) {
			c.Upstream.KnownHosts = writeFile(t, filepath.Join(dir, "kh"), "# nothing yet\n\n")
		}, `upstream.known_hosts: DIR/kh holds no host key`},
		{"known_hosts only revoked", func(t *testing.T, c *Config, dir string) {
			c.Upstream.KnownHosts = writeFile(t, filepath.Join(dir, "kh"), "@revoked "+knownHostsLine(t))
		}, `upstream.known_hosts: DIR/kh holds no host key`},
		{"known_hosts garbage", func(t *testing.T, c *Config, dir string) {
			c.Upstream.KnownHosts = writeFile(t, filepath.Join(dir, "kh"), knownHostsLine(t)+"lander ssh-ed25519 notbase64!\n")
		}, `upstream.known_hosts: DIR/kh:2:`},
		{"known_hosts is a directory", func(t *testing.T, c *Config, dir string) { c.Upstream.KnownHosts = dir },
			`upstream.known_hosts: DIR is not a regular file`},

		// host keys
		{"host key missing in missing dirs is fine", func(t *testing.T, c *Config, dir string) {
			c.HostKeyFiles = []string{filepath.Join(dir, "a", "b", "key")}
		}, ""},
		{"host key present", func(t *testing.T, c *Config, dir string) {
			c.HostKeyFiles = []string{writeFile(t, filepath.Join(dir, "key"), privateKeyPEM(t, ""))}
		}, ""},
		{"host key garbage", func(t *testing.T, c *Config, dir string) {
			c.HostKeyFiles = []string{c.HostKeyFiles[0], writeFile(t, filepath.Join(dir, "key"), "hello\n")}
		}, `host_key_files[1]: DIR/key is not a private key`},
		{"host key is a public key", func(t *testing.T, c *Config, dir string) {
			c.HostKeyFiles = []string{writeFile(t, filepath.Join(dir, "key.pub"), strings.Fields(knownHostsLine(t))[1]+" "+strings.Fields(knownHostsLine(t))[2]+"\n")}
		}, `host_key_files[0]: DIR/key.pub is not a private key`},
		{"host key encrypted", func(t *testing.T, c *Config, dir string) {
			c.HostKeyFiles = []string{writeFile(t, filepath.Join(dir, "key"), privateKeyPEM(t, "secret"))}
		}, `host_key_files[0]: DIR/key is protected by a passphrase`},
		{"host key is a directory", func(t *testing.T, c *Config, dir string) { c.HostKeyFiles = []string{dir} },
			`host_key_files[0]: DIR is not a regular file`},
		{"host key under a file", func(t *testing.T, c *Config, dir string) {
			f := writeFile(t, filepath.Join(dir, "plain"), "x")
			c.HostKeyFiles = []string{filepath.Join(f, "key")}
		}, `host_key_files[0]: DIR/plain/key: DIR/plain is not a directory`},
		{"no host keys", func(t *testing.T, c *Config, dir string) { c.HostKeyFiles = nil }, `host_key_files: at least one`},

		// state files
		{"db missing", func(t *testing.T, c *Config, dir string) { c.DB = "" }, `db: required`},
		{"db is a directory", func(t *testing.T, c *Config, dir string) { c.DB = dir }, `db: DIR is a directory`},
		{"secret key is db", func(t *testing.T, c *Config, dir string) { c.SecretKeyFile = c.DB }, `secret_key_file: must not be the same file as db`},
		{"secret key under a file", func(t *testing.T, c *Config, dir string) {
			c.SecretKeyFile = filepath.Join(writeFile(t, filepath.Join(dir, "plain"), "x"), "secret.key")
		}, `secret_key_file: DIR/plain/secret.key: DIR/plain is not a directory`},
		{"socket missing", func(t *testing.T, c *Config, dir string) { c.Admin.Socket = "" }, `admin.socket: required`},
		{"socket too long", func(t *testing.T, c *Config, dir string) { c.Admin.Socket = "/run/" + strings.Repeat("s", 110) },
			`admin.socket: /run/sss`},

		// keys
		{"keys off: no CA needed", func(t *testing.T, c *Config, dir string) { c.Keys.LanderCAFile = "" }, ""},
		{"keys on: CA to be created", func(t *testing.T, c *Config, dir string) {
			c.Keys.Enabled, c.Keys.LanderCAFile = true, filepath.Join(dir, "lander_user_ca")
		}, ""},
		{"keys on: no CA file", func(t *testing.T, c *Config, dir string) { c.Keys.Enabled, c.Keys.LanderCAFile = true, "" },
			`keys.lander_ca_file: required`},
		{"keys on: CA under a file", func(t *testing.T, c *Config, dir string) {
			c.Keys.Enabled = true
			c.Keys.LanderCAFile = filepath.Join(writeFile(t, filepath.Join(dir, "plain"), "x"), "ca")
		}, `keys.lander_ca_file: DIR/plain/ca: DIR/plain is not a directory`},
		{"keys on: CA is a host key", func(t *testing.T, c *Config, dir string) {
			c.Keys.Enabled, c.Keys.LanderCAFile = true, c.HostKeyFiles[0]
		}, `keys.lander_ca_file: must not be one of host_key_files`},
		{"keys on: CA is the secret key", func(t *testing.T, c *Config, dir string) {
			c.Keys.Enabled, c.Keys.LanderCAFile = true, c.SecretKeyFile
		}, `keys.lander_ca_file: must not be the same file as secret_key_file`},
		{"cert validity too long", func(t *testing.T, c *Config, dir string) { c.Keys.CertValidity = 2 * time.Hour },
			`keys.cert_validity: must be between 10s and 1h0m0s`},
		{"remember a month", func(t *testing.T, c *Config, dir string) { c.Keys.Remember = 30 * 24 * time.Hour },
			`keys.remember: must be between 0s (off) and 168h0m0s`},
		{"automation lifetime zero", func(t *testing.T, c *Config, dir string) { c.Keys.AutomationMaxLifetime = 0 },
			`keys.automation_max_lifetime: must be between 1h and`},

		// TLS
		{"tls both", func(t *testing.T, c *Config, dir string) { c.Enroll.TLSCert, c.Enroll.TLSKey = selfSigned(t, dir) }, ""},
		{"tls cert only", func(t *testing.T, c *Config, dir string) { c.Enroll.TLSCert, _ = selfSigned(t, dir) },
			`enroll.tls_key: required when enroll.tls_cert is set`},
		{"tls key only", func(t *testing.T, c *Config, dir string) { _, c.Enroll.TLSKey = selfSigned(t, dir) },
			`enroll.tls_cert: required when enroll.tls_key is set`},
		{"tls unreadable", func(t *testing.T, c *Config, dir string) {
			_, c.Enroll.TLSKey = selfSigned(t, dir)
			c.Enroll.TLSCert = filepath.Join(dir, "none.crt")
		}, `enroll.tls_cert: open DIR/none.crt: no such file or directory`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig(t)
			dir := t.TempDir()
			tt.mutate(t, c, dir)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			want := strings.ReplaceAll(tt.want, "DIR", dir)
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], want) {
				t.Errorf("error:\n%v\nwant exactly one line starting %q", err, want)
			}
		})
	}
}

// TestValidateReportsAll: an admin fixes everything in one go, so all problems come at once.
func TestValidateReportsAll(t *testing.T) {
	c := validConfig(t)
	c.TrustedNetworks = []string{"10.0.0.0/8", "10.0.0.300/8"}
	c.RateLimit.Window = 0
	c.FirstFactor = "ldap"
	c.Upstream.KnownHosts = filepath.Join(t.TempDir(), "x")
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"trusted_networks[1]:", "rate_limit.window:", "first_factor:", "upstream.known_hosts:"} {
		if !hasLine(err, want) {
			t.Errorf("missing %q in\n%v", want, err)
		}
	}
	// Through Load, the message says which file to fix.
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "g.yaml"), validYAML(t, dir)+"first_factor: ldap\nlog_format: xml\n")
	_, err = Load(file, nil)
	if err == nil || !strings.Contains(err.Error(), file) || !hasLine(err, "first_factor:") || !hasLine(err, "log_format:") {
		t.Errorf("Load error = %v", err)
	}
}

// TestValidateIdempotent: validating twice must not pile up parsed networks.
func TestValidateIdempotent(t *testing.T) {
	c := validConfig(t)
	c.TrustedNetworks = []string{"10.0.0.0/8"}
	for range 2 {
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.Trusted) != 1 || len(c.Enroll.Allowed) != 1 {
		t.Errorf("Trusted %v Allowed %v after two Validate calls", c.Trusted, c.Enroll.Allowed)
	}
}

// TestUnreadableFiles: a file the daemon's user may not read is reported with the reason. Root
// reads files regardless of mode, so as root the test runs again as the user nobody.
func TestUnreadableFiles(t *testing.T) {
	if os.Geteuid() == 0 {
		nobodytest.Rerun(t)
		return
	}
	c := validConfig(t)
	key := writeFile(t, filepath.Join(t.TempDir(), "key"), privateKeyPEM(t, ""))
	if err := os.Chmod(key, 0); err != nil {
		t.Fatal(err)
	}
	c.HostKeyFiles = []string{key}
	if err := c.Validate(); err == nil || !hasLine(err, "host_key_files[0]: open "+key+": permission denied") {
		t.Errorf("err = %v", err)
	}
}

// TestValidateWarnings: settings that are allowed but probably wrong are reported as warnings,
// and settings older configs set above the new keys' defaults are raised to match.
func TestValidateWarnings(t *testing.T) {
	c := validConfig(t)
	c.TrustedNetworks = []string{"10.0.0.0/8"}
	c.ProxyProtocol = true
	c.ProxyProtocolFrom = []string{"10.1.2.3", "192.0.2.10"}
	c.RateLimit.Lockout = 2 * time.Hour
	c.RateLimit.Failures = 20
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	w := strings.Join(c.Warnings(), "\n")
	for _, want := range []string{
		"proxy_protocol_from[0]: 10.1.2.3/32 overlaps trusted_networks entry 10.0.0.0/8",
		"rate_limit.max_lockout: 1h is shorter than rate_limit.lockout; using 2h",
		"rate_limit.network_failures: 10 is less than rate_limit.failures; using 20",
	} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	if strings.Contains(w, "proxy_protocol_from[1]") {
		t.Errorf("a balancer outside the trusted networks is warned about:\n%s", w)
	}
	if c.RateLimit.MaxLockout != 2*time.Hour || c.RateLimit.NetworkFailures != 20 {
		t.Errorf("max_lockout %s network_failures %d, want raised to 2h and 20", c.RateLimit.MaxLockout, c.RateLimit.NetworkFailures)
	}
	// Validating again starts afresh.
	c.TrustedNetworks = nil
	c.RateLimit.Failures = 3
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("warnings after the fix: %q", w)
	}
}
