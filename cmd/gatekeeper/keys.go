package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"gatekeeper/admin"
	"gatekeeper/enroll"
	"gatekeeper/gatekeeper"
	"gatekeeper/gatekeeper/store"
)

// keysBackend is what `admin keys` needs: *admin.Client over the daemon's socket, localBackend
// on the database directly.
type keysBackend interface {
	Keys(ctx context.Context, user string) ([]store.Key, error)
	AddKey(ctx context.Context, user string, req admin.AddKeyRequest) (store.Key, error)
	RevokeKey(ctx context.Context, user, fp string) (admin.RevokeKeyResult, error)
	ImportKeys(ctx context.Context, user string, data []byte) (admin.ImportKeysResult, error)
}

// consoleContext is ctx as the console: the actor and door of the audit events the enroll
// service writes for a command working on the database directly.
func consoleContext(ctx context.Context) context.Context {
	return enroll.WithDoor(enroll.WithActor(ctx, enroll.ActorConsole), store.DoorConsole)
}

func (b *localBackend) Keys(ctx context.Context, user string) ([]store.Key, error) {
	return b.enroll.Keys(ctx, user)
}

func (b *localBackend) AddKey(ctx context.Context, user string, req admin.AddKeyRequest) (store.Key, error) {
	return admin.AddKey(consoleContext(ctx), b.enroll, user, req, enroll.ActorConsole)
}

// RevokeKey removes the key. No daemon runs here, so no live session of this node used it;
// in a cluster the other nodes are asked to end the sessions that logged in with it.
func (b *localBackend) RevokeKey(ctx context.Context, user, fp string) (admin.RevokeKeyResult, error) {
	b.enroll.EndKeySessions = func(user, fp string) int {
		n, _, err := endKeySessionsElsewhere(ctx, b.st, user, fp)
		if err != nil {
			b.log.Error("the nodes could not be asked to end the sessions of the revoked key", "user", user, "err", err)
		}
		return n
	}
	k, ended, err := b.enroll.RevokeKey(consoleContext(ctx), user, fp)
	if err != nil {
		return admin.RevokeKeyResult{}, err
	}
	return admin.RevokeKeyResult{User: user, Key: k, SessionsEnded: ended}, nil
}

func (b *localBackend) ImportKeys(ctx context.Context, user string, data []byte) (admin.ImportKeysResult, error) {
	return admin.ImportKeys(consoleContext(ctx), b.enroll, user, data, enroll.ActorConsole)
}

// maxPubKeyFile bounds a public key file given to keys add.
const maxPubKeyFile = 64 << 10

// keysOffNote warns, on stderr, when the config does not use registered keys yet.
func keysOffNote(cmd *cobra.Command, c *adminConn) {
	if !c.cfg.Keys.Enabled {
		fmt.Fprintln(cmd.ErrOrStderr(), "note: keys.enabled is false in this config: the gatekeeper does not accept registered keys until it is true")
	}
}

