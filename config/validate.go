package config

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// maxSocketPath is the longest Unix socket path Linux accepts (sun_path is 108 bytes with NUL).
const maxSocketPath = 107

// maxIssuer keeps the otpauth URI, and with it the QR code, small enough to render.
const maxIssuer = 64

// problems collects validation errors so that an admin sees all of them in one run.
type problems struct {
	errs []error
	// origins names the flag or environment variable a key's value came from (see
	// Config.origins), so that an error about that key does not send the admin to the file.
	origins map[string]string
}

func (p *problems) addf(key, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: %s", keyFrom(key, p.origins), fmt.Sprintf(format, args...)))
}

func (p *problems) add(key string, err error) {
	p.errs = append(p.errs, fmt.Errorf("%s: %w", keyFrom(key, p.origins), err))
}

// Validate checks every setting and reports all problems at once, each prefixed with the
// key it concerns (e.g. "trusted_networks[1]: ...") and, when Load took the key's value from
// a flag or an environment variable, that one (e.g. "totp.skew (from
// GATEKEEPER_TOTP_SKEW): ..."). It also parses the network lists into
// Trusted, ProxyFrom and Enroll.Allowed (which defaults to Trusted). Files are checked as the
// daemon will use them: known_hosts must hold a key, host keys must be parseable or creatable.
func (c *Config) Validate() error {
	p := problems{origins: c.origins}
	c.warnings = nil

	c.Trusted = parseNetworks(&p, "trusted_networks", c.TrustedNetworks, false)
	c.ProxyFrom = parseNetworks(&p, "proxy_protocol_from", c.ProxyProtocolFrom, true)
	c.Enroll.Allowed = parseNetworks(&p, "enroll.allowed_networks", c.Enroll.AllowedNetworks, true)
	if len(c.Enroll.AllowedNetworks) == 0 {
		c.Enroll.Allowed = slices.Clone(c.Trusted)
	}

	checkListen(&p, "listen", c.Listen, true)
	checkListen(&p, "enroll.portal_listen", c.Enroll.PortalListen, false)
	checkListen(&p, "enroll.ssh_listen", c.Enroll.SSHListen, false)
	checkListen(&p, "metrics_listen", c.MetricsListen, false)
	checkListenConflicts(&p, []string{"listen", "enroll.portal_listen", "enroll.ssh_listen", "metrics_listen"},
		[]string{c.Listen, c.Enroll.PortalListen, c.Enroll.SSHListen, c.MetricsListen})

	if len(c.HostKeyFiles) == 0 {
		p.addf("host_key_files", "at least one host key file is required")
	}
	for i, f := range c.HostKeyFiles {
		checkHostKey(&p, fmt.Sprintf("host_key_files[%d]", i), f)
	}
	checkStatePath(&p, "secret_key_file", c.SecretKeyFile)
	if c.DB != "" && filepath.Clean(c.DB) == filepath.Clean(c.SecretKeyFile) {
		p.addf("secret_key_file", "must not be the same file as db")
	}

	checkUpstream(&p, c.Upstream.Address)
	checkKnownHosts(&p, "upstream.known_hosts", c.Upstream.KnownHosts)
	if c.FirstFactor != "upstream" {
		p.addf("first_factor", "%q is not supported (supported: upstream)", c.FirstFactor)
	}

	if c.ProxyProtocol && len(c.ProxyProtocolFrom) == 0 {
		p.addf("proxy_protocol_from", "required when proxy_protocol is true (the load balancers' addresses)")
	}
	c.checkProxyFrom(&p)

	switch {
	case c.TOTP.Issuer == "":
		p.addf("totp.issuer", "required (shown in the authenticator app)")
	case strings.Contains(c.TOTP.Issuer, ":"):
		p.addf("totp.issuer", "%q must not contain ':' (it separates issuer and user in the otpauth label)", c.TOTP.Issuer)
	case strings.IndexFunc(c.TOTP.Issuer, unicode.IsControl) >= 0:
		p.addf("totp.issuer", "%q must not contain control characters", c.TOTP.Issuer)
	case len(c.TOTP.Issuer) > maxIssuer:
		p.addf("totp.issuer", "longer than %d bytes (it goes into the QR code)", maxIssuer)
	}
	if c.TOTP.Skew < 0 || c.TOTP.Skew > 10 {
		p.addf("totp.skew", "%d is out of range (0..10 steps of 30s)", c.TOTP.Skew)
	}

	if c.RateLimit.Failures < 1 {
		p.addf("rate_limit.failures", "must be at least 1")
	}
	if c.RateLimit.Window <= 0 {
		p.addf("rate_limit.window", "must be positive")
	}
	if c.RateLimit.Lockout <= 0 {
		p.addf("rate_limit.lockout", "must be positive")
	}
	// Configs written before these keys existed may set lockout or failures above the new keys'
	// defaults: raise the new keys to match, and say so, rather than refuse to start.
	if c.RateLimit.MaxLockout < c.RateLimit.Lockout && c.RateLimit.Lockout > 0 {
		c.warnings = append(c.warnings, fmt.Sprintf("rate_limit.max_lockout: %s is shorter than rate_limit.lockout; using %s (lockouts do not grow)",
			formatDuration(c.RateLimit.MaxLockout), formatDuration(c.RateLimit.Lockout)))
		c.RateLimit.MaxLockout = c.RateLimit.Lockout
	}
	if c.RateLimit.NetworkFailures < c.RateLimit.Failures && c.RateLimit.Failures > 0 {
		c.warnings = append(c.warnings, fmt.Sprintf("rate_limit.network_failures: %d is less than rate_limit.failures; using %d",
			c.RateLimit.NetworkFailures, c.RateLimit.Failures))
		c.RateLimit.NetworkFailures = c.RateLimit.Failures
	}
	if c.RateLimit.TrustedFailures < 1 {
		p.addf("rate_limit.trusted_failures", "must be at least 1")
	}

	if c.Enroll.ConfirmWithin <= 0 {
		p.addf("enroll.confirm_within", "must be positive")
	}
	checkTLS(&p, c.Enroll.TLSCert, c.Enroll.TLSKey)

	switch {
	case c.Admin.Socket == "":
		p.addf("admin.socket", "required")
	case len(c.Admin.Socket) > maxSocketPath:
		p.addf("admin.socket", "%s is longer than %d bytes, the limit for a Unix socket path", c.Admin.Socket, maxSocketPath)
	default:
		if err := creatable(c.Admin.Socket); err != nil {
			p.add("admin.socket", err)
		}
	}

	c.checkStore(&p)
	if c.LogFormat != "json" && c.LogFormat != "text" {
		p.addf("log_format", "%q is not supported (supported: json, text)", c.LogFormat)
	}
	if c.LoginGraceTime <= 0 {
		p.addf("login_grace_time", "must be positive")
	}
	if c.MaxAuthTries < 1 {
		p.addf("max_auth_tries", "must be at least 1")
	}
	if c.MaxStartups < 1 {
		p.addf("max_startups", "must be at least 1")
	}
	c.checkPreauth(&p)
	if c.MaxChannels < 1 {
		p.addf("max_channels", "must be at least 1")
	}
	c.checkRelay(&p)
	c.checkKeys(&p)
	for i, g := range c.Admin.Groups {
		if !validGroupName(g) {
			p.addf(fmt.Sprintf("admin.groups[%d]", i), "%q is not a group name", g)
		}
	}
	if c.Audit.Retention < 0 {
		p.addf("audit.retention", "must not be negative (0 keeps events forever)")
	} else if c.Audit.Retention > 0 && c.Audit.Retention < time.Hour {
		p.addf("audit.retention", "must be at least 1h (0 keeps events forever)")
	}
	if c.Session.IdleTimeout < 0 {
		p.addf("session.idle_timeout", "must not be negative (0 turns it off)")
	}
	if c.Session.MaxDuration < 0 {
		p.addf("session.max_duration", "must not be negative (0 turns it off)")
	}
	if c.Session.MaxPerUser < 0 || c.Session.MaxPerUser > maxSessionsPerUser {
		p.addf("session.max_per_user", "must be 0 (no cap) to %d", maxSessionsPerUser)
	}
	if c.FailureDelay < 0 {
		p.addf("failure_delay", "must not be negative")
	}

	return errors.Join(p.errs...)
}

