package sshlink

import (
	"strings"
	"testing"
)

// TestOpenSSHMenuKeys drives the SSH keys menu with the real OpenSSH client through a pty
// (-tt): a user who signed in with both factors adds a key by pasting its line, sees it listed
// with its fingerprint (computed here with ssh.FingerprintSHA256), and revokes it.
func TestOpenSSHMenuKeys(t *testing.T) {
	t.Parallel()
	requireTool(t, "ssh")
	e := newEnv(t, keysOn)
	secret, _ := e.link(testUser)
	r := e.opensshCode(testUser, testPassword, "", e.code(testUser, secret))
	r.waitFor(promptChoiceKeys)
	r.typeLine("3")
	r.waitFor(promptKeys)
	line, fp := publicKeyLine(t, "alice@laptop")
	r.typeLine("a")
	r.waitFor(promptPasteKey)
	r.typeLine(line)
	r.waitFor(`Label (Enter for "alice@laptop"): `)
	r.typeLine("")
	r.waitFor(promptAutomation)
	r.typeLine("n")
	out := r.waitCount(promptKeys, 2)
	for _, w := range []string{"Public key: " + line + "\r\n", `SSH key "alice@laptop" (` + fp + `) added.`,
		"Your SSH keys (1):\r\n  1) alice@laptop (ssh-ed25519, personal)\r\n     " + fp + "\r\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("no %q on stdout:\n%s", w, out)
		}
	}
	if keys := e.keys(); len(keys) != 1 || keys[0].Fingerprint != fp || keys[0].AddedBy != "self" {
		t.Fatalf("stored keys %+v", keys)
	}
	r.typeLine("r")
	r.waitFor(promptRevoke)
	r.typeLine(fp)
	r.waitFor("It stops logging in at once. [y/N] ")
	r.typeLine("y")
	out = r.waitCount(promptKeys, 3)
	if !strings.Contains(out, `SSH key "alice@laptop" (`+fp+`) revoked: it no longer logs in.`) {
		t.Errorf("no revoke message on stdout:\n%s", out)
	}
	r.typeLine("b")
	r.waitCount(promptChoiceKeys, 2)
	r.typeLine("4")
	if exit := r.wait(); exit != 0 {
		t.Fatalf("ssh exit %d; stdout:\n%s\nstderr:\n%s", exit, r.stdout.String(), r.stderr.String())
	}
	after := r.stdout.String()[len(out):]
	if strings.Contains(after, fp) || !strings.Contains(after, "Bye.") {
		t.Errorf("after the revoke:\n%s", after)
	}
	if keys := e.keys(); len(keys) != 0 {
		t.Errorf("%d keys left after the revoke", len(keys))
	}
}