func newAdminLanderCACmd(o *adminOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "lander-ca",
		Short: "Print the gatekeeper's user CA public key, for the lander's TrustedUserCAKeys",
		Long: `Print the public key of the user CA (keys.lander_ca_file) that signs the short-lived
certificate of each key login at the lander, as one line for the lander's sshd:

  gatekeeper admin lander-ca > /etc/ssh/gatekeeper_user_ca.pub
  # sshd_config: TrustedUserCAKeys /etc/ssh/gatekeeper_user_ca.pub

The daemon creates the CA on its first start with keys.enabled; until then there is none.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := o.wantJSON()
			if err != nil {
				return err
			}
			cfg, err := loadConfig(cmd, nil)
			if err != nil {
				return err
			}
			line, err := gatekeeper.ReadLanderCA(cfg.Keys.LanderCAFile)
			if err != nil {
				return fmt.Errorf("keys.lander_ca_file: %w", err)
			}
			if !cfg.Keys.Enabled {
				fmt.Fprintln(cmd.ErrOrStderr(), "note: keys.enabled is false in this config, so the gatekeeper signs no certificates with this CA")
			}
			if asJSON {
				c := &adminConn{out: cmd.OutOrStdout()}
				return c.writeJSON(map[string]string{
					"lander_ca_file":       cfg.Keys.LanderCAFile,
					"trusted_user_ca_keys": strings.TrimSpace(string(line)),
				})
			}
			_, err = cmd.OutOrStdout().Write(line)
			return err
		},
	}
}

func newAdminKeysCmd(o *adminOpts) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "SSH keys registered at the gatekeeper: list, add, revoke, import",
		Long: `SSH keys registered at the gatekeeper (keys.enabled) are a first factor in place of the
password. A personal key still needs a code from the user's app outside the trusted networks;
an automation key (--automation) logs in without one, only from its networks (--from) and only
until it expires (at most keys.automation_max_lifetime).`,
	}
	cmd.AddCommand(newKeysListCmd(o), newKeysAddCmd(o), newKeysRevokeCmd(o), newKeysImportCmd(o))
	return cmd
}

// keyKind is "automation" or "personal".
func keyKind(k store.Key) string {
	if k.Automation {
		return "automation"
	}
	return "personal"
}

// keyExpiry is when k expires, for people: "never", or the time, "(expired)" once it has.
func keyExpiry(k store.Key, now time.Time) string {
	if k.Expires.IsZero() {
		return "never"
	}
	s := fmtTime(k.Expires)
	if !now.Before(k.Expires) {
		s += " (expired)"
	}
	return s
}

// keysTable prints lists' keys as the table of keys list.
func keysTable(w io.Writer, lists []admin.UserKeys, now time.Time) error {
	tw := table(w)
	row(tw, "USER", "FINGERPRINT", "LABEL", "KIND", "FROM", "EXPIRES", "LAST USED", "COMMAND")
	for _, l := range lists {
		for _, k := range l.Keys {
			row(tw, l.User, k.Fingerprint, k.Label, keyKind(k), strings.Join(k.From, ","), keyExpiry(k, now), fmtTime(k.LastUsed), k.Command)
		}
	}
	return tw.Flush()
}

func newKeysListCmd(o *adminOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "list [USER]",
		Short: "List USER's registered SSH keys, or every user's",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if err := store.CheckName(args[0]); err != nil {
					return err
				}
			}
			c, err := o.open(cmd, "", readsStore)
			if err != nil {
				return err
			}
			defer c.close()
			lists := []admin.UserKeys{}
			if len(args) == 1 {
				keys, err := c.be.Keys(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if keys == nil {
					keys = []store.Key{}
				}
				lists = append(lists, admin.UserKeys{User: args[0], Keys: keys})
			} else {
				users, err := c.be.Users(cmd.Context())
				if err != nil {
					return err
				}
				for _, u := range users {
					if len(u.Keys) > 0 {
						lists = append(lists, admin.UserKeys{User: u.Name, Keys: u.Keys})
					}
				}
			}
			if c.json {
				if len(args) == 1 {
					return c.writeJSON(lists[0])
				}
				return c.writeJSON(lists)
			}
			n := 0
			for _, l := range lists {
				n += len(l.Keys)
			}
			if n == 0 {
				if len(args) == 1 {
					fmt.Fprintf(c.out, "%s has no registered SSH keys.\n", args[0])
				} else {
					fmt.Fprintln(c.out, "No user has registered SSH keys.")
				}
				return nil
			}
			return keysTable(c.out, lists, time.Now())
		},
	}
}

// parseLifetime reads --expires: a Go duration (36h, 90m) or whole days (30d), more than zero.
func parseLifetime(v string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(v, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n > 0 && n <= 100*365 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	} else if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return d, nil
	}
	return 0, fmt.Errorf("--expires %q: want a duration from now such as 36h or 30d", v)
}

// readLimited reads path ("-": in) up to limit bytes; more is an error.
func readLimited(path string, in io.Reader, limit int64) ([]byte, error) {
	r := in
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: more than %d bytes", path, limit)
	}
	return data, nil
}

func newKeysAddCmd(o *adminOpts) *cobra.Command {
	var label, expires, command string
	var from []string
	var automation bool
	cmd := &cobra.Command{
		Use:   "add USER PUBKEY_FILE [--label L] [--automation --from CIDR[,CIDR] [--expires DUR] [--command CMD]]",
		Short: "Register an SSH public key for USER (PUBKEY_FILE - reads standard input)",
		Long: `Register the public key in PUBKEY_FILE (one line such as "ssh-ed25519 AAAA... comment";
- reads standard input) for USER. The label defaults to the key's comment.

An automation key (--automation) is for scripts: it logs in without a code, only from the
networks of --from (addresses or CIDR prefixes), and expires after --expires (a duration such
as 36h or 30d; default and at most keys.automation_max_lifetime). --command makes the key run
only that command at the lander. --from, --expires and --command also restrict a personal key.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			user, file := args[0], args[1]
			if err := store.CheckName(user); err != nil {
				return err
			}
			req := admin.AddKeyRequest{Label: label, Automation: automation, From: from, Command: command}
			if expires != "" {
				d, err := parseLifetime(expires)
				if err != nil {
					return err
				}
				req.Expires = time.Now().Add(d)
			}
			if automation && len(from) == 0 {
				return errors.New("--automation needs --from: the networks the key may log in from")
			}
			data, err := readLimited(file, cmd.InOrStdin(), maxPubKeyFile)
			if err != nil {
				return fmt.Errorf("public key: %w", err)
			}
			req.PublicKey = string(data)
			c, err := o.open(cmd, "", addsToStore)
			if err != nil {
				return err
			}
			defer c.close()
			k, err := c.be.AddKey(cmd.Context(), user, req)
			if err != nil {
				return fmt.Errorf("cannot add the key for %s: %w", user, err)
			}
			keysOffNote(cmd, c)
			if c.json {
				return c.writeJSON(admin.UserKeys{User: user, Keys: []store.Key{k}})
			}
			fmt.Fprintf(c.out, "%s: added %s key %s%s; %s.\n", user, keyKind(k), k.Fingerprint, quotedLabel(k), keyTerms(k, time.Now()))
			return nil
		},
	}
	cmd.Flags().StringVar(&label, "label", "", "name of the key (default: its comment)")
	cmd.Flags().BoolVar(&automation, "automation", false, "a key for scripts: no code, only from --from, until it expires")
	cmd.Flags().StringSliceVar(&from, "from", nil, "networks the key may log in from (addresses or CIDR prefixes, comma-separated)")
	cmd.Flags().StringVar(&expires, "expires", "", "lifetime from now (36h, 30d); automation keys default to keys.automation_max_lifetime")
	cmd.Flags().StringVar(&command, "command", "", "the only command the key may run at the lander")
	return cmd
}

