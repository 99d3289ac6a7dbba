package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"gatekeeper/config"
	"gatekeeper/gatekeeper/metrics"
	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/store/bolt"
	"gatekeeper/gatekeeper/store/etcd"
)

// sessionRegistry starts the cluster's session registry when st is shared by several nodes
// (etcd); nil for a node alone.
func sessionRegistry(st store.Store, log *slog.Logger) *etcd.Sessions {
	if e, ok := st.(*etcd.Store); ok {
		return etcd.NewSessions(e, log)
	}
	return nil
}

// endSessionsElsewhere asks every node of a cluster (an etcd store) to end user's live
// sessions, for an admin command run where no daemon runs, and returns how many the registry
// lists; shared is false (and nothing is done) for a store of one node.
func endSessionsElsewhere(ctx context.Context, st store.Store, user string) (n int, shared bool, err error) {
	return endElsewhere(ctx, st, func(l store.LiveSession) bool { return l.User == user },
		func(e *etcd.Store) error { return e.RequestKillUser(ctx, user) })
}

// endKeySessionsElsewhere is endSessionsElsewhere for the sessions that logged in with user's
// key fp (a key revoked where no daemon runs).
func endKeySessionsElsewhere(ctx context.Context, st store.Store, user, fp string) (n int, shared bool, err error) {
	return endElsewhere(ctx, st, func(l store.LiveSession) bool { return l.User == user && l.Key == fp },
		func(e *etcd.Store) error { return e.RequestKillKey(ctx, user, fp) })
}

// endElsewhere counts the cluster's live sessions that match and sends the request that ends
// them.
func endElsewhere(ctx context.Context, st store.Store, match func(store.LiveSession) bool, request func(*etcd.Store) error) (n int, shared bool, err error) {
	e, ok := st.(*etcd.Store)
	if !ok {
		return 0, false, nil
	}
	all, err := e.LiveSessions(ctx)
	if err != nil {
		return 0, true, err
	}
	for _, l := range all {
		if match(l) {
			n++
		}
	}
	return n, true, request(e)
}

// openStore opens the store cfg names: the bbolt file in db, or the etcd
// cluster of store.etcd. log gets what opening did (a schema migration). The
// database and key files it creates go to the owner of their directory when
// it runs as root (adoptNew). With mustExist (commands that only read) an etcd
// prefix that holds no store is refused, as databaseExists refuses a missing
// bbolt file.
func openStore(cfg *config.Config, log *slog.Logger, mustExist bool) (st store.Store, err error) {
	files := []string{cfg.SecretKeyFile}
	if cfg.Store.Backend != "etcd" {
		files = append(files, cfg.DB)
	}
	err = adoptNew(files, func() error {
		st, err = openStoreAs(cfg, log, mustExist)
		return err
	})
	if err != nil && st != nil {
		_ = st.Close()
		st = nil
	}
	return st, err
}

// openStoreAs is openStore without the files' owner.
func openStoreAs(cfg *config.Config, log *slog.Logger, mustExist bool) (store.Store, error) {
	switch cfg.Store.Backend {
	case "etcd":
		e := cfg.Store.Etcd
		st, err := etcd.Open(etcd.Config{
			Endpoints: e.Endpoints, Prefix: e.Prefix, DialTimeout: e.DialTimeout, RequestTimeout: e.RequestTimeout,
			TLSCA: e.TLSCA, TLSCert: e.TLSCert, TLSKey: e.TLSKey, Username: e.Username, PasswordFile: e.PasswordFile,
			KeyFile: cfg.SecretKeyFile, Node: cfg.NodeName, MustExist: mustExist,
		})
		if err != nil {
			return nil, err // not a store.Store holding a nil *etcd.Store
		}
		return st, nil
	case "bolt", "":
		st, err := bolt.Open(cfg.DB, cfg.SecretKeyFile)
		if err != nil {
			return nil, err
		}
		if m := st.Migrated(); m != nil {
			log.Info("database migrated to the current schema: every record is now authenticated under the key file",
				"from_schema", m.From, "records", m.Records, "tickets", m.Tickets)
			if len(m.Damaged) > 0 || m.DamagedTickets > 0 {
				log.Error("records that could not be read were left as they were; `gatekeeper admin reset USER` removes each",
					"users", m.Damaged, "tickets", m.DamagedTickets)
			}
		}
		return st, nil
	}
	return nil, fmt.Errorf("store.backend %q is not supported (supported: bolt, etcd)", cfg.Store.Backend)
}

// instrumented is a store.Store that reports every call's latency and
// failures to the metrics (gatekeeper_store_duration_seconds{op},
// gatekeeper_store_errors_total{op}) and keeps gatekeeper_store_up: 0 after
// a call the store could not answer (store.ErrUnavailable), 1 after one it
// answered. Answers that are not failures of the store (an unknown ticket, a
// damaged record, a refused update) count as answered.
type instrumented struct {
	st store.Store
	m  *metrics.Gatekeeper
}