// minTrustedBits is the broadest trusted_networks entry allowed (10.0.0.0/8, fd00::/8).
const minTrustedBits = 8

// maxSessionsPerUser bounds session.max_per_user: a cap above it caps nothing a node could hold.
const maxSessionsPerUser = 100000

// Narrowest allowed proxy_protocol_from entries: a load balancer is a handful of hosts, and a
// broad range would let anyone inside it claim any client address.
const (
	minProxyBits4 = 16
	minProxyBits6 = 48
)

// checkProxyFrom refuses proxy_protocol_from entries broader than /16 (IPv4) or /48 (IPv6), and
// warns when a load balancer is inside trusted_networks: a header without a client address
// (a health check) is then still handled as an outside connection, but the overlap usually
// means the balancer's own address was trusted by mistake.
func (c *Config) checkProxyFrom(p *problems) {
	for i, pfx := range c.ProxyFrom {
		minBits := minProxyBits6
		if pfx.Addr().Is4() {
			minBits = minProxyBits4
		}
		if pfx.Bits() < minBits {
			p.addf(fmt.Sprintf("proxy_protocol_from[%d]", i),
				"%s is too broad: list the load balancers' own addresses (at most a /%d), or anyone inside it could claim any client address",
				pfx, minBits)
		}
		for _, t := range c.Trusted {
			if t.Overlaps(pfx) {
				c.warnings = append(c.warnings, fmt.Sprintf(
					"proxy_protocol_from[%d]: %s overlaps trusted_networks entry %s; connections through the load balancer are judged by the client address in the PROXY header, never by the balancer's",
					i, pfx, t))
				break
			}
		}
	}
}

