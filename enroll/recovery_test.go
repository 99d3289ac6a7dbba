package enroll

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"gatekeeper/gatekeeper/store"
)

// recoveryCodeRE is the shape of a generated recovery code.
var recoveryCodeRE = regexp.MustCompile(`^[a-km-np-z2-9]{4}-[a-km-np-z2-9]{4}-[a-km-np-z2-9]{2}$`)

// linked makes alice an active user through Begin and Confirm, returning her recovery codes.
func linked(t *testing.T, s *Service, clock *fakeClock) []string {
	t.Helper()
	l, b := mustBegin(t, s, "alice")
	codes, err := s.Confirm(context.Background(), "alice", b, codeAt(decodeSecret(t, l.Secret), clock.t))
	if err != nil {
		t.Fatalf("Confirm: %v", err)
	}
	return codes
}

func TestNewRecoveryCodes(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		codes, err := NewRecoveryCodes()
		if err != nil {
			t.Fatal(err)
		}
		if len(codes) != RecoveryCodes {
			t.Fatalf("%d codes, want %d", len(codes), RecoveryCodes)
		}
		for _, c := range codes {
			if !recoveryCodeRE.MatchString(c) {
				t.Errorf("code %q is not of the form abcd-efgh-jk from the unambiguous alphabet", c)
			}
			if seen[c] {
				t.Errorf("code %q drawn twice", c)
			}
			seen[c] = true
		}
	}
	// 10 characters of a 32-symbol alphabet: 50 bits.
	if len(codeAlphabet) != 32 || strings.ContainsAny(codeAlphabet, "01loIO") {
		t.Errorf("alphabet %q: want 32 symbols without look-alikes", codeAlphabet)
	}
}

func TestVerifyRecovery(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	codes := linked(t, s, clock)
	code := codes[4]
	tests := []struct {
		name   string
		state  store.State // "" = leave active
		answer string
		ok     bool
	}{
		{name: "as printed", answer: code, ok: true},
		{name: "capitals", answer: strings.ToUpper(code), ok: true},
		{name: "without dashes", answer: strings.ReplaceAll(code, "-", ""), ok: true},
		{name: "spaces instead of dashes", answer: " " + strings.ReplaceAll(code, "-", " ") + " ", ok: true},
		{name: "one character off", answer: code[:len(code)-1] + other(code[len(code)-1]), ok: false},
		{name: "cut short", answer: code[:8], ok: false},
		{name: "a TOTP code", answer: "123456", ok: false},
		{name: "empty", answer: "", ok: false},
		{name: "dashes only", answer: "----", ok: false},
		{name: "not letters and digits", answer: strings.Replace(code, "-", "_", 1), ok: false},
		{name: "very long", answer: strings.Repeat(code, 100), ok: false},
		{name: "pending user", state: store.StatePending, answer: code, ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := peek(t, s.Store, "alice")
			if tt.state != "" {
				u.State = tt.state
			}
			before := append([][]byte(nil), u.Recovery...)
			if got := VerifyRecovery(&u, tt.answer); got != tt.ok {
				t.Fatalf("VerifyRecovery(%q) = %v, want %v", tt.answer, got, tt.ok)
			}
			wantLeft := RecoveryCodes
			if tt.ok {
				wantLeft--
			}
			if len(u.Recovery) != wantLeft {
				t.Errorf("%d codes left, want %d", len(u.Recovery), wantLeft)
			}
			if len(before) != RecoveryCodes {
				t.Errorf("VerifyRecovery changed the caller's old slice")
			}
			if tt.ok && VerifyRecovery(&u, tt.answer) {
				t.Error("a used code worked a second time")
			}
		})
	}
}

// other returns a character of the alphabet other than c.
func other(c byte) string {
	if c == 'a' {
		return "b"
	}
	return "a"
}

