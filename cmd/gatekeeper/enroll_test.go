package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
)

// codeFor is the RFC 6238 code of a base32 secret at time at, computed here rather than by the
// code under test.
func codeFor(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	key, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(secret)
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha1.New, key)
	mac.Write(binary.BigEndian.AppendUint64(nil, uint64(at.Unix()/30)))
	h := mac.Sum(nil)
	off := h[len(h)-1] & 0x0f
	return fmt.Sprintf("%06d", (binary.BigEndian.Uint32(h[off:off+4])&0x7fffffff)%1_000_000)
}

// console runs `gatekeeper args... --config` with standard input and output as pipes, the way
// a person at the console (or a script) drives it.
type console struct {
	in   *io.PipeWriter
	out  *io.PipeReader
	seen strings.Builder
	done chan error
}

func startConsole(t *testing.T, e env, args ...string) *console {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	c := &console{in: inW, out: outR, done: make(chan error, 1)}
	root := newRootCmd()
	root.SetIn(inR)
	root.SetOut(outW)
	root.SetErr(io.Discard)
	root.SetArgs(append(args, "--config", e.config))
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c.done <- root.ExecuteContext(ctx)
		outW.Close()
		inR.Close()
	}()
	return c
}

// readUntil reads the output until it has shown want, and returns everything read so far.
func (c *console) readUntil(t *testing.T, want string) string {
	t.Helper()
	buf := make([]byte, 4096)
	for !strings.Contains(c.seen.String(), want) {
		n, err := c.out.Read(buf)
		c.seen.Write(buf[:n])
		if err != nil {
			t.Fatalf("output ended before %q: %v\n%s", want, err, c.seen.String())
		}
	}
	s := c.seen.String()
	c.seen.Reset()
	return s
}

func (c *console) typeLine(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(c.in, line+"\n"); err != nil {
		t.Fatalf("typing %q: %v", line, err)
	}
}

// finish closes the input and returns the rest of the output and the command's error.
func (c *console) finish(t *testing.T) (string, error) {
	t.Helper()
	c.in.Close()
	rest, _ := io.ReadAll(c.out)
	select {
	case err := <-c.done:
		return c.seen.String() + string(rest), err
	case <-time.After(30 * time.Second):
		t.Fatal("the command did not end")
		return "", nil
	}
}

// TestEnrollReplace: `gatekeeper enroll --replace USER` over the admin socket and on the
// database directly: the QR, the clock message, the new recovery codes; afterwards only the
// new phone works, and the audit log names the console.
func TestEnrollReplace(t *testing.T) {
	for _, daemon := range []bool{false, true} {
		t.Run(map[bool]string{false: "database", true: "daemon"}[daemon], func(t *testing.T) {
			e := newEnv(t, "totp:\n  issuer: \"Example HPC\"\n")
			actor := enroll.ActorConsole
			var st store.Store
			if daemon {
				st = startDaemon(t, e, &frontDoor{})
				seedActive(t, st, "alice", "aaaa-bbbb-cc")
				actor = me
			} else {
				e.withStore(t, func(s store.Store) { seedActive(t, s, "alice", "aaaa-bbbb-cc") })
			}

			c := startConsole(t, e, "enroll", "--replace", "alice")
			shown := c.readUntil(t, "Code from your app: ")
			for _, want := range []string{"Replacing the authenticator app of alice.", "otpauth URI: otpauth://totp/Example%20HPC:alice?secret=", "▀"} {
				if !strings.Contains(shown, want) {
					t.Errorf("the command did not show %q:\n%s", want, shown)
				}
			}
			var secret string
			for _, l := range strings.Split(shown, "\n") {
				if s, ok := strings.CutPrefix(l, "Secret: "); ok {
					secret = strings.ReplaceAll(s, " ", "")
				}
			}
			now := time.Now()
			c.typeLine(t, codeFor(t, secret, now.Add(-4*time.Minute)))
			c.readUntil(t, "Your phone's clock is about 4 minutes slow. Turn on automatic date and time on the phone, then try a new code.\nCode from your app: ")
			c.typeLine(t, codeFor(t, secret, now))
			out, err := c.finish(t)
			if err != nil {
				t.Fatalf("enroll --replace: %v\n%s", err, out)
			}
			if !strings.Contains(out, "Device replaced for alice.") || strings.Count(out, "\n    ") != enroll.RecoveryCodes {
				t.Errorf("output after the code:\n%s", out)
			}

			check := func(st store.Store) {
				t.Helper()
				var stored []byte
				errLook := errors.New("look")
				_ = st.Update("alice", func(u *store.User) error {
					stored = bytes.Clone(u.Secret)
					if enroll.VerifyRecovery(u, "aaaa-bbbb-cc") {
						t.Error("the old recovery code still works")
					}
					return errLook
				})
				if got := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(stored); got != secret {
					t.Errorf("stored secret %s, want the new one %s", got, secret)
				}
				ev, err := st.Events(store.EventQuery{User: "alice"})
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, e := range ev {
					got = append(got, e.Kind+"/"+e.Actor+"/"+e.Door)
				}
				want := []string{store.EventReplaceStarted, store.EventQRShown, store.EventDeviceReplaced}
				for i := range want {
					want[i] += "/" + actor + "/" + store.DoorConsole
				}
				if strings.Join(got, " ") != strings.Join(want, " ") {
					t.Errorf("audit = %v\nwant    %v", got, want)
				}
			}
			if daemon {
				check(st)
			} else {
				e.withStore(t, check)
			}
		})
	}
}

// TestEnrollActiveUser: without --replace an active user is refused, saying how to replace;
// --replace refuses a user without a device, and a replacement ended without a code is
// cancelled.
func TestEnrollActiveUser(t *testing.T) {
	for _, daemon := range []bool{false, true} {
		t.Run(map[bool]string{false: "database", true: "daemon"}[daemon], func(t *testing.T) {
			e := newEnv(t, "")
			var st store.Store
			if daemon {
				st = startDaemon(t, e, &frontDoor{})
				seedActive(t, st, "alice")
			} else {
				e.withStore(t, func(s store.Store) { seedActive(t, s, "alice") })
			}
			out, _, err := e.run(t, "enroll", "alice")
			if !errors.Is(err, enroll.ErrAlreadyLinked) || !strings.Contains(err.Error(), "gatekeeper enroll --replace alice") ||
				strings.Contains(out, "otpauth") {
				t.Errorf("enroll of an active user = %v, printed %q; want refused with a hint at --replace", err, out)
			}
			if _, _, err := e.run(t, "enroll", "--replace", "bob"); !errors.Is(err, enroll.ErrNotLinked) {
				t.Errorf("enroll --replace of a user without a device = %v, want ErrNotLinked", err)
			}
			// No code: the replacement is dropped again, the old phone stays.
			out, _, err = e.run(t, "enroll", "--replace", "alice")
			if err == nil || err.Error() != "no code given; the replacement was cancelled and your current phone keeps working" ||
				!strings.Contains(out, "otpauth") {
				t.Errorf("enroll --replace without a code = %v", err)
			}
			look := func(st store.Store) {
				if u, err := st.Get("alice"); err != nil || u.State != store.StateActive || !u.NextSince.IsZero() {
					t.Errorf("alice after the cancelled replacement: %+v, %v", u, err)
				}
				secret, _ := storedSecret(t, st, "alice")
				if !bytes.Equal(secret, seedSecret) {
					t.Error("the old secret changed")
				}
			}
			if daemon {
				look(st)
			} else {
				e.withStore(t, look)
			}
		})
	}
}