// checkPreauth checks the limits on unauthenticated connections.
func (c *Config) checkPreauth(p *problems) {
	a := c.Preauth
	if a.HandshakeTimeout <= 0 {
		p.addf("preauth.handshake_timeout", "must be positive")
	} else if c.LoginGraceTime > 0 && a.HandshakeTimeout > c.LoginGraceTime {
		p.addf("preauth.handshake_timeout", "%s is longer than login_grace_time (%s)",
			formatDuration(a.HandshakeTimeout), formatDuration(c.LoginGraceTime))
	}
	if a.PerAddress < 1 {
		p.addf("preauth.per_address", "must be at least 1")
	}
	if a.PerNetwork < a.PerAddress {
		p.addf("preauth.per_network", "%d is less than preauth.per_address (%d)", a.PerNetwork, a.PerAddress)
	}
	if a.DropStart < 0 || c.MaxStartups >= 1 && a.DropStart > c.MaxStartups {
		p.addf("preauth.drop_start", "%d is out of range (0..max_startups, %d; 0 means half of max_startups)", a.DropStart, c.MaxStartups)
	}
	if a.TrustedReserve < 0 {
		p.addf("preauth.trusted_reserve", "must not be negative")
	}
}

// validGroupName accepts the group names useradd/groupadd accept.
func validGroupName(g string) bool {
	if g == "" || len(g) > 32 || g[0] == '-' {
		return false
	}
	for _, r := range g {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// hostBitsError is parseNetwork's error for a CIDR network with bits set past its prefix
// length, such as 10.1.2.3/8.
type hostBitsError struct {
	network netip.Prefix // the network the prefix length denotes: 10.0.0.0/8
	addr    netip.Addr   // the address as written: 10.1.2.3
}

// Error offers both readings: the network the prefix length denotes, and the one address
// that was written (the usual intent for a load balancer in proxy_protocol_from).
func (e *hostBitsError) Error() string {
	return fmt.Sprintf("host bits set past the /%d (did you mean %s, or the single address %s?)",
		e.network.Bits(), e.network, e.addr)
}

// parseNetwork accepts a CIDR network or a bare address (as /32 or /128). An IPv4-mapped
// IPv6 network becomes the IPv4 network it denotes, because lookups Unmap addresses first.
//
// A CIDR network with host bits set (10.1.2.3/8) is refused with a *hostBitsError rather
// than masked: it is almost always a typo, or an interface address copied from `ip addr`,
// and masking it silently could trust a far larger network than the admin meant. OpenSSH
// refuses such a network in Match Address for the same reason.
func parseNetwork(s string) (netip.Prefix, error) {
	var pfx netip.Prefix
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if m := p.Masked(); m != p {
			return netip.Prefix{}, &hostBitsError{network: m, addr: p.Addr()}
		}
		pfx = p
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if a.Zone() != "" {
			return netip.Prefix{}, errors.New("zones are not allowed")
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	if a := pfx.Addr(); a.Is4In6() && pfx.Bits() >= 96 {
		pfx = netip.PrefixFrom(a.Unmap(), pfx.Bits()-96)
	}
	return pfx.Masked(), nil
}

func parseNetworks(p *problems, key string, raw []string, allowAll bool) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(raw))
	for i, s := range raw {
		k := fmt.Sprintf("%s[%d]", key, i)
		pfx, err := parseNetwork(s)
		if hb, ok := errors.AsType[*hostBitsError](err); ok {
			p.addf(k, "%q has %v", s, hb)
			continue
		}
		if err != nil {
			p.addf(k, "%q is not a CIDR network or IP address", s)
			continue
		}
		if !allowAll && pfx.Bits() == 0 {
			// Trusting everyone silently turns the second factor off.
			p.addf(k, "%q would trust every address, so nobody would be asked for a code", s)
			continue
		}
		if !allowAll && pfx.Bits() < minTrustedBits {
			// 0.0.0.0/1 and 128.0.0.0/1 together are /0 by other means.
			p.addf(k, "%q is broader than a /%d: it would trust a large part of the internet", s, minTrustedBits)
			continue
		}
		out = append(out, pfx)
	}
	return out
}

// splitHostPort checks host:port with a numeric port; the host may be empty (all addresses).
func splitHostPort(addr string) (host string, port int, err error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		if ae, ok := errors.AsType[*net.AddrError](err); ok {
			return "", 0, fmt.Errorf("%q is not host:port (%s)", addr, ae.Err)
		}
		return "", 0, fmt.Errorf("%q is not host:port", addr)
	}
	port, err = strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, ps)
	}
	if host != "" && !validHost(host) {
		return "", 0, fmt.Errorf("%q: %q is not an IP address or host name", addr, host)
	}
	return host, port, nil
}