// TestRecoveryOnceThroughStore: each code logs in once when used the way the front door does,
// inside store.Update; the others keep working; every one of the ten works.
func TestRecoveryOnceThroughStore(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	codes := linked(t, s, clock)
	errNo := errors.New("refused")
	use := func(code string) error {
		return s.Store.Update("alice", func(u *store.User) error {
			if !VerifyRecovery(u, code) {
				return errNo
			}
			return nil
		})
	}
	for i, c := range codes {
		if err := use(c); err != nil {
			t.Fatalf("code %d: %v", i, err)
		}
		if err := use(c); !errors.Is(err, errNo) {
			t.Fatalf("code %d second use: %v, want refused", i, err)
		}
		if u, _ := s.Store.Get("alice"); len(u.Recovery) != RecoveryCodes-1-i {
			t.Fatalf("after %d uses %d codes left", i+1, len(u.Recovery))
		}
	}
}

func TestHashRecovery(t *testing.T) {
	tests := []struct {
		name    string
		codes   []string
		answer  string
		wantErr bool
		ok      bool
	}{
		{name: "google-authenticator scratch codes", codes: []string{"12345678", "87654321"}, answer: "87654321", ok: true},
		{name: "answer with a space", codes: []string{"12345678"}, answer: "1234 5678", ok: true},
		{name: "wrong answer", codes: []string{"12345678"}, answer: "12345679", ok: false},
		{name: "no codes", codes: nil, wantErr: true},
		{name: "blank code", codes: []string{"12345678", " - "}, wantErr: true},
		{name: "punctuation", codes: []string{"1234.5678"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := store.User{Name: "alice", State: store.StateActive, Secret: []byte("s")}
			rs, err := HashRecovery(context.Background(), tt.codes)
			if tt.wantErr {
				if err == nil || rs.Hashes != nil {
					t.Errorf("HashRecovery(%q) = %v, %d hashes; want an error and no hashes", tt.codes, err, len(rs.Hashes))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rs.SetOn(&u)
			if len(u.Recovery) != len(tt.codes) || len(u.RecoverySalt) < 16 {
				t.Errorf("%d hashes, %d-byte salt", len(u.Recovery), len(u.RecoverySalt))
			}
			for _, h := range u.Recovery {
				for _, c := range tt.codes {
					if bytes.Contains(h, []byte(c)) {
						t.Error("a code is stored in the clear")
					}
				}
			}
			if got := VerifyRecovery(&u, tt.answer); got != tt.ok {
				t.Errorf("VerifyRecovery(%q) = %v, want %v", tt.answer, got, tt.ok)
			}
		})
	}
	// The salt is per call: the same code hashes differently for two users.
	a := store.User{Name: "a", State: store.StateActive}
	b := store.User{Name: "b", State: store.StateActive}
	setRecovery(t, &a, "12345678")
	setRecovery(t, &b, "12345678")
	if bytes.Equal(a.Recovery[0], b.Recovery[0]) {
		t.Error("two users' equal codes have equal hashes")
	}
}

// TestNewLinkReplacesRecovery: recovery codes of a link do not outlive it: an admin reset
// removes them with the record, and a new link comes with new ones.
func TestNewLinkReplacesRecovery(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	old := linked(t, s, clock)
	if _, err := s.Store.Delete("alice"); err != nil {
		t.Fatal(err)
	}
	clock.t = clock.t.Add(time.Hour)
	fresh := linked(t, s, clock)
	u := peek(t, s.Store, "alice")
	for _, c := range old {
		if VerifyRecovery(&u, c) {
			t.Fatalf("old recovery code %q works after a new link", c)
		}
	}
	if !VerifyRecovery(&u, fresh[0]) {
		t.Error("new recovery code refused")
	}

	// An expired pending link that somehow carries codes (an import) loses them at Begin.
	if err := s.Store.Update("bob", func(u *store.User) error {
		u.State, u.Secret, u.PendingSince = store.StatePending, []byte("secret"), clock.t.Add(-time.Hour)
		setRecovery(t, u, "12345678")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	mustBegin(t, s, "bob")
	if u, _ := s.Store.Get("bob"); len(u.Recovery) != 0 {
		t.Errorf("Begin kept %d recovery codes", len(u.Recovery))
	}
}

// TestConfirmConcurrent: two confirmations racing with one good code: exactly one links and gets
// recovery codes; the stored hashes are that one's.
func TestConfirmConcurrent(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	l, b := mustBegin(t, s, "alice")
	code := codeAt(decodeSecret(t, l.Secret), t0)
	const n = 4
	results := make([][]string, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = s.Confirm(context.Background(), "alice", b, code)
		})
	}
	close(start)
	wg.Wait()
	var winner []string
	for i, err := range errs {
		switch {
		case err == nil:
			if winner != nil {
				t.Fatal("two confirmations with one code succeeded")
			}
			winner = results[i]
		case !errors.Is(err, ErrBadCode) && !errors.Is(err, ErrNoPending):
			t.Errorf("unexpected error %v", err)
		}
	}
	if winner == nil {
		t.Fatal("no confirmation succeeded")
	}
	u := peek(t, s.Store, "alice")
	if !VerifyRecovery(&u, winner[0]) {
		t.Error("the winner's recovery codes are not the stored ones")
	}
}

// events returns the audit log, failing the test on an error.
func events(t *testing.T, st store.Store, user string) []store.Event {
	t.Helper()
	ev, err := st.Events(store.EventQuery{User: user})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func kindsActors(ev []store.Event) string {
	var b []string
	for _, e := range ev {
		b = append(b, e.Kind+"/"+e.Actor)
	}
	return strings.Join(b, " ")
}

func TestAuditEvents(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, s *Service, c *fakeClock)
		want string
	}{
		{"begin on the console", func(t *testing.T, s *Service, c *fakeClock) {
			mustBegin(t, s, "alice")
		}, "link_started/console qr_shown/console"},
		{"begin and confirm over the socket", func(t *testing.T, s *Service, c *fakeClock) {
			ctx := WithActor(context.Background(), "uid 0")
			l, b, err := s.Begin(ctx, "alice")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Confirm(ctx, "alice", b, "000000x"); !errors.Is(err, ErrBadCode) {
				t.Fatalf("bad code: %v", err)
			}
			if _, err := s.Confirm(ctx, "alice", b, codeAt(decodeSecret(t, l.Secret), c.t)); err != nil {
				t.Fatal(err)
			}
		}, "link_started/uid 0 qr_shown/uid 0 link_confirmed/uid 0"},
		{"expiry found by confirm", func(t *testing.T, s *Service, c *fakeClock) {
			_, b := mustBegin(t, s, "alice")
			c.t = c.t.Add(11 * time.Minute)
			if _, err := s.Confirm(WithActor(context.Background(), "portal"), "alice", b, "123456"); !errors.Is(err, ErrExpired) {
				t.Fatalf("Confirm: %v", err)
			}
		}, "link_started/console qr_shown/console link_expired/portal"},
		{"expiry found by begin", func(t *testing.T, s *Service, c *fakeClock) {
			mustBegin(t, s, "alice")
			c.t = c.t.Add(11 * time.Minute)
			mustBegin(t, s, "alice")
		}, "link_started/console qr_shown/console link_expired/console link_started/console qr_shown/console"},
		{"refused begin writes nothing", func(t *testing.T, s *Service, c *fakeClock) {
			mustBegin(t, s, "alice")
			if _, _, err := s.Begin(context.Background(), "alice"); !errors.Is(err, ErrPending) {
				t.Fatal(err)
			}
		}, "link_started/console qr_shown/console"},
		{"ticket", func(t *testing.T, s *Service, c *fakeClock) {
			if _, _, err := s.Ticket(context.Background(), "alice", "uid 1000"); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.Ticket(WithActor(context.Background(), "uid 7"), "alice", ""); err != nil {
				t.Fatal(err)
			}
		}, "ticket_issued/uid 1000 ticket_issued/uid 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: t0}
			s := newService(t, clock, nil)
			tt.run(t, s, clock)
			ev := events(t, s.Store, "alice")
			if got := kindsActors(ev); got != tt.want {
				t.Errorf("audit log = %s\nwant        %s", got, tt.want)
			}
			for _, e := range ev {
				if e.Time.IsZero() || e.User != "alice" {
					t.Errorf("event %+v lacks time or user", e)
				}
			}
		})
	}
}

