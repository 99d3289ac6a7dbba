package sshlink

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gatekeeper/gatekeeper/store"
)

// The key operations of enroll.Service are what the daemon wires.
var _ KeyManager = (*countingLinker)(nil)

// keysOn enables SSH keys in the test server.
func keysOn(e *env) { e.srv.KeysEnabled = true }

// publicKeyLine returns a fresh ed25519 public key line with comment, and its fingerprint.
func publicKeyLine(t *testing.T, comment string) (line, fp string) {
	t.Helper()
	pub := newSigner(t).PublicKey()
	line = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if comment != "" {
		line += " " + comment
	}
	return line, ssh.FingerprintSHA256(pub)
}

// keysSession links a device for alice, signs in with both factors, starts a session and opens
// the SSH keys menu.
func keysSession(e *env, pty bool) *clientSession {
	e.t.Helper()
	secret, _ := e.link(testUser)
	c := e.mustDialCode(testUser, testPassword, "", e.code(testUser, secret))
	cs := startSession(e.t, c, pty, "")
	out := cs.waitFor(promptChoiceKeys)
	if !strings.Contains(out, "3) SSH keys") || !strings.Contains(out, "4) Quit") {
		e.t.Fatalf("the menu has no SSH keys:\n%s", out)
	}
	cs.write("3" + enter(pty))
	cs.waitFor(promptKeys)
	return cs
}

func (e *env) keys() []store.Key {
	e.t.Helper()
	keys, err := e.svc.Keys(context.Background(), testUser)
	if err != nil {
		e.t.Fatal(err)
	}
	return keys
}

