package e2e

import (
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
)

// The PROXY protocol tests put a load balancer between the OpenSSH client and the gatekeeper:
// ssh's ProxyCommand is this test binary again (TestProxyHelperProcess), which connects from the
// balancer's source address, sends a PROXY header and then relays ssh's bytes. The balancer,
// 127.0.0.2, is listed in proxy_protocol_from and is also inside trusted_networks, as a balancer
// on the cluster's own network would be: a connection through it must be judged by the client
// address in the header, never by the balancer's.

const (
	// balancerAddr is the load balancer's source address (in proxy_protocol_from and in
	// trusted_networks).
	balancerAddr = "127.0.0.2"
	// outsideClient is a client address outside every trusted network (TEST-NET-1: it only
	// appears inside headers, nothing is ever sent to it).
	outsideClient = "192.0.2.10"
	// insideClient is a client address inside trusted_networks.
	insideClient = trustedAddr
)

// Environment of the ProxyCommand helper.
const (
	helperEnv       = "GK_PROXY_HELPER" // "1" turns TestProxyHelperProcess into the helper
	helperBindEnv   = "GK_PROXY_BIND"   // source address to connect from
	helperTargetEnv = "GK_PROXY_TARGET" // the gatekeeper's host:port
	helperHeaderEnv = "GK_PROXY_HEADER" // hex of the bytes to send first ("" = none)
)

// proxySettings is a gkOptions.edit that turns the PROXY protocol on for balancerAddr.
func proxySettings(cfg string) string {
	return cfg + "proxy_protocol: true\nproxy_protocol_from: [\"" + balancerAddr + "/32\"]\n"
}

// v2Sig is the signature that starts every PROXY v2 header.
const v2Sig = "\r\n\r\n\x00\r\nQUIT\n"

// v2Local is a v2 LOCAL header, as HAProxy's health checks send with check-send-proxy.
func v2Local() string { return v2Sig + "\x20\x00\x00\x00" }

// v2TCP4 is a v2 PROXY header for a TCP over IPv4 connection from src:40000 to 127.0.0.1:22.
func v2TCP4(src string) string {
	b := []byte(v2Sig + "\x21\x11\x00\x0c")
	s4, d4 := net.ParseIP(src).To4(), net.ParseIP("127.0.0.1").To4()
	b = append(append(b, s4...), d4...)
	return string(append(b, 0x9c, 0x40, 0x00, 0x16)) // ports 40000 and 22, big-endian
}

// v1TCP4 is a v1 header for a connection from src:40000 to 127.0.0.1:22.
func v1TCP4(src string) string { return "PROXY TCP4 " + src + " 127.0.0.1 40000 22\r\n" }

