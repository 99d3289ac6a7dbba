package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"gatekeeper/admin"
	"gatekeeper/config"
	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
)

// Backup streams the store's items to fn and returns the backup's header (see admin.Backup).
// The audit event is written by auditBackup once the file is stored.
func (b *localBackend) Backup(_ context.Context, audit bool, fn func(store.Item) error) (admin.BackupHeader, error) {
	h := admin.BackupHeader{Version: admin.BackupVersion, Created: time.Now().UTC().Truncate(time.Second),
		Backend: b.backend, Node: b.node, Audit: audit}
	return admin.Backup(b.st, h, fn)
}

// auditBackup writes the "backup" event of a backup stored at path.
func (b *localBackend) auditBackup(h admin.BackupHeader, path string) {
	if path == "-" {
		path = "standard output"
	}
	admin.AuditBackup(b.st, h, enroll.ActorConsole, "wrote "+h.Summary()+" to "+path, b.log)
}

func (b *localBackend) Restore(_ context.Context, f *admin.BackupFile, force bool) (admin.RestoreResult, error) {
	return admin.Restore(b.st, f, force, enroll.ActorConsole, b.log)
}

// backupOutput is `admin backup -o json` and `admin restore -o json`.
type backupOutput struct {
	File string `json:"file"`
	admin.BackupHeader
	// Restored is what restore wrote (expired tickets are left out by an etcd store).
	Restored *admin.RestoreResult `json:"restored,omitempty"`
}

