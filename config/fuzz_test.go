package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to Load as a config file. It must never panic, and whatever
// it accepts must print (Effective) as YAML that loads back to the same settings.
func FuzzLoad(f *testing.F) {
	cleanEnv(f)
	dir := f.TempDir()
	// File paths come from the environment, which beats the file, so that fuzzed values cannot
	// make Validate probe paths outside the test's directory.
	f.Setenv("GATEKEEPER_UPSTREAM_KNOWN_HOSTS", writeFile(f, filepath.Join(dir, "known_hosts"), knownHostsLine(f)))
	f.Setenv("GATEKEEPER_HOST_KEY_FILES", filepath.Join(dir, "host_key"))
	f.Setenv("GATEKEEPER_DB", filepath.Join(dir, "db"))
	f.Setenv("GATEKEEPER_SECRET_KEY_FILE", filepath.Join(dir, "secret.key"))
	f.Setenv("GATEKEEPER_ADMIN_SOCKET", filepath.Join(dir, "admin.sock"))
	f.Setenv("GATEKEEPER_ENROLL_TLS_CERT", "")

	f.Add(Example())
	f.Add([]byte(""))
	f.Add([]byte("listen: [\n"))
	f.Add([]byte("trusted_networks: [10.0.0.0/8, \"::ffff:10.0.0.0/104\"]\ntotp: {skew: 3}\n"))
	f.Add([]byte("rate_limit: &a {failures: 2}\nenroll: *a\n"))
	f.Add([]byte("a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\ntrusted_networks: *c\n"))
	f.Add([]byte("enroll:\n  allowed_networks: \"10.0.0.0/8,fd00::/8\"\n  confirm_within: 1h\n"))
	f.Add([]byte("listen: 2001-01-01\nmax_startups: 1e3\nproxy_protocol: !!binary aGk=\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		file := filepath.Join(t.TempDir(), "g.yaml")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(file, nil)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		out := c.Effective()
		again := filepath.Join(t.TempDir(), "again.yaml")
		if err := os.WriteFile(again, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
		c2, err := Load(again, nil)
		if err != nil {
			t.Fatalf("Effective output does not load: %v\n%s", err, out)
		}
		body := func(s string) string { _, b, _ := strings.Cut(s, "\n"); return b }
		if body(c2.Effective()) != body(out) {
			t.Fatalf("round trip differs:\n%s\n---\n%s", out, c2.Effective())
		}
	})
}