func TestProxyProtocol(t *testing.T) {
	t.Parallel()
	g := ownGatekeeper(t, gkOptions{edit: proxySettings})
	tests := []struct {
		name     string
		from     string // the helper's source address
		header   string
		wantCode bool   // the gatekeeper asks for a verification code
		remote   string // the client address the gatekeeper logs, if checked
	}{
		{name: "v1 outside client", from: balancerAddr, header: v1TCP4(outsideClient), wantCode: true, remote: outsideClient + ":40000"},
		{name: "v1 trusted client", from: balancerAddr, header: v1TCP4(insideClient), remote: insideClient + ":40000"},
		{name: "v2 outside client", from: balancerAddr, header: v2TCP4(outsideClient), wantCode: true, remote: outsideClient + ":40000"},
		{name: "v2 trusted client", from: balancerAddr, header: v2TCP4(insideClient), remote: insideClient + ":40000"},
		// No client address in the header: fail closed, never the (trusted) balancer's address.
		{name: "v1 UNKNOWN", from: balancerAddr, header: "PROXY UNKNOWN\r\n", wantCode: true},
		{name: "v2 LOCAL", from: balancerAddr, header: v2Local(), wantCode: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := enrolledUser(t, g)
			c, opts := proxyClient(t, g, u, tt.from, tt.header)
			if tt.wantCode {
				c.setCode(u.nextCode(t))
			}
			// Without a code file the askpass script refuses a code prompt, so an unexpected
			// "Verification code:" fails the login.
			if r := c.ssh(opts, "echo", "ok"); r.exit != 0 || r.stdout != "ok\n" {
				t.Fatalf("login through the balancer failed: %s", r)
			}
			if tt.wantCode {
				wantPrompts(t, c, "Password:", "Verification code:")
			} else {
				wantPrompts(t, c, "Password:")
			}
			if tt.remote != "" && !strings.Contains(g.userLog(u.name), `"remote":"`+tt.remote) {
				t.Errorf("the gatekeeper's log for %s does not name the client %s:\n%s", u.name, tt.remote, g.userLog(u.name))
			}
		})
	}

	// A listed balancer must send a header: a connection without one, or with a broken one, is
	// closed before anything is asked. A header from a peer not listed (127.0.0.1) is not read
	// as one, and the connection fails as with OpenSSH's sshd: it used to be skipped as a line
	// before the version, and the peer's own address, trusted or not, logged in.
	for _, tt := range []struct{ name, from, header string }{
		{"no header from the balancer", balancerAddr, ""},
		{"broken header from the balancer", balancerAddr, "PROXY TCP4 " + outsideClient + " 127.0.0.1 40000\r\n"},
		{"header from a peer not listed", "127.0.0.1", v1TCP4(insideClient)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newUser(t)
			c, opts := proxyClient(t, g, u, tt.from, tt.header)
			r := c.ssh(opts, "echo", "ok")
			if r.exit != 255 || strings.Contains(r.stdout, "ok") {
				t.Fatalf("expected the connection to be refused, got %s", r)
			}
			if p := c.prompts(); len(p) != 1 || p[0] != "" {
				t.Errorf("prompts %q were asked on a connection without a valid header", p)
			}
		})
	}
}

// proxyClient is a client for u and the ssh options with which it reaches g through the helper:
// connected from the source address from, sending header first.
func proxyClient(t *testing.T, g *gatekeeper, u *user, from, header string) (*client, []string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(self, "'%") {
		t.Fatalf("test binary path %q cannot be quoted for ProxyCommand", self)
	}
	c := newClient(t, u, g.port, "")
	c.extra = append(c.extra, helperEnv+"=1", helperBindEnv+"="+from, helperTargetEnv+"="+g.addr(),
		helperHeaderEnv+"="+hex.EncodeToString([]byte(header)))
	// ssh runs ProxyCommand with the shell, in its own environment (c.env plus c.extra).
	proxyCommand := fmt.Sprintf("'%s' -test.run='^TestProxyHelperProcess$'", self)
	return c, []string{"-o", "ProxyCommand=" + proxyCommand}
}

// TestProxyHelperProcess is not a test on its own: with GK_PROXY_HELPER=1 in its environment the
// test binary is the load balancer of TestProxyProtocol, run by ssh as its ProxyCommand. It
// connects to GK_PROXY_TARGET from GK_PROXY_BIND, sends the bytes of GK_PROXY_HEADER in one
// write (as a balancer does), then relays standard input to the connection and the connection
// to standard output until the gatekeeper closes it.
func TestProxyHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	if err := proxyHelper(); err != nil {
		fmt.Fprintln(os.Stderr, "proxy helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func proxyHelper() error {
	header, err := hex.DecodeString(os.Getenv(helperHeaderEnv))
	if err != nil {
		return err
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(os.Getenv(helperBindEnv))}}
	conn, err := d.Dial("tcp", os.Getenv(helperTargetEnv))
	if err != nil {
		return err
	}
	defer conn.Close()
	if len(header) > 0 {
		if _, err := conn.Write(header); err != nil {
			return err
		}
	}
	go func() {
		_, _ = io.Copy(conn, os.Stdin)
		_ = conn.(*net.TCPConn).CloseWrite()
	}()
	// The session ends when the gatekeeper closes the connection; ssh then closes our stdin.
	_, err = io.Copy(os.Stdout, conn)
	return err
}