func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

func checkListen(p *problems, key, addr string, required bool) {
	if addr == "" {
		if required {
			p.addf(key, "required (host:port)")
		}
		return
	}
	if _, _, err := splitHostPort(addr); err != nil {
		p.add(key, err)
	}
}

// checkListenConflicts catches two listeners on one port, which would fail at start with a
// less helpful "address already in use". Port 0 (pick a free port) never conflicts.
func checkListenConflicts(p *problems, keys, addrs []string) {
	wildcard := func(h string) bool {
		if h == "" {
			return true
		}
		a, err := netip.ParseAddr(h)
		return err == nil && a.IsUnspecified()
	}
	for i := range addrs {
		hi, pi, err := splitHostPort(addrs[i])
		if addrs[i] == "" || err != nil || pi == 0 {
			continue
		}
		for j := range i {
			hj, pj, err := splitHostPort(addrs[j])
			if addrs[j] == "" || err != nil || pj != pi {
				continue
			}
			if hi == hj || wildcard(hi) || wildcard(hj) {
				p.addf(keys[i], "%q uses the same port as %s (%q)", addrs[i], keys[j], addrs[j])
				break
			}
		}
	}
}

func checkUpstream(p *problems, addr string) {
	const key = "upstream.address"
	if addr == "" {
		p.addf(key, "required (host:port)")
		return
	}
	host, port, err := splitHostPort(addr)
	switch {
	case err != nil:
		p.add(key, err)
	case host == "":
		p.addf(key, "%q has no host", addr)
	case port == 0:
		p.addf(key, "%q: port 0 cannot be dialled", addr)
	}
}

// checkKnownHosts requires a readable file with at least one usable key, parsed the way the
// daemon will parse it (knownhosts.New), so that a broken file fails here and not at the first
// login.
func checkKnownHosts(p *problems, key, path string) {
	if path == "" {
		p.addf(key, "required (the lander's host keys, e.g. from ssh-keyscan)")
		return
	}
	data, err := readSmall(path)
	if errors.Is(err, fs.ErrNotExist) {
		p.addf(key, "%s does not exist: record the lander's host key first (ssh-keyscan -p PORT HOST > %s)", path, path)
		return
	}
	if err != nil {
		p.add(key, err)
		return
	}
	keys := 0
	for i, line := range bytes.Split(data, []byte("\n")) {
		marker, _, _, _, _, err := ssh.ParseKnownHosts(line)
		switch {
		case errors.Is(err, io.EOF): // blank line or comment
		case err != nil:
			p.addf(key, "%s:%d: %v", path, i+1, err)
			return
		case marker != "revoked":
			keys++
		}
	}
	if _, err := knownhosts.New(path); err != nil {
		p.add(key, err)
		return
	}
	if keys == 0 {
		p.addf(key, "%s holds no host key (add the lander's: ssh-keyscan -p PORT HOST >> %s)", path, path)
	}
}