func newAdminBackupCmd(o *adminOpts) *cobra.Command {
	var audit, force bool
	cmd := &cobra.Command{
		Use:   "backup FILE [--audit] [--force]",
		Short: "Write every record (secrets still sealed) to FILE, for admin restore",
		Long: `Write every user record and linking ticket of the configured store (bolt or etcd) to FILE,
and with --audit the audit log too, for admin restore. FILE "-" is standard output.

The records are copied as stored: TOTP secrets stay sealed under secret_key_file, and every
record is authenticated under it. A backup is of no use without the key file, and the two
together open every secret: keep the key file backed up too, but apart from the backups.

The backup goes to FILE.tmp (mode 0600) and is renamed to FILE once complete and on disk, so
FILE is never half written. An existing FILE is refused unless --force.

A record or ticket that fails its integrity check (or an audit event that cannot be read) is
left out, so that the backup of everyone else can be restored, and named with what to do.
The command then exits with status 1, FILE written all the same: a script that checks only
the exit status learns of it, and keeps the older backups that may hold a good copy.

With a running daemon the backup comes through its admin socket (the daemon holds a bbolt
file); without one the store is opened directly.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			if path != "-" && !force {
				if _, err := os.Lstat(path); err == nil {
					return fmt.Errorf("%s exists; pass --force to overwrite it", path)
				}
			}
			c, err := o.open(cmd, "", readsStore)
			if err != nil {
				return err
			}
			defer c.close()
			h, err := writeBackup(path, force, cmd.OutOrStdout(), func(fn func(store.Item) error) (admin.BackupHeader, error) {
				return c.be.Backup(cmd.Context(), audit, fn)
			})
			if err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			if path == "-" {
				// The backup is on standard output: the summary goes beside it.
				c.out = cmd.ErrOrStderr()
			}
			if lb, ok := c.be.(*localBackend); ok {
				lb.auditBackup(h, path) // the daemon writes its own when it has sent the backup
			}
			if c.json {
				if err := c.writeJSON(backupOutput{File: path, BackupHeader: h}); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(c.out, "backed up %s to %s\n", h.Summary(), path)
				if s := h.LeftOutSummary(); s != "" {
					fmt.Fprintln(c.out, s)
				}
				if !audit {
					fmt.Fprintln(c.out, "(the audit log is not in it: --audit adds it)")
				}
			}
			if n := h.LeftOutCount(); n > 0 {
				// Exit status 1 with the file written: a cron job that checks only the exit
				// status must not take this backup for a complete one and rotate away the
				// older backups, which may hold the last good copy of the damaged record.
				return fmt.Errorf("backup written to %s, but %s left out of it (named above): "+
					"exit status 1 so that a script notices", path, plural(n, "damaged record")+isAre(n))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&audit, "audit", false, "include the audit log")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing FILE")
	return cmd
}

func newAdminRestoreCmd(o *adminOpts) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "restore FILE [--force]",
		Short: "Load a backup from admin backup into the configured store",
		Long: `Load a backup written by admin backup (from a bolt or an etcd store) into the configured store.
FILE "-" is standard input. This is how a store is moved from one node's bbolt file to etcd:
admin backup with the old config, admin restore with the new one, the same secret_key_file in
both. Phones keep working, and time steps used before the backup stay used.

The whole file is read and checked first: a line that is not a valid item is refused, naming
the line, and so is a file cut short or one made under another secret_key_file (or, for a
backup with records, a secret_key_file that does not exist); nothing is written or created
then. A user who already has a record is refused, every one named, unless --force, which
overwrites them with the backup's record. Tickets are added; audit events are added to the
log, but not those it holds already (a backup restored twice adds its events once). The
restore itself is written to the audit log.

A bolt store takes the restore in one transaction, all or nothing. An etcd store takes it in
batches: a failure part-way says how much was written, and the same restore run again without
--force writes the rest (users whose record is already the backup's are left as they are, the
audit events written already are replaced, not added twice).

Restoring is for a quiet store (a new one, a migration, disaster recovery): it does not end
live sessions, and a login between the backup and the restore is forgotten by an overwritten
record. Stop the daemons, or restore before users come to the new store.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			f, err := readBackup(path, cmd.InOrStdin())
			if err != nil {
				return fmt.Errorf("restore %s: %w; nothing was written", path, err)
			}
			// Without a daemon the store is opened here, which creates a new one (its database
			// and key check) under the configured key file: the backup is checked against that
			// key file first, so that a wrong one is refused before anything is created.
			c, err := o.openChecked(cmd, "", addsToStore, func(cfg *config.Config) error {
				if err := checkBackupKey(cfg, f); err != nil {
					return fmt.Errorf("restore %s: %w; nothing was written", path, err)
				}
				return nil
			})
			if err != nil {
				return err
			}
			defer c.close()
			res, err := c.be.Restore(cmd.Context(), f, force)
			if err != nil {
				// admin.Restore's error (or the daemon's) says what was written.
				return fmt.Errorf("restore %s: %w", path, err)
			}
			if c.json {
				return c.writeJSON(backupOutput{File: path, BackupHeader: f.Header, Restored: &res})
			}
			got := admin.BackupHeader{Users: res.Users, Tickets: res.Tickets, Events: res.Events, Audit: f.Header.Audit}
			fmt.Fprintf(c.out, "restored %s from %s (a backup of %s, %s store, made %s)\n", got.Summary(), path,
				cell(f.Header.Node), cell(f.Header.Backend), fmtTime(f.Header.Created))
			if res.EventsHeld > 0 {
				fmt.Fprintf(c.out, "(already in the audit log, so not added again: %s)\n", plural(res.EventsHeld, "event"))
			}
			if skipped := f.Header.Tickets - res.Tickets; skipped > 0 {
				fmt.Fprintf(c.out, "(%s left out: expired, or, when this restore ran before and stopped part-way, "+
					"restored then and perhaps used since; admin ticket issues a new one)\n", plural(skipped, "ticket"))
			}
			if n := f.Header.LeftOutCount(); n > 0 {
				fmt.Fprintf(c.out, "(the backup had left out %s as damaged: %s; a user among them has no record here and links again)\n",
					plural(n, "record"), cell(f.Header.LeftOutNames()))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "overwrite users who already have a record")
	return cmd
}

func isAre(n int) string {
	if n == 1 {
		return " is"
	}
	return " are"
}

// checkBackupKey checks f's records and tickets against cfg's secret_key_file, before a store is
// opened (and maybe created) for the restore. A backup without records or tickets needs no key;
// one with them cannot be checked against a key file that does not exist, and a new key could
// not open them: refused, naming secret_key_file.
func checkBackupKey(cfg *config.Config, f *admin.BackupFile) error {
	if f.Header.Users+f.Header.Tickets == 0 {
		return nil
	}
	if _, err := os.Stat(cfg.SecretKeyFile); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: its %s are sealed under the secret key file the backup was made with, but secret_key_file %s "+
			"does not exist: copy that key file there, or set secret_key_file to where it is (a new key could not open them)",
			admin.ErrBadBackup, admin.BackupHeader{Users: f.Header.Users, Tickets: f.Header.Tickets}.Summary(), cfg.SecretKeyFile)
	}
	key, _, err := store.LoadKey(cfg.SecretKeyFile, "", true)
	if err != nil {
		return err
	}
	return admin.CheckBackupKey(key, f)
}