// quotedLabel is ` ("label")`, or "" for a key without one.
func quotedLabel(k store.Key) string {
	if k.Label == "" {
		return ""
	}
	return " (" + cell(strconv.Quote(k.Label)) + ")"
}

// keyTerms says where from, until when and for what a key works.
func keyTerms(k store.Key, now time.Time) string {
	var parts []string
	if len(k.From) > 0 {
		parts = append(parts, "from "+strings.Join(k.From, ","))
	}
	if k.Expires.IsZero() {
		parts = append(parts, "never expires")
	} else {
		parts = append(parts, "expires "+keyExpiry(k, now))
	}
	if k.Command != "" {
		parts = append(parts, "command "+cell(strconv.Quote(k.Command)))
	}
	return strings.Join(parts, ", ")
}

func newKeysRevokeCmd(o *adminOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke USER FINGERPRINT",
		Short: "Remove USER's key (SHA256:... from keys list) and end the sessions that logged in with it",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			user, fp := args[0], args[1]
			if err := store.CheckName(user); err != nil {
				return err
			}
			c, err := o.open(cmd, "", readsStore)
			if err != nil {
				return err
			}
			defer c.close()
			res, err := c.be.RevokeKey(cmd.Context(), user, fp)
			if err != nil {
				return err
			}
			if c.json {
				return c.writeJSON(res)
			}
			msg := fmt.Sprintf("%s: revoked %s%s", user, res.Key.Fingerprint, quotedLabel(res.Key))
			switch {
			case c.daemonRunning():
				msg += fmt.Sprintf("; %s ended.", plural(res.SessionsEnded, "live session"))
			case c.cfg.Store.Backend == "etcd":
				msg += fmt.Sprintf("; no daemon runs here: the other nodes were asked to end %s.", plural(res.SessionsEnded, "live session"))
			default:
				msg += " (no daemon is running here, so no live sessions were ended)."
			}
			fmt.Fprintln(c.out, msg)
			return nil
		},
	}
}