// checkHostKey accepts a parseable unencrypted private key, or a missing file that the daemon
// can create on first start.
func checkHostKey(p *problems, key, path string) {
	if path == "" {
		p.addf(key, "empty path")
		return
	}
	data, err := readSmall(path)
	if missing(err) {
		if err := creatable(path); err != nil {
			p.add(key, err)
		}
		return
	}
	if err != nil {
		p.add(key, err)
		return
	}
	if _, err := ssh.ParsePrivateKey(data); err != nil {
		if _, ok := errors.AsType[*ssh.PassphraseMissingError](err); ok {
			p.addf(key, "%s is protected by a passphrase; the daemon needs an unencrypted key", path)
			return
		}
		p.addf(key, "%s is not a private key (%v)", path, err)
	}
}

// checkStatePath accepts a file that is not a directory, or a missing one that can be created.
func checkStatePath(p *problems, key, path string) {
	if path == "" {
		p.addf(key, "required (a file path)")
		return
	}
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		p.addf(key, "%s is a directory, not a file", path)
	case missing(err):
		if err := creatable(path); err != nil {
			p.add(key, err)
		}
	case err != nil:
		p.add(key, err)
	}
}

// missing reports whether err says a file is absent, including ENOTDIR: a path through a
// regular file, which creatable then explains.
func missing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// creatable reports whether a missing file's directory exists or could be made: the nearest
// existing ancestor must be a directory. Write permission is not checked, because `config
// check` may run as another user than the daemon.
func creatable(path string) error {
	dir := filepath.Dir(path)
	for {
		fi, err := os.Stat(dir)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s: %s is not a directory", path, dir)
			}
			return nil
		}
		if !missing(err) {
			return err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil
		}
		dir = parent
	}
}

func checkTLS(p *problems, cert, key string) {
	switch {
	case cert == "" && key == "":
		return
	case cert == "":
		p.addf("enroll.tls_cert", "required when enroll.tls_key is set")
	case key == "":
		p.addf("enroll.tls_key", "required when enroll.tls_cert is set")
	default:
		if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
			p.add("enroll.tls_cert", err)
		}
	}
}

// readSmall reads a key or known_hosts file. It refuses anything but a regular file (opening a
// FIFO would hang `config check`) and anything implausibly large.
func readSmall(path string) ([]byte, error) {
	// O_NONBLOCK makes opening a FIFO return at once; it does not affect reading a regular file.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxFileSize)
	}
	return data, nil
}

// checkStore checks node_name and the store keys, and sets node_name to the host name when it
// is empty.
func (c *Config) checkStore(p *problems) {
	if c.NodeName == "" {
		if h, err := os.Hostname(); err == nil {
			c.NodeName = h
		}
	}
	if !validNodeName(c.NodeName) {
		p.addf("node_name", "%q is not a node name (1-64 letters, digits, '.', '_', '-')", c.NodeName)
	}
	switch c.Store.Backend {
	case "bolt":
		checkStatePath(p, "db", c.DB)
		return
	case "etcd":
	default:
		p.addf("store.backend", "%q is not supported (supported: bolt, etcd)", c.Store.Backend)
		return
	}
	e := c.Store.Etcd
	if len(e.Endpoints) == 0 {
		p.addf("store.etcd.endpoints", "at least one endpoint is required with store.backend etcd")
	}
	for i, ep := range e.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
			p.addf(fmt.Sprintf("store.etcd.endpoints[%d]", i), "%q is not an etcd client URL like https://10.0.0.11:2379", ep)
		}
	}
	if len(e.Prefix) < 2 || e.Prefix[0] != '/' || e.Prefix[len(e.Prefix)-1] != '/' {
		p.addf("store.etcd.prefix", "%q must start and end with \"/\" and name something, like \"/gatekeeper/\"", e.Prefix)
	}
	if e.DialTimeout <= 0 {
		p.addf("store.etcd.dial_timeout", "must be positive")
	}
	if e.RequestTimeout <= 0 {
		p.addf("store.etcd.request_timeout", "must be positive")
	}
	if (e.TLSCert == "") != (e.TLSKey == "") {
		p.addf("store.etcd.tls_cert", "tls_cert and tls_key go together")
	}
	for key, f := range map[string]string{"store.etcd.tls_ca": e.TLSCA, "store.etcd.tls_cert": e.TLSCert, "store.etcd.tls_key": e.TLSKey, "store.etcd.password_file": e.PasswordFile} {
		if f == "" {
			continue
		}
		if _, err := readSmall(f); err != nil {
			p.add(key, err)
		}
	}
	if (e.Username == "") != (e.PasswordFile == "") {
		p.addf("store.etcd.username", "username and password_file go together")
	}
}