// readBackup reads and checks the backup at path ("-": stdin), all of it (admin.ParseBackup).
func readBackup(path string, stdin io.Reader) (*admin.BackupFile, error) {
	r := stdin
	tooLarge := fmt.Errorf("%w: larger than %d bytes", admin.ErrBadBackup, admin.MaxBackupBytes)
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		// A file over the limit is refused before it is read: reading it would take as much memory.
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > admin.MaxBackupBytes {
			return nil, tooLarge
		}
		r = f
	}
	raw, err := io.ReadAll(io.LimitReader(r, admin.MaxBackupBytes+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > admin.MaxBackupBytes {
		return nil, tooLarge
	}
	return admin.ParseBackup(raw)
}

// writeBackup runs dump, which passes every item to its fn and returns the header, and writes
// the backup to path, or to stdout for "-". The items go first to a spool file (unlinked at
// once, so nothing is left behind), because the header before them holds their counts. The
// backup itself is written to path.tmp (mode 0600), synced, and renamed to path: path is the
// complete backup or nothing. Without force an existing path is not replaced.
func writeBackup(path string, force bool, stdout io.Writer, dump func(fn func(store.Item) error) (admin.BackupHeader, error)) (admin.BackupHeader, error) {
	dir := os.TempDir()
	if path != "-" {
		dir = filepath.Dir(path)
	}
	spool, err := os.CreateTemp(dir, ".gatekeeper-backup-*")
	if err != nil {
		return admin.BackupHeader{}, err
	}
	os.Remove(spool.Name())
	defer spool.Close()

	bw := bufio.NewWriterSize(spool, 64<<10)
	enc := json.NewEncoder(bw)
	var n admin.BackupHeader
	h, err := dump(func(it store.Item) error {
		switch it.Kind {
		case store.ItemUser:
			n.Users++
		case store.ItemTicket:
			n.Tickets++
		case store.ItemEvent:
			n.Events++
		}
		return enc.Encode(it)
	})
	if err != nil {
		return h, err
	}
	if n.Users != h.Users || n.Tickets != h.Tickets || n.Events != h.Events {
		return h, fmt.Errorf("counted %s, but the store reported %s", n.Summary(), h.Summary())
	}
	if err := bw.Flush(); err != nil {
		return h, err
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return h, err
	}
	if path == "-" {
		if _, err := stdout.Write(h.MarshalLine()); err != nil {
			return h, err
		}
		_, err := io.Copy(stdout, spool)
		return h, err
	}

	tmp := path + ".tmp"
	// A FILE.tmp left by an interrupted backup is replaced; O_EXCL then refuses a link planted
	// in its place.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return h, err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return h, err
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(h.MarshalLine()); err != nil {
		return h, err
	}
	if _, err := io.Copy(f, spool); err != nil {
		return h, err
	}
	if err := f.Sync(); err != nil {
		return h, err
	}
	if err := f.Close(); err != nil {
		return h, err
	}
	if err := publish(tmp, path, force); err != nil {
		return h, err
	}
	done = true
	// The rename is durable once the directory is.
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return h, nil
}

// publish renames tmp to path; without force it does not replace an existing path (a hard link
// fails if path exists; where hard links are not supported, a check right before the rename).
func publish(tmp, path string, force bool) error {
	if force {
		return os.Rename(tmp, path)
	}
	err := os.Link(tmp, path)
	switch {
	case err == nil:
		os.Remove(tmp) // path is the complete backup either way
		return nil
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%s exists; pass --force to overwrite it", path)
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s exists; pass --force to overwrite it", path)
	}
	return os.Rename(tmp, path)
}