func TestTicket(t *testing.T) {
	clock := &fakeClock{t: t0}
	var logBuf bytes.Buffer
	s := newService(t, clock, slog.New(slog.NewTextHandler(&logBuf, nil)))
	ctx := context.Background()

	token, expires, err := s.Ticket(ctx, "alice", "uid 0")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[a-km-np-z2-9]{4}(-[a-km-np-z2-9]{4}){4}$`).MatchString(token) {
		t.Errorf("ticket %q is not five groups of four", token)
	}
	if !expires.Equal(t0.Add(24 * time.Hour)) {
		t.Errorf("expires %v, want 24 h from now", expires)
	}
	if err := s.Store.CheckTicket("alice", token, t0.Add(23*time.Hour)); err != nil {
		t.Errorf("ticket not valid for 23 h: %v", err)
	}
	if err := s.Store.CheckTicket("alice", token, t0.Add(24*time.Hour)); !errors.Is(err, store.ErrNoTicket) {
		t.Errorf("ticket valid after 24 h: %v", err)
	}
	if err := s.Store.CheckTicket("bob", token, t0); !errors.Is(err, store.ErrNoTicket) {
		t.Errorf("alice's ticket valid for bob: %v", err)
	}
	ev := events(t, s.Store, "alice")
	if strings.Contains(logBuf.String(), token) || strings.Contains(ev[0].Detail, token) {
		t.Error("the ticket token is in the log or the audit log")
	}

	// A second ticket replaces the first.
	token2, _, err := s.Ticket(ctx, "alice", "uid 0")
	if err != nil || token2 == token {
		t.Fatalf("second Ticket = %q, %v", token2, err)
	}
	if err := s.Store.CheckTicket("alice", token, t0); !errors.Is(err, store.ErrNoTicket) {
		t.Errorf("first ticket still valid: %v", err)
	}

	// Refused: bad name, a user with a linked device.
	if _, _, err := s.Ticket(ctx, "-x", "uid 0"); !errors.Is(err, store.ErrBadName) {
		t.Errorf("Ticket(-x) = %v", err)
	}
	clock2 := &fakeClock{t: t0}
	s2 := newService(t, clock2, nil)
	linked(t, s2, clock2)
	if _, _, err := s2.Ticket(ctx, "alice", "uid 0"); !errors.Is(err, ErrAlreadyLinked) || !strings.Contains(err.Error(), "reset it first") {
		t.Errorf("Ticket for a linked user = %v, want ErrAlreadyLinked", err)
	}
}

func TestActorFrom(t *testing.T) {
	if got := ActorFrom(context.Background()); got != ActorConsole {
		t.Errorf("default actor %q, want %q", got, ActorConsole)
	}
	if got := ActorFrom(WithActor(context.Background(), "uid 42")); got != "uid 42" {
		t.Errorf("actor %q", got)
	}
	if got := ActorFrom(WithActor(context.Background(), "")); got != ActorConsole {
		t.Errorf("empty actor gives %q", got)
	}
}

func TestState(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	linked(t, s, clock)
	u, err := s.State(context.Background(), "alice")
	if err != nil || u.State != store.StateActive || u.Secret != nil || len(u.Recovery) != RecoveryCodes {
		t.Errorf("State(alice) = %+v, %v; want active, no secret, %d recovery codes", u, err, RecoveryCodes)
	}
	if u, err := s.State(context.Background(), "bob"); err != nil || u.State != store.StateNone {
		t.Errorf("State(bob) = %+v, %v", u, err)
	}
	if _, err := s.State(context.Background(), "../x"); !errors.Is(err, store.ErrBadName) {
		t.Errorf("State(../x) = %v", err)
	}
}

// allocated returns how many bytes f allocated on the heap.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestVerifyRecoveryCost: every answer shaped like a recovery code costs one argon2id hash of
// the same cost (its memory, argonMemory KiB, is what is measured: it cannot be skipped), with
// or without codes, salt or an active device; only answers refused by their shape cost none.
func TestVerifyRecoveryCost(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	codes := linked(t, s, clock)
	withCodes := peek(t, s.Store, "alice")
	const hashBytes = argonMemory * 1024
	answer := "abcd-efgh-jk"
	tests := []struct {
		name   string
		user   store.User
		answer string
		hashed bool
	}{
		{"codes, wrong answer", withCodes, answer, true},
		{"codes, right answer", withCodes, codes[0], true},
		{"active, no codes", store.User{Name: "bob", State: store.StateActive, RecoverySalt: withCodes.RecoverySalt}, answer, true},
		{"active, no salt", store.User{Name: "bob", State: store.StateActive}, answer, true},
		{"pending", store.User{Name: "bob", State: store.StatePending}, answer, true},
		{"unknown", store.User{Name: "bob"}, answer, true},
		{"shape: empty", withCodes, "", false},
		{"shape: too long", store.User{Name: "bob"}, strings.Repeat("a", 65), false},
		{"shape: punctuation", store.User{Name: "bob"}, "abcd_efgh!", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := tt.user
			got := allocated(func() { VerifyRecovery(&u, tt.answer) })
			switch {
			case tt.hashed && (got < hashBytes || got > 2*hashBytes):
				t.Errorf("allocated %d bytes, want one hash (%d to %d)", got, hashBytes, 2*hashBytes)
			case !tt.hashed && got >= hashBytes/2:
				t.Errorf("allocated %d bytes for an answer refused by its shape, want no hash", got)
			}
		})
	}
}

// setRecovery makes codes u's recovery codes.
func setRecovery(t *testing.T, u *store.User, codes ...string) {
	t.Helper()
	rs, err := HashRecovery(context.Background(), codes)
	if err != nil {
		t.Fatal(err)
	}
	rs.SetOn(u)
}

// cancelAfterFirst is a store that ends a context once its first Get or Update has returned:
// the caller of a Confirm or RenewRecovery gives up while the recovery codes are being hashed.
type cancelAfterFirst struct {
	store.Store
	cancel context.CancelFunc
}

func (c *cancelAfterFirst) Get(name string) (store.User, error) {
	defer c.cancel()
	return c.Store.Get(name)
}

func (c *cancelAfterFirst) Update(name string, fn func(*store.User) error) error {
	defer c.cancel()
	return c.Store.Update(name, fn)
}

// TestGoneCallerGetsNoCodes: recovery codes nobody will see are not stored. A confirmation
// whose caller gave up (the admin command timed out, the browser closed) leaves the link
// pending, its code not spent, and the same code confirms it afterwards.
func TestGoneCallerGetsNoCodes(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	l, b := mustBegin(t, s, "alice")
	code := codeAt(decodeSecret(t, l.Secret), clock.t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	real := s.Store
	s.Store = &cancelAfterFirst{Store: real, cancel: cancel}
	codes, err := s.Confirm(ctx, "alice", b, code)
	s.Store = real
	if !errors.Is(err, context.Canceled) || codes != nil {
		t.Fatalf("Confirm for a caller that gave up = %d codes, %v; want context.Canceled", len(codes), err)
	}
	if u := peek(t, s.Store, "alice"); u.State != store.StatePending || len(u.Recovery) != 0 || u.LastStep != 0 {
		t.Fatalf("after a confirmation nobody saw: state %s, %d recovery hashes, last step %d; want pending, none, 0",
			u.State, len(u.Recovery), u.LastStep)
	}
	codes, err = s.Confirm(context.Background(), "alice", b, code)
	if err != nil || len(codes) != RecoveryCodes {
		t.Fatalf("Confirm again with the same code = %d codes, %v", len(codes), err)
	}

	// Renewing: the codes in use stay when the caller gives up.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	s.Store = &cancelAfterFirst{Store: real, cancel: cancel}
	if renewed, err := s.RenewRecovery(ctx, "alice"); !errors.Is(err, context.Canceled) || renewed != nil {
		t.Fatalf("RenewRecovery for a caller that gave up = %d codes, %v; want context.Canceled", len(renewed), err)
	}
	s.Store = real
	if u := peek(t, s.Store, "alice"); !VerifyRecovery(&u, codes[0]) {
		t.Error("the recovery codes in use stopped working after a renewal nobody saw")
	}
}
