package main

import (
	"fmt"
	"log/slog"

	"gatekeeper/config"
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

// openStore opens the store cfg names: the bbolt file in db, or the etcd
// cluster of store.etcd. log gets what opening did (a schema migration).
func openStore(cfg *config.Config, log *slog.Logger) (store.Store, error) {
	switch cfg.Store.Backend {
	case "etcd":
		e := cfg.Store.Etcd
		return etcd.Open(etcd.Config{
			Endpoints: e.Endpoints, Prefix: e.Prefix, DialTimeout: e.DialTimeout, RequestTimeout: e.RequestTimeout,
			TLSCA: e.TLSCA, TLSCert: e.TLSCert, TLSKey: e.TLSKey, Username: e.Username, PasswordFile: e.PasswordFile,
			KeyFile: cfg.SecretKeyFile, Node: cfg.NodeName,
		})
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
