package portal

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/totp"
)

// fakeCredentials stands in for enroll.Service's replacement API until it exists: the new
// secret waits in memory, the old one stays in the store until the confirmation.
type fakeCredentials struct {
	st  *store.Store
	now func() time.Time

	mu      sync.Mutex
	pending map[string]*fakeReplacement
}

type fakeReplacement struct {
	secret  []byte
	binding enroll.Binding
	until   time.Time
	tries   int
}

func (f *fakeCredentials) BeginReplace(ctx context.Context, user string) (enroll.Link, enroll.Binding, error) {
	u, err := f.st.Get(user)
	if err != nil {
		return enroll.Link{}, "", err
	}
	if u.State != store.StateActive {
		return enroll.Link{}, "", enroll.ErrNoPending
	}
	secret, err := totp.NewSecret()
	if err != nil {
		return enroll.Link{}, "", err
	}
	b := enroll.Binding(rand.Text())
	until := f.now().Add(10 * time.Minute)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending == nil {
		f.pending = map[string]*fakeReplacement{}
	}
	f.pending[user] = &fakeReplacement{secret: secret, binding: b, until: until}
	return enroll.Link{User: user, Issuer: testIssuer, Secret: totp.EncodeSecret(secret),
		URI: totp.URI(testIssuer, user, secret), ExpiresAt: until}, b, nil
}

func (f *fakeCredentials) ConfirmReplace(ctx context.Context, user string, binding enroll.Binding, code string) ([]string, error) {
	f.mu.Lock()
	p := f.pending[user]
	switch {
	case p == nil:
		f.mu.Unlock()
		return nil, enroll.ErrNoPending
	case p.binding != binding:
		f.mu.Unlock()
		return nil, enroll.ErrStartedElsewhere
	case !f.now().Before(p.until):
		delete(f.pending, user)
		f.mu.Unlock()
		return nil, enroll.ErrExpired
	case p.tries >= enroll.MaxConfirmTries:
		delete(f.pending, user)
		f.mu.Unlock()
		return nil, enroll.ErrVoided
	}
	p.tries++
	f.mu.Unlock()
	codes, err := enroll.NewRecoveryCodes()
	if err != nil {
		return nil, err
	}
	err = f.st.Update(user, func(u *store.User) error {
		step, err := totp.Verify(p.secret, code, f.now(), 1, u.LastStep)
		if err != nil {
			return fmt.Errorf("%w: %w", enroll.ErrBadCode, err)
		}
		u.Secret, u.LastStep, u.EnrolledAt = p.secret, step, f.now()
		return enroll.SetRecovery(u, codes)
	})
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	delete(f.pending, user)
	f.mu.Unlock()
	f.st.Append(store.Event{Kind: "device_replaced", User: user, Actor: enroll.ActorFrom(ctx)})
	return codes, nil
}

func (f *fakeCredentials) RenewRecovery(ctx context.Context, user string) ([]string, error) {
	codes, err := enroll.NewRecoveryCodes()
	if err != nil {
		return nil, err
	}
	err = f.st.Update(user, func(u *store.User) error { return enroll.SetRecovery(u, codes) })
	if err != nil {
		return nil, err
	}
	f.st.Append(store.Event{Kind: "recovery_renewed", User: user, Actor: enroll.ActorFrom(ctx)})
	return codes, nil
}