// validNodeName reports whether n can name a node in store keys, logs and metrics labels.
func validNodeName(n string) bool {
	if n == "" || len(n) > 64 {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Bounds of relay.window: OpenSSH's own window at least (less would only slow
// transfers down), and at most what one channel may hold in memory.
const (
	minRelayWindow = 2 << 20
	maxRelayWindow = 64 << 20
)

// Bounds of the keys settings.
const (
	minCertValidity = 10 * time.Second
	maxCertValidity = time.Hour
	maxRemember     = 7 * 24 * time.Hour
	maxAutomation   = 366 * 24 * time.Hour
)

// checkKeys checks the keys section. With keys.enabled the lander CA file must be readable or
// creatable: the daemon creates it on first start.
func (c *Config) checkKeys(p *problems) {
	k := c.Keys
	if k.CertValidity < minCertValidity || k.CertValidity > maxCertValidity {
		p.addf("keys.cert_validity", "must be between %s and %s, not %s", minCertValidity, maxCertValidity, k.CertValidity)
	}
	if k.Remember < 0 || k.Remember > maxRemember {
		p.addf("keys.remember", "must be between 0s (off) and %s, not %s", maxRemember, k.Remember)
	}
	if k.AutomationMaxLifetime < time.Hour || k.AutomationMaxLifetime > maxAutomation {
		p.addf("keys.automation_max_lifetime", "must be between 1h and %s, not %s", maxAutomation, k.AutomationMaxLifetime)
	}
	if !k.Enabled {
		return
	}
	checkStatePath(p, "keys.lander_ca_file", k.LanderCAFile)
	if k.LanderCAFile != "" {
		if f, err := os.Open(k.LanderCAFile); err == nil {
			f.Close()
		} else if !missing(err) {
			p.addf("keys.lander_ca_file", "cannot be read: %v", err)
		}
		for _, other := range []struct{ key, path string }{{"db", c.DB}, {"secret_key_file", c.SecretKeyFile}} {
			if other.path != "" && filepath.Clean(other.path) == filepath.Clean(k.LanderCAFile) {
				p.addf("keys.lander_ca_file", "must not be the same file as %s", other.key)
			}
		}
		for _, hk := range c.HostKeyFiles {
			if filepath.Clean(hk) == filepath.Clean(k.LanderCAFile) {
				p.addf("keys.lander_ca_file", "must not be one of host_key_files: the lander would trust the gatekeeper's host key as a user CA")
			}
		}
	}
}

// checkRelay parses relay.window and relay.window_total.
func (c *Config) checkRelay(p *problems) {
	var err error
	windowOK := false
	if c.Relay.WindowBytes, err = ParseSize(c.Relay.Window); err != nil {
		p.addf("relay.window", "%v", err)
	} else if c.Relay.WindowBytes < minRelayWindow || c.Relay.WindowBytes > maxRelayWindow {
		p.addf("relay.window", "must be between 2MiB and 64MiB, not %s", c.Relay.Window)
	} else {
		windowOK = true
	}
	if c.Relay.WindowTotalBytes, err = ParseSize(c.Relay.WindowTotal); err != nil {
		p.addf("relay.window_total", "%v", err)
	} else if windowOK && c.Relay.WindowTotalBytes < c.Relay.WindowBytes {
		p.addf("relay.window_total", "must be at least relay.window (%s)", c.Relay.Window)
	}
}

// ParseSize reads a size in bytes: a whole number, optionally followed by a
// binary unit (KiB, MiB, GiB; K, M, G and KB, MB, GB mean the same).
func ParseSize(s string) (int64, error) {
	notASize := fmt.Errorf("%q is not a size (such as 16MiB)", s)
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, notASize
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, notASize
	}
	var unit int64
	switch strings.ToUpper(strings.TrimSpace(t[i:])) {
	case "", "B":
		unit = 1
	case "K", "KB", "KIB":
		unit = 1 << 10
	case "M", "MB", "MIB":
		unit = 1 << 20
	case "G", "GB", "GIB":
		unit = 1 << 30
	default:
		return 0, notASize
	}
	if n > (1<<40)/unit {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * unit, nil
}
