package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
)

// console runs `gatekeeper enroll USER` as the command does against a daemon: enroll.Terminal
// with its own admin socket Client, in this process, typing the given lines.
func console(d *daemon, user string, lines ...string) (string, error) {
	var out strings.Builder
	in := strings.NewReader(strings.Join(lines, "\n") + "\n")
	err := enroll.Terminal(context.Background(), NewClient(d.path), user, in, &out)
	return out.String(), err
}

// secretOf finds the secret the console flow printed.
func secretOf(t *testing.T, out string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if s, ok := strings.CutPrefix(l, "Secret: "); ok {
			return strings.ReplaceAll(s, " ", "")
		}
	}
	t.Fatalf("no secret in the output:\n%s", out)
	return ""
}

// TestConsoleBindingOverSocket: the binding travels in the begin answer and the confirm request,
// and a second process for the same user (another Client) can neither begin nor confirm.
func TestConsoleBindingOverSocket(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	first, second := NewClient(d.path), NewClient(d.path)

	link, binding, err := first.Begin(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(binding) < 20 || strings.Contains(d.log.String(), string(binding)) {
		t.Errorf("binding of %d characters, or the daemon logged it", len(binding))
	}
	good := codeAt(t, link.Secret, d.clock.Now())
	if _, _, err := second.Begin(ctx, "alice"); !errors.Is(err, enroll.ErrPending) {
		t.Errorf("second process Begin = %v, want ErrPending", err)
	}
	for _, b := range []enroll.Binding{"", "guess"} {
		codes, err := second.Confirm(ctx, "alice", b, good)
		if !errors.Is(err, enroll.ErrStartedElsewhere) || codes != nil {
			t.Errorf("second process Confirm with binding %q = %v, want ErrStartedElsewhere", string(b), err)
		}
	}
	// The same refusal for a hand-made request without the binding field.
	status, body := postJSON(t, d.path, "/v1/enroll/confirm", `{"user":"alice","code":"`+good+`"}`)
	if status != http.StatusForbidden || !strings.Contains(body, `"code":"started_elsewhere"`) {
		t.Errorf("confirm without a binding: %d %s", status, body)
	}
	if u, _ := d.st.Get("alice"); u.ConfirmTries != 0 {
		t.Errorf("refused confirmations counted %d tries", u.ConfirmTries)
	}
	codes, err := first.Confirm(ctx, "alice", binding, good)
	if err != nil || len(codes) != enroll.RecoveryCodes {
		t.Fatalf("the first process's Confirm = %d codes, %v", len(codes), err)
	}
}

// postJSON posts body to the socket and returns the status and answer.
func postJSON(t *testing.T, sock, path, body string) (int, string) {
	t.Helper()
	resp, err := httpClient(sock).Post("http://x"+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestConsoleWrongCodesVoid: the console flow over the socket, end to end: five wrong codes
// are checked, the sixth attempt cancels the link with the clear message, the audit log names
// the caller, and linking starts again with a new secret.
func TestConsoleWrongCodesVoid(t *testing.T) {
	d := startDaemon(t)
	wrong := []string{"000000x", "12345", "abcdef", "0000000", "1"} // never valid: malformed
	out, err := console(d, "alice", append(wrong, "123456")...)
	if !errors.Is(err, enroll.ErrVoided) || err.Error() != "too many wrong codes: this link was cancelled; start again" {
		t.Fatalf("console flow = %v, want ErrVoided with its message\n%s", err, out)
	}
	if n := strings.Count(out, "That code did not match."); n != enroll.MaxConfirmTries {
		t.Errorf("%d mismatches explained, want %d", n, enroll.MaxConfirmTries)
	}
	first := secretOf(t, out)
	if u, _ := d.st.Get("alice"); u.State != store.StateNone {
		t.Errorf("state %s after the void, want none", u.State)
	}
	var voided []string
	for _, e := range auditOf(t, d.st, "alice") {
		if strings.HasPrefix(e, enroll.EventLinkVoided+"/") {
			voided = append(voided, e)
		}
	}
	if len(voided) != 1 || !strings.HasPrefix(voided[0], enroll.EventLinkVoided+"/"+me+"/") {
		t.Errorf("audit has %q, want one %s by %s", voided, enroll.EventLinkVoided, me)
	}
	// Start again: a new secret, and its code links.
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- enroll.Terminal(context.Background(), NewClient(d.path), "alice", inR, outW)
		outW.Close()
	}()
	shown := readUntil(t, outR, "Code from your app: ")
	secret := secretOf(t, shown)
	if secret == first {
		t.Error("the new link shows the voided secret")
	}
	io.WriteString(inW, codeAt(t, secret, d.clock.Now())+"\n")
	rest, _ := io.ReadAll(outR)
	if err := <-done; err != nil || !strings.Contains(string(rest), "Device linked for alice") {
		t.Fatalf("second console flow: %v\n%s%s", err, shown, rest)
	}
}

// readUntil reads r until it has read want and returns what it read.
func readUntil(t *testing.T, r io.Reader, want string) string {
	t.Helper()
	var got strings.Builder
	buf := make([]byte, 4096)
	for !strings.Contains(got.String(), want) {
		n, err := r.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("output ended before %q: %v\n%s", want, err, got.String())
		}
	}
	return got.String()
}

// TestConcurrentConfirmOverSocket: 50 wrong confirmations at once over the socket, with the
// right binding: exactly MaxConfirmTries are checked and one voids the link.
func TestConcurrentConfirmOverSocket(t *testing.T) {
	d := startDaemon(t)
	c := NewClient(d.path)
	link, binding, err := c.Begin(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	wrong := wrongCode(t, link.Secret, d.clock.Now())
	const n = 50
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = NewClient(d.path).Confirm(context.Background(), "alice", binding, wrong) })
	}
	wg.Wait()
	got := map[string]int{}
	for _, err := range errs {
		switch {
		case errors.Is(err, enroll.ErrBadCode):
			got["bad"]++
		case errors.Is(err, enroll.ErrVoided):
			got["voided"]++
		case errors.Is(err, enroll.ErrNoPending):
			got["none"]++
		default:
			t.Errorf("unexpected %v", err)
		}
	}
	if got["bad"] != enroll.MaxConfirmTries || got["voided"] != 1 {
		t.Errorf("results %v, want %d bad and 1 voided", got, enroll.MaxConfirmTries)
	}
}
