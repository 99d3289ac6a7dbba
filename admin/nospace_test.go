package admin

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gatekeeper/gatekeeper/store"
)

// fullDisk is a store whose writes fail as on a full disk while full is set.
type fullDisk struct {
	store.Store
	full *atomic.Bool
}

// noSpacePath is the database path in fullDisk's errors: the log may name it, an answer not.
const noSpacePath = "/var/lib/gatekeeper-secret-place/gatekeeper.db"

func (f fullDisk) fail() error {
	if f.full.Load() {
		return store.NoSpace(noSpacePath, syscall.ENOSPC)
	}
	return nil
}

func (f fullDisk) Update(name string, fn func(*store.User) error) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.Store.Update(name, fn)
}

func (f fullDisk) AddTicket(user, token string, expires time.Time) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.Store.AddTicket(user, token, expires)
}

func (f fullDisk) Append(events ...store.Event) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.Store.Append(events...)
}

// TestNoSpaceAnswer: on a full disk, linking (begin, confirm) and a ticket fail with an error
// that says so (matching store.ErrNoSpace), not as an internal error, and without the database's
// path, which goes to the daemon's log.
func TestNoSpaceAnswer(t *testing.T) {
	tests := []struct {
		name string
		do   func(t *testing.T, d *daemon, c *Client, full *atomic.Bool) error
	}{
		{"ticket", func(t *testing.T, d *daemon, c *Client, full *atomic.Bool) error {
			full.Store(true)
			_, _, err := c.Ticket(context.Background(), "alice")
			return err
		}},
		{"begin", func(t *testing.T, d *daemon, c *Client, full *atomic.Bool) error {
			full.Store(true)
			_, _, err := c.Begin(context.Background(), "alice")
			return err
		}},
		{"confirm", func(t *testing.T, d *daemon, c *Client, full *atomic.Bool) error {
			l, b, err := c.Begin(context.Background(), "alice")
			if err != nil {
				t.Fatal(err)
			}
			full.Store(true)
			_, err = c.Confirm(context.Background(), "alice", b, codeAt(t, l.Secret, d.clock.Now()))
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			full := new(atomic.Bool)
			d := startDaemonWith(t, nil, func(s *Server) {
				fd := fullDisk{Store: s.Store, full: full}
				s.Store, s.Enroll.Store = fd, fd
			})
			err := tt.do(t, d, NewClient(d.path), full)
			if !errors.Is(err, store.ErrNoSpace) || !strings.HasPrefix(err.Error(), "database disk full") ||
				strings.Contains(err.Error(), noSpacePath) || strings.Contains(err.Error(), "internal error") {
				t.Errorf("%s on a full disk = %v, want ErrNoSpace saying so, without the path", tt.name, err)
			}
			if !strings.Contains(d.log.String(), noSpacePath) {
				t.Errorf("the daemon's log does not name the file:\n%s", d.log.String())
			}
		})
	}
}