func TestMenuKeys(t *testing.T) {
	t.Parallel()
	for _, pty := range []bool{true, false} {
		name := map[bool]string{true: "pty", false: "no pty"}[pty]
		nl := enter(pty)
		t.Run(name, func(t *testing.T) {
			t.Parallel()

			t.Run("add, list, revoke by number", func(t *testing.T) {
				t.Parallel()
				e := newEnv(t, keysOn)
				cs := keysSession(e, pty)
				line, fp := publicKeyLine(t, "alice@laptop")
				cs.write("a" + nl)
				cs.waitFor(promptPasteKey)
				cs.write(line + nl)
				cs.waitFor(fmt.Sprintf(promptLabel, "alice@laptop"))
				cs.write("work laptop" + nl)
				cs.waitFor(promptAutomation)
				cs.write(nl)
				cs.waitCount(promptKeys, 2)
				cs.write("r" + nl)
				cs.waitFor(promptRevoke)
				cs.write("7" + nl) // no such number
				cs.waitCount(promptRevoke, 2)
				cs.write("1" + nl)
				cs.waitFor("It stops logging in at once. [y/N] ")
				cs.write("y" + nl)
				cs.waitCount(promptKeys, 3)
				cs.write("b" + nl)
				cs.waitCount(promptChoiceKeys, 2)
				cs.write("4" + nl)
				exit, out := cs.wait()
				if exit != 0 {
					t.Errorf("exit %d, want 0", exit)
				}
				for _, w := range []string{"You have no SSH keys registered here.",
					`SSH key "work laptop" (` + fp + `) added. It replaces your password`,
					"Your SSH keys (1):", "  1) work laptop (ssh-ed25519, personal)", "     " + fp,
					"from anywhere, never expires, never used", `No key "7" here: type its number (1 to 1)`,
					`Revoke "work laptop" (` + fp + `)?`,
					`SSH key "work laptop" (` + fp + `) revoked: it no longer logs in. No live session had logged in with it.`,
					"Bye."} {
					if !strings.Contains(out, w) {
						t.Errorf("no %q in the output:\n%s", w, out)
					}
				}
				if keys := e.keys(); len(keys) != 0 {
					t.Errorf("%d keys left, want 0", len(keys))
				}
				ev, _ := e.st.Events(store.EventQuery{User: testUser})
				var kinds []string
				for _, x := range ev {
					if x.Kind == store.EventKeyAdded || x.Kind == store.EventKeyRevoked {
						kinds = append(kinds, x.Kind)
						if x.Door != store.DoorLinking || !strings.HasPrefix(x.Actor, "ssh-link ") {
							t.Errorf("event %+v not by ssh-link at door %s", x, store.DoorLinking)
						}
					}
				}
				if strings.Join(kinds, ",") != store.EventKeyAdded+","+store.EventKeyRevoked {
					t.Errorf("key events %v", kinds)
				}
			})

			t.Run("automation key, revoked by fingerprint", func(t *testing.T) {
				t.Parallel()
				e := newEnv(t, keysOn)
				e.svc.EndKeySessions = func(user, fp string) int { return 2 }
				start := e.now()
				cs := keysSession(e, pty)
				line, fp := publicKeyLine(t, "")
				cs.write("a" + nl)
				cs.waitFor(promptPasteKey)
				cs.write(line + nl)
				cs.waitFor(`Label (for example "work laptop"): `)
				cs.write("backup" + nl)
				cs.waitFor(promptAutomation)
				cs.write("y" + nl)
				cs.waitFor(promptFrom)
				cs.write("192.0.2.7, 10.1.0.0/16" + nl)
				cs.waitFor(promptDays)
				cs.write("soon" + nl)
				cs.waitCount(promptDays, 2)
				cs.write("7" + nl)
				cs.waitFor(promptCommand)
				cs.write("rsync --server --sender . /data" + nl)
				cs.waitCount(promptKeys, 2)
				cs.write("r" + nl)
				cs.waitFor(promptRevoke)
				cs.write(strings.TrimPrefix(fp, "SHA256:") + nl)
				cs.waitFor("[y/N] ")
				cs.write("yes" + nl)
				cs.waitCount(promptKeys, 3)
				cs.write("q" + nl)
				exit, out := cs.wait()
				if exit != 0 {
					t.Errorf("exit %d, want 0", exit)
				}
				// The key expires 7 days after it was added, between start and now: either
				// end's day, should the test cross midnight.
				expires := func(at time.Time) string {
					return `from 192.0.2.7/32, 10.1.0.0/16, expires ` + formatTime(at.Add(7 * 24 * time.Hour))[:10]
				}
				if w1, w2 := expires(start), expires(e.now()); !strings.Contains(out, w1) && !strings.Contains(out, w2) {
					t.Errorf("no %q in the output:\n%s", w1, out)
				}
				for _, w := range []string{`SSH key "backup" (` + fp + `) added. It logs in without a code from 192.0.2.7/32, 10.1.0.0/16 until `,
					"Please type a whole number from 1 to 3650, or nothing.",
					"  1) backup (ssh-ed25519, automation)",
					`only runs "rsync --server --sender . /data"`,
					"2 live sessions that had logged in with it were ended."} {
					if !strings.Contains(out, w) {
						t.Errorf("no %q in the output:\n%s", w, out)
					}
				}
				if keys := e.keys(); len(keys) != 0 {
					t.Errorf("%d keys left, want 0", len(keys))
				}
			})

			t.Run("refused keys", func(t *testing.T) {
				t.Parallel()
				e := newEnv(t, keysOn)
				cs := keysSession(e, pty)
				line, _ := publicKeyLine(t, "mine")
				steps := []struct {
					input []string // the answers, the first after "a"
					want  string
				}{
					{[]string{"hello world"}, "The key was not added: not an SSH public key"},
					{[]string{`from="10.0.0.0/8" ` + line}, "The key was not added: options before the key"},
					{[]string{line, "", "y", "", "", ""}, "The key was not added: an automation key needs the networks it may log in from."},
					{[]string{line, "", "y", "10.1.0.0/16", "400", ""}, "The key was not added: an automation key lives at most"},
					{[]string{line, "", "n"}, `SSH key "mine"`},
					{[]string{line, "again", "n"}, "The key was not added: key already registered: SHA256:"},
					{[]string{""}, msgNothingChange},
				}
				for i, st := range steps {
					cs.write("a" + nl)
					cs.waitCount(promptPasteKey, i+1)
					for _, in := range st.input {
						cs.write(in + nl)
					}
					cs.waitCount(promptKeys, i+2)
					if out := cs.out.String(); !strings.Contains(out, st.want) {
						t.Errorf("step %d: no %q in the output:\n%s", i, st.want, out)
					}
				}
				cs.write("x" + nl)
				cs.waitFor(msgBadKeysChoice)
				cs.write("q" + nl)
				if exit, out := cs.wait(); exit != 0 {
					t.Errorf("exit %d:\n%s", exit, out)
				}
				if keys := e.keys(); len(keys) != 1 || keys[0].Label != "mine" {
					t.Errorf("keys %+v, want the one labelled mine", keys)
				}
			})

			t.Run("a key line longer than other answers", func(t *testing.T) {
				t.Parallel()
				e := newEnv(t, keysOn)
				cs := keysSession(e, pty)
				comment := strings.Repeat("c", 400) // the line is over maxLine
				line, fp := publicKeyLine(t, comment)
				cs.write("a" + nl)
				cs.waitFor(promptPasteKey)
				cs.write(line + nl)
				cs.waitFor(`Label (Enter for "` + strings.Repeat("c", 40) + `..."): `)
				cs.write(nl) // Enter takes the comment
				cs.waitFor(promptAutomation)
				cs.write(nl)
				cs.waitCount(promptKeys, 2)
				cs.write("q" + nl)
				if exit, out := cs.wait(); exit != 0 || !strings.Contains(out, fp) {
					t.Errorf("exit %d:\n%s", exit, out)
				}
				if keys := e.keys(); len(keys) != 1 || keys[0].Fingerprint != fp || keys[0].Label != strings.Repeat("c", 100) {
					t.Errorf("keys %+v", keys)
				}
			})
		})
	}
}

func TestMenuWithoutKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cs, _, _ := linkedSession(e, false)
	cs.write("3\n")
	exit, out := cs.wait()
	if exit != 0 || strings.Contains(out, "SSH keys") || !strings.Contains(out, "Bye.") {
		t.Errorf("keys off: exit %d, output:\n%s", exit, out)
	}
}

func TestMenuKeysReset(t *testing.T) {
	t.Parallel()
	e := newEnv(t, keysOn)
	cs := keysSession(e, false)
	line, _ := publicKeyLine(t, "late")
	cs.write("a\n")
	cs.waitFor(promptPasteKey)
	cs.write(line + "\n")
	cs.waitFor(fmt.Sprintf(promptLabel, "late"))
	// An admin resets alice while the question waits: nothing is added.
	e.srv.EndUser(testUser)
	exit, out := cs.wait()
	if exit != 1 || !strings.Contains(out, "An admin reset your account") {
		t.Errorf("exit %d, output:\n%s", exit, out)
	}
	if keys := e.keys(); len(keys) != 0 {
		t.Errorf("%d keys added after the reset", len(keys))
	}
}