// keysImport is one user's outcome in `keys import`.
type keysImport struct {
	User    string               `json:"user"`
	File    string               `json:"file"`
	Added   []admin.ImportedLine `json:"added"`
	Skipped []admin.ImportedLine `json:"skipped"`
	// Error says why the file could not be imported at all.
	Error string `json:"error,omitempty"`
}

func newKeysImportCmd(o *adminOpts) *cobra.Command {
	var allUsers bool
	var homeRoot string
	cmd := &cobra.Command{
		Use:   "import {USER AUTHORIZED_KEYS_FILE | --all-users [--home-root DIR]}",
		Short: "Register the keys of an authorized_keys file (from=, command= and expiry-time= carried over)",
		Long: `Register every key of an authorized_keys file (- reads standard input) for USER, as
personal keys. The options from= (addresses and CIDR prefixes only), command= and expiry-time=
are carried over; the others (no-pty, restrict, permitopen=, ...) are not, and each key's row
names them. Keys USER has already, keys of types not accepted (DSA, RSA under 2048 bits,
certificates), expired keys and from= host name patterns are skipped, each with its reason; so
are lines sshd would refuse (an unknown or repeated option) and lines restricting the key in a
way the gatekeeper cannot keep: command="" (which runs nothing), verify-required on a FIDO key
(the gatekeeper does not check its PIN), no-pty, restrict, ... without command=.

With --all-users, every directory under --home-root whose name is a user name and which holds
.ssh/authorized_keys is imported for that user, unless sshd's StrictModes would ignore the file:
the file, .ssh or the home directory owned by someone other than the user (by the user
database's uid) or root, or writable by group or others. The exit code is 1 if a file could not
be read; skipped keys are not errors.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if allUsers {
				if len(args) != 0 {
					return errors.New("--all-users takes no USER or FILE")
				}
				return nil
			}
			if cmd.Flags().Changed("home-root") {
				return errors.New("--home-root needs --all-users")
			}
			if len(args) != 2 {
				return fmt.Errorf("want USER and AUTHORIZED_KEYS_FILE (or --all-users), got %d arguments", len(args))
			}
			return store.CheckName(args[0])
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var one []byte
			if !allUsers {
				var err error
				if one, err = readLimited(args[1], cmd.InOrStdin(), enroll.MaxKeyFileSize); err != nil {
					return fmt.Errorf("cannot import keys for %s: %w", args[0], err)
				}
			}
			c, err := o.open(cmd, "", addsToStore)
			if err != nil {
				return err
			}
			defer c.close()
			if !allUsers {
				res, err := c.be.ImportKeys(cmd.Context(), args[0], one)
				if err != nil {
					return fmt.Errorf("cannot import keys for %s: %w", args[0], err)
				}
				keysOffNote(cmd, c)
				if c.json {
					return c.writeJSON(res)
				}
				return writeKeysImports(c.out, []keysImport{{User: res.User, File: args[1], Added: res.Added, Skipped: res.Skipped}})
			}
			keysOffNote(cmd, c)
			return importAllKeys(cmd.Context(), c, homeRoot, userUID)
		},
	}
	cmd.Flags().BoolVar(&allUsers, "all-users", false, "import every user's ~/.ssh/authorized_keys under --home-root")
	cmd.Flags().StringVar(&homeRoot, "home-root", "/home", "where the home directories are, with --all-users")
	return cmd
}

// writeKeysImports prints a table of every key line's outcome, then a summary line per user.
func writeKeysImports(w io.Writer, rows []keysImport) error {
	tw := table(w)
	row(tw, "USER", "LINE", "RESULT", "FINGERPRINT", "LABEL", "DETAIL")
	for _, r := range rows {
		if r.Error != "" {
			row(tw, r.User, "", "error", "", "", r.Error)
			continue
		}
		for _, l := range r.Added {
			row(tw, r.User, strconv.Itoa(l.Line), "added", l.Fingerprint, l.Label, lineDetail(l, ""))
		}
		for _, l := range r.Skipped {
			row(tw, r.User, strconv.Itoa(l.Line), "skipped", l.Fingerprint, l.Label, lineDetail(l, l.Reason))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rows {
		if r.Error != "" {
			fmt.Fprintf(w, "%s: %s not imported: %s\n", r.User, r.File, cell(r.Error))
			continue
		}
		fmt.Fprintf(w, "%s: %s added, %d skipped from %s.\n", r.User, plural(len(r.Added), "key"), len(r.Skipped), r.File)
	}
	return nil
}

// lineDetail is an imported line's DETAIL cell: the skip reason, or what the key carries, and
// the options not carried over.
func lineDetail(l admin.ImportedLine, reason string) string {
	var parts []string
	if reason != "" {
		parts = append(parts, reason)
	} else {
		if len(l.From) > 0 {
			parts = append(parts, "from "+strings.Join(l.From, ","))
		}
		if !l.Expires.IsZero() {
			parts = append(parts, "expires "+fmtTime(l.Expires))
		}
		if l.Command != "" {
			parts = append(parts, "command "+strconv.Quote(l.Command))
		}
	}
	if len(l.Dropped) > 0 {
		parts = append(parts, "not carried over: "+strings.Join(l.Dropped, " "))
	}
	return strings.Join(parts, "; ")
}

// importAllKeys is keys import --all-users: it imports the keys under homeRoot (see
// importKeyHomes) and writes a row per file to c; the error says how many files could not be
// imported. uidOf finds a user's uid (userUID; tests give their own users).
func importAllKeys(ctx context.Context, c *adminConn, homeRoot string, uidOf func(name string) (uint32, error)) error {
	rows, err := importKeyHomes(ctx, c.be, homeRoot, uidOf)
	if err != nil {
		return err
	}
	if c.json {
		if err := c.writeJSON(rows); err != nil {
			return err
		}
	} else if len(rows) == 0 {
		fmt.Fprintf(c.out, "No home directory under %s has a .ssh/authorized_keys file.\n", homeRoot)
	} else if err := writeKeysImports(c.out, rows); err != nil {
		return err
	}
	failed := 0
	for _, r := range rows {
		if r.Error != "" {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d authorized_keys files under %s could not be imported", failed, len(rows), homeRoot)
	}
	return nil
}

// importKeyHomes imports .ssh/authorized_keys of every directory under root named like a user,
// for that user. A directory without the file is no row; a file that cannot be read or imported
// is an error row, and the walk goes on.
func importKeyHomes(ctx context.Context, be adminBackend, root string, uidOf func(name string) (uint32, error)) ([]keysImport, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("--home-root: %w", err)
	}
	rows := []keysImport{}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return rows, err
		}
		name := e.Name()
		if store.CheckName(name) != nil {
			continue
		}
		home := filepath.Join(root, name)
		// Stat, not Lstat: sites link home directories elsewhere. The files inside are the
		// user's, and are opened without following a link.
		if fi, err := os.Stat(home); err != nil || !fi.IsDir() {
			continue
		}
		path := filepath.Join(home, ".ssh", "authorized_keys")
		if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			continue
		}
		r := keysImport{User: name, File: path, Added: []admin.ImportedLine{}, Skipped: []admin.ImportedLine{}}
		uid, err := uidOf(name)
		if err != nil {
			r.Error = fmt.Sprintf("%s is not in the user database (%v), so the owner of the file cannot be checked", name, err)
			rows = append(rows, r)
			continue
		}
		if err := strictModes(name, uid, home, path); err != nil {
			r.Error = err.Error()
			rows = append(rows, r)
			continue
		}
		data, err := readUserFile(path)
		if err != nil {
			r.Error = err.Error()
			rows = append(rows, r)
			continue
		}
		res, err := be.ImportKeys(ctx, name, data)
		if err != nil {
			r.Error = err.Error()
		} else {
			r.Added, r.Skipped = res.Added, res.Skipped
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// userUID is the uid of the user named name in the user database, as sshd finds the user
// (getpwnam); --all-users checks the owners of the user's files against it.
func userUID(name string) (uint32, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, err
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("uid %q: %w", u.Uid, err)
	}
	return uint32(uid), nil
}

// strictModes refuses an authorized_keys file that sshd (StrictModes, its default) would
// ignore: the file, its .ssh directory or the home directory owned by someone other than the
// user (uid, from the user database, as sshd knows the user) or root, or writable by group or
// others. sshd checks every directory from the file up to the home directory, and the home
// itself ("bad ownership or modes for directory"). Whoever could write such a file, or replace
// the .ssh directory, could otherwise register a key for the user through an import.
func strictModes(name string, uid uint32, home, path string) error {
	for _, p := range []string{path, filepath.Dir(path), home} {
		var fi fs.FileInfo
		var err error
		if p == home {
			fi, err = os.Stat(p) // sites link home directories elsewhere: sshd checks the real one
		} else {
			fi, err = os.Lstat(p)
		}
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return nil // never followed: readUserFile says so
		}
		owner := fi.Sys().(*syscall.Stat_t).Uid
		switch {
		case owner != uid && owner != 0:
			return fmt.Errorf("%s belongs to uid %d, not to %s (uid %d) or root: sshd would ignore it too", p, owner, name, uid)
		case fi.Mode().Perm()&0o022 != 0:
			return fmt.Errorf("%s is writable by group or others (mode %04o): sshd would ignore it too", p, fi.Mode().Perm())
		}
	}
	return nil
}

// readUserFile reads a file in a user's home directory as root would be asked to: neither the
// .ssh directory nor the file may be a symbolic link (it could name any file on the system),
// the file must be a regular one (a FIFO would hang the command), of at most
// enroll.MaxKeyFileSize bytes.
func readUserFile(path string) ([]byte, error) {
	if fi, err := os.Lstat(filepath.Dir(path)); err != nil {
		return nil, err
	} else if fi.Mode()&fs.ModeSymlink != 0 || !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory (a symbolic link is not followed)", filepath.Dir(path))
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%s is a symbolic link, which is not followed", path)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if fi.Size() > enroll.MaxKeyFileSize {
		return nil, fmt.Errorf("%s has %d bytes, at most %d are read", path, fi.Size(), enroll.MaxKeyFileSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, enroll.MaxKeyFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > enroll.MaxKeyFileSize {
		return nil, fmt.Errorf("%s: more than %d bytes", path, enroll.MaxKeyFileSize)
	}
	return data, nil
}

// writeShowKeys prints the SSH keys and remembered devices of admin show.
func writeShowKeys(w io.Writer, info admin.UserInfo, now time.Time) error {
	if len(info.Keys) > 0 {
		fmt.Fprintln(w, "SSH keys:")
		tw := table(w)
		row(tw, "  FINGERPRINT", "LABEL", "KIND", "FROM", "EXPIRES", "LAST USED", "COMMAND")
		for _, k := range info.Keys {
			row(tw, "  "+k.Fingerprint, k.Label, keyKind(k), strings.Join(k.From, ","), keyExpiry(k, now), fmtTime(k.LastUsed), k.Command)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(info.Remembered) > 0 {
		fmt.Fprintln(w, "Remembered devices (key and network that skip the code):")
		tw := table(w)
		row(tw, "  KEY", "NETWORK", "SINCE", "UNTIL")
		for _, m := range info.Remembered {
			until := fmtTime(m.Until)
			if !now.Before(m.Until) {
				until += " (over)"
			}
			row(tw, "  "+m.Fingerprint, m.Network, fmtTime(m.Since), until)
		}
		return tw.Flush()
	}
	return nil
}