func (s instrumented) observe(op string, start time.Time, err error) {
	unavailable := errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrNoSpace)
	var failed error
	if unavailable {
		failed = err
	}
	s.m.ObserveStore(op, time.Since(start), failed)
	// A store whose writes have broken (Health) stays down however well its reads answer.
	s.m.SetStoreUp(!errors.Is(err, store.ErrUnavailable) && s.health() == nil)
}

// health is the backend's Health (store.HealthChecker), nil for one without it.
func (s instrumented) health() error {
	if h, ok := s.st.(store.HealthChecker); ok {
		return h.Health()
	}
	return nil
}

// Health passes the backend's on (nil for one that has none), so that /healthz sees it, and
// sets gatekeeper_store_up to 0 when it reports an error.
func (s instrumented) Health() error {
	err := s.health()
	if err != nil {
		s.m.SetStoreUp(false)
	}
	return err
}

func (s instrumented) Get(name string) (u store.User, err error) {
	defer func(t time.Time) { s.observe("get", t, err) }(time.Now())
	return s.st.Get(name)
}

func (s instrumented) List() (us []store.User, err error) {
	defer func(t time.Time) { s.observe("list", t, err) }(time.Now())
	return s.st.List()
}

func (s instrumented) Delete(name string) (ok bool, err error) {
	defer func(t time.Time) { s.observe("delete", t, err) }(time.Now())
	return s.st.Delete(name)
}

func (s instrumented) Update(name string, fn func(u *store.User) error) (err error) {
	defer func(t time.Time) { s.observe("update", t, err) }(time.Now())
	return s.st.Update(name, fn)
}

func (s instrumented) Append(events ...store.Event) (err error) {
	defer func(t time.Time) { s.observe("append", t, err) }(time.Now())
	return s.st.Append(events...)
}

func (s instrumented) Events(q store.EventQuery) (es []store.Event, err error) {
	defer func(t time.Time) { s.observe("events", t, err) }(time.Now())
	return s.st.Events(q)
}

func (s instrumented) PruneEvents(before time.Time) (n int, err error) {
	defer func(t time.Time) { s.observe("prune", t, err) }(time.Now())
	return s.st.PruneEvents(before)
}

func (s instrumented) AddTicket(user, token string, expires time.Time) (err error) {
	defer func(t time.Time) { s.observe("ticket", t, err) }(time.Now())
	return s.st.AddTicket(user, token, expires)
}

func (s instrumented) UseTicket(user, token string, now time.Time) (err error) {
	defer func(t time.Time) { s.observe("ticket", t, err) }(time.Now())
	return s.st.UseTicket(user, token, now)
}

func (s instrumented) CheckTicket(user, token string, now time.Time) (err error) {
	defer func(t time.Time) { s.observe("ticket", t, err) }(time.Now())
	return s.st.CheckTicket(user, token, now)
}

func (s instrumented) Dump(audit bool, fn func(store.Item) error) (err error) {
	defer func(t time.Time) { s.observe("dump", t, err) }(time.Now())
	return s.st.Dump(audit, fn)
}

func (s instrumented) Load(items []store.Item, force bool) (r store.LoadResult, err error) {
	defer func(t time.Time) { s.observe("load", t, err) }(time.Now())
	return s.st.Load(items, force)
}

func (s instrumented) Close() error { return s.st.Close() }

// databaseExists reports, for the bolt backend, a database file that is not there: a command
// that only reads would otherwise create an empty database (and a key file) and answer from it
// as if nobody had ever linked a device.
func databaseExists(cfg *config.Config) error {
	if cfg.Store.Backend != "bolt" && cfg.Store.Backend != "" {
		return nil
	}
	if _, err := os.Stat(cfg.DB); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no gatekeeper daemon is running (admin socket %s) and there is no database at %s: "+
			"check db in the config (or --config); the daemon creates the database when it first starts", cfg.Admin.Socket, cfg.DB)
	}
	return nil
}

// warnUppercaseNames logs the users whose names have capitals, whom the doors refuse while
// allow_uppercase_usernames is off: records made before the setting existed, or while it was on.
func warnUppercaseNames(cfg *config.Config, st store.Store, log *slog.Logger) {
	if cfg.AllowUppercaseUsernames {
		return // no need to read every record
	}
	users, err := st.List()
	if err != nil && !errors.Is(err, store.ErrDamaged) { // damaged records: the others still count
		return // a store that does not answer is logged where it matters, at the first login
	}
	var names []string
	for _, u := range users {
		if cfg.RefusesCapitals(u.Name) {
			names = append(names, u.Name)
		}
	}
	if len(names) > 0 {
		log.Warn("these users' names have capitals, and they cannot log in while allow_uppercase_usernames is off: "+
			"turn it on if the lander's user names are case-sensitive, or else `gatekeeper admin reset` each and have "+
			"the user link again under the lower-case name", "users", names)
	}
}
