package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"gatekeeper/admin"
	"gatekeeper/config"
	"gatekeeper/enroll"
	"gatekeeper/gatekeeper"
	"gatekeeper/gatekeeper/gauth"
	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/store/bolt"
	"gatekeeper/gatekeeper/store/etcd"
)

// Time layouts of the tables: local time, to the minute for states and to the second where the
// order of events matters.
const (
	tableTime  = "2006-01-02 15:04"
	tableStamp = "2006-01-02 15:04:05"
)

// gauthFile is the file pam_google_authenticator keeps in each home directory.
const gauthFile = ".google_authenticator"

// adminBackend is what the admin commands need from the user database. *admin.Client serves it
// from the running daemon; localBackend from the database file when no daemon runs (bbolt lets
// only one process open it).
type adminBackend interface {
	Users(ctx context.Context) ([]admin.UserInfo, error)
	User(ctx context.Context, user string) (admin.UserInfo, error)
	ResetWith(ctx context.Context, user string, opts admin.ResetOptions) (admin.ResetResult, error)
	Ticket(ctx context.Context, user string) (string, time.Time, error)
	Audit(ctx context.Context, q store.EventQuery) ([]store.Event, error)
	Import(ctx context.Context, user string, req admin.ImportRequest) (admin.ImportResult, error)
	Backup(ctx context.Context, audit bool, fn func(store.Item) error) (admin.BackupHeader, error)
	Restore(ctx context.Context, f *admin.BackupFile, force bool) (admin.RestoreResult, error)
	keysBackend
}

var _ adminBackend = (*admin.Client)(nil)

// localBackend works on the database directly, as the console: the audit log names
// enroll.ActorConsole as the actor.
type localBackend struct {
	st     store.Store
	enroll *enroll.Service
	log    *slog.Logger
	// backend and node name the store in a backup's header.
	backend, node string
}

var _ adminBackend = (*localBackend)(nil)

func (b *localBackend) Users(context.Context) ([]admin.UserInfo, error) {
	return admin.ListInfos(b.st, func(u store.User) admin.UserInfo { return admin.UserInfoOf(u, b.enroll.ConfirmWithin) })
}

func (b *localBackend) User(_ context.Context, name string) (admin.UserInfo, error) {
	u, err := b.st.Get(name)
	if err != nil {
		return admin.UserInfo{}, err
	}
	return admin.UserInfoOf(u, b.enroll.ConfirmWithin), nil
}

// ResetWith forgets name's device link, and their SSH keys with opts.Keys. Without a daemon
// there are no live sessions here to end; in a cluster (etcd) the nodes are asked to end the
// user's sessions, as a daemon's reset would.
func (b *localBackend) ResetWith(ctx context.Context, name string, opts admin.ResetOptions) (admin.ResetResult, error) {
	res, _, err := admin.ResetRecord(b.st, name, opts)
	if err != nil {
		return admin.ResetResult{}, err
	}
	ended, shared := 0, false
	if store.CheckName(name) == nil { // else a record put under an invalid name by hand: no one's sessions
		var endErr error
		ended, shared, endErr = endSessionsElsewhere(ctx, b.st, name)
		if endErr != nil {
			b.log.Error("the nodes could not be asked to end the user's live sessions", "user", name, "err", endErr)
		}
	}
	res.SessionsEnded = ended
	if err := admin.NothingToReset(res, ""); err != nil {
		return admin.ResetResult{}, err
	}
	detail := admin.ResetDetail(res, opts)
	if shared {
		detail += fmt.Sprintf("; the nodes were asked to end %d live sessions", ended)
	} else {
		detail += "; no daemon running, so no live sessions"
	}
	if err := b.st.Append(store.Event{Kind: store.EventReset, User: name, Actor: enroll.ActorConsole, Door: store.DoorConsole,
		Detail: detail}); err != nil {
		// The reset has happened; reporting it as failed would be wrong.
		b.log.Error("audit log write failed", "err", err, "kind", store.EventReset, "user", name)
	}
	return res, nil
}

func (b *localBackend) Ticket(ctx context.Context, name string) (string, time.Time, error) {
	return b.enroll.Ticket(ctx, name, enroll.ActorConsole)
}

// Audit applies the daemon's default limit, so that both paths answer alike.
func (b *localBackend) Audit(_ context.Context, q store.EventQuery) ([]store.Event, error) {
	if q.Limit == 0 {
		q.Limit = admin.DefaultAuditLimit
	}
	return b.st.Events(q)
}

func (b *localBackend) Import(_ context.Context, name string, req admin.ImportRequest) (admin.ImportResult, error) {
	return admin.Import(b.st, name, req, enroll.ActorConsole, time.Now(), b.log)
}

// noDaemonError is the answer of the commands that only make sense with a running daemon.
// cluster is set for a node of several (etcd), where the other nodes' daemons may run.
type noDaemonError struct {
	socket, why string
	cluster     bool
}

func (e *noDaemonError) Error() string {
	if e.cluster {
		return fmt.Sprintf("no gatekeeper daemon is running on this node (admin socket %s): run the command on a node whose daemon runs, which reaches the whole cluster", e.socket)
	}
	return fmt.Sprintf("no gatekeeper daemon is running (admin socket %s): %s", e.socket, e.why)
}

func (e *noDaemonError) Unwrap() error { return admin.ErrNoDaemon }

// adminConn is an admin command's connection: to the daemon (client set) or to the database.
type adminConn struct {
	cfg *config.Config
	// client is the daemon's admin socket; nil when no daemon runs.
	client *admin.Client
	be     adminBackend
	close  func()
	out    io.Writer
	json   bool
	// shared is whether the store is a cluster's (etcd): without a daemon here, a reset still
	// reaches the live sessions of the nodes.
	shared bool
}

// adminOpts holds the flags every admin command shares.
type adminOpts struct {
	output string
}

// wantJSON reports whether -o json was asked for, and refuses formats that do not exist.
func (o *adminOpts) wantJSON() (bool, error) {
	switch o.output {
	case "table", "":
		return false, nil
	case "json":
		return true, nil
	}
	return false, fmt.Errorf("--output %q: want table or json", o.output)
}

// storeUse says whether an admin command, run without a daemon, may create the database.
type storeUse bool

const (
	// readsStore: the command reads or removes records (list, show, audit, backup, reset,
	// revoke). A database file that is not there is an error, most likely a mistyped db or
	// --config, never an empty database created to answer from.
	readsStore storeUse = false
	// addsToStore: the command adds records (a ticket, keys, an import or a restore), which
	// an admin may do before the daemon first starts; the database is created as serve would.
	addsToStore storeUse = true
)

// open connects an admin command like openLinker does: to the daemon over its admin socket
// when one answers, else to the database directly. daemonOnly, when not empty, is why the
// command needs the daemon; it then fails without one. use says whether the command may
// create the database.
func (o *adminOpts) open(cmd *cobra.Command, daemonOnly string, use storeUse) (*adminConn, error) {
	return o.openChecked(cmd, daemonOnly, use, nil)
}

// openChecked is open, with check (when not nil) run before a store is opened directly, which
// may create it: a restore checks its backup against the key file first.
func (o *adminOpts) openChecked(cmd *cobra.Command, daemonOnly string, use storeUse, check func(*config.Config) error) (*adminConn, error) {
	asJSON, err := o.wantJSON()
	if err != nil {
		return nil, err
	}
	cfg, err := loadConfig(cmd, nil)
	if err != nil {
		return nil, err
	}
	c := &adminConn{cfg: cfg, out: cmd.OutOrStdout(), json: asJSON, close: func() {}}
	client := admin.NewClient(cfg.Admin.Socket)
	err = client.Ping(cmd.Context())
	if err == nil {
		c.client, c.be = client, client
		return c, nil
	}
	if !errors.Is(err, admin.ErrNoDaemon) {
		// Permission denied on the socket, a daemon that does not answer: the client's
		// message says what to do.
		return nil, err
	}
	if daemonOnly != "" {
		return nil, &noDaemonError{socket: cfg.Admin.Socket, why: daemonOnly, cluster: cfg.Store.Backend == "etcd"}
	}
	if use == readsStore {
		if err := databaseExists(cfg); err != nil {
			return nil, err
		}
	}
	if check != nil {
		if err := check(cfg); err != nil {
			return nil, err
		}
	}
	st, err := openStore(cfg, slog.New(slog.DiscardHandler), use == readsStore)
	if err != nil {
		var inUse *bolt.InUseError
		if errors.As(err, &inUse) {
			return nil, fmt.Errorf("no gatekeeper daemon answers on admin socket %s, but %w; "+
				"if that is the daemon, its admin.socket differs: pass its config with --config", cfg.Admin.Socket, err)
		}
		return nil, err
	}
	// Warnings only: the audit log failing to record an action that succeeded.
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	c.be = &localBackend{
		st: st,
		enroll: &enroll.Service{
			Store: st, Issuer: cfg.TOTP.Issuer, Skew: cfg.TOTP.Skew,
			ConfirmWithin: cfg.Enroll.ConfirmWithin, Log: log,
			KeyPolicy: enroll.KeyPolicy{AutomationMaxLifetime: cfg.Keys.AutomationMaxLifetime},
		},
		log:     log,
		backend: cmp.Or(cfg.Store.Backend, "bolt"),
		node:    cfg.NodeName,
	}
	_, c.shared = st.(*etcd.Store)
	c.close = func() { st.Close() }
	return c, nil
}

// daemonRunning is how the reset and import messages tell whether live sessions were looked at.
func (c *adminConn) daemonRunning() bool { return c.client != nil }

// writeJSON prints v indented, for scripts.
func (c *adminConn) writeJSON(v any) error {
	enc := json.NewEncoder(c.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table returns a writer that aligns tab-separated columns; Flush it at the end.
func table(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// row writes one table row; cells are cleaned of anything that would break the table or
// reach the terminal as a control sequence.
func row(tw io.Writer, cells ...string) {
	for i := range cells {
		cells[i] = cell(cells[i])
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

// cell is s fit for a table cell: "-" when empty, quoted with escapes when it holds anything but
// printable characters. The audit log holds what SSH clients typed (user names of refused
// logins), which must not be able to move the cursor or recolour an admin's terminal.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	if !utf8.ValidString(s) {
		return strconv.QuoteToASCII(s)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.QuoteToASCII(s)
		}
	}
	return s
}

// fmtTime is t in local time to the minute, "" (shown as "-") when zero.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format(tableTime)
}

// fmtBytes is n in binary units: "812 B", "1.5 KiB", "3.0 GiB".
func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// plural is "1 live session" or "2 live sessions".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// newAdminCmd is `gatekeeper admin` and its subcommands.
func newAdminCmd() *cobra.Command {
	o := &adminOpts{}
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Manage users, tickets, the audit log and live sessions",
		Long: `Manage users, tickets, the audit log and live sessions.

The commands talk to the running daemon over its admin socket (admin.socket; root or the
gatekeeper group), which records the caller's uid in the audit log. When no daemon runs they
open the database directly and the audit log names "console"; sessions, kill and unlock then
fail, as live sessions and lockouts exist only in the daemon (with several nodes on etcd: run
them on a node whose daemon runs, which reaches the others).`,
	}
	cmd.PersistentFlags().StringVarP(&o.output, "output", "o", "table", "output format: table (for people) or json (for scripts)")
	cmd.AddCommand(
		newAdminListCmd(o), newAdminShowCmd(o), newAdminResetCmd(o), newAdminUnlockCmd(o),
		newAdminTicketCmd(o), newAdminAuditCmd(o), newAdminSessionsCmd(o), newAdminKillCmd(o),
		newAdminImportCmd(o), newAdminBackupCmd(o), newAdminRestoreCmd(o),
		newAdminLanderCACmd(o), newAdminKeysCmd(o),
	)
	return cmd
}

func newAdminListCmd(o *adminOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List users with a linked or pending device",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.open(cmd, "", readsStore)
			if err != nil {
				return err
			}
			defer c.close()
			users, err := c.be.Users(cmd.Context())
			if err != nil {
				return err
			}
			if c.json {
				if err := c.writeJSON(users); err != nil {
					return err
				}
				return damagedUsers(users)
			}
			if len(users) == 0 {
				fmt.Fprintln(c.out, "No user has a linked or pending device.")
				return nil
			}
			tw := table(c.out)
			row(tw, "USER", "STATE", "ENROLLED", "LAST LOGIN", "RECOVERY CODES LEFT", "LOCKED UNTIL")
			now := time.Now()
			for _, u := range users {
				codes := ""
				if u.State == store.StateActive {
					codes = strconv.Itoa(u.RecoveryCodesLeft)
				}
				row(tw, u.Name, stateText(u, now), fmtTime(u.EnrolledAt), fmtTime(u.LastLogin), codes, fmtTime(u.LockedUntil))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			return damagedUsers(users)
		},
	}
}

// damagedUsers is the error (exit status 1) of a list that holds damaged records, naming each
// with the reason, after the list itself has been printed: the others are listed all the same.
func damagedUsers(users []admin.UserInfo) error {
	var msgs []string
	for _, u := range users {
		if u.State == admin.StateDamaged {
			msgs = append(msgs, fmt.Sprintf("%s: %s", cell(u.Name), u.Damaged))
		}
	}
	switch len(msgs) {
	case 0:
		return nil
	case 1:
		return store.Damaged(fmt.Errorf("one user record (state damaged above) cannot be read: %s; "+
			"`gatekeeper admin reset USER` removes it, and the user links again", msgs[0]))
	}
	return store.Damaged(fmt.Errorf("%d user records (state damaged above) cannot be read:\n  %s\n"+
		"`gatekeeper admin reset USER` removes each, and the user links again", len(msgs), strings.Join(msgs, "\n  ")))
}

// stateText is u's state for people: a pending link says whether it has expired.
func stateText(u admin.UserInfo, now time.Time) string {
	if u.State == store.StatePending && !u.PendingExpiresAt.IsZero() && !now.Before(u.PendingExpiresAt) {
		return "pending (expired)"
	}
	return string(u.State)
}

// knownUser returns an error matching admin.ErrNoSuchUser when info is about nobody: no device
// link and no lockout.
func knownUser(info admin.UserInfo) error {
	if (info.State == store.StateNone || info.State == "") && info.CreatedAt.IsZero() && info.LockedUntil.IsZero() &&
		len(info.Keys) == 0 && len(info.Remembered) == 0 {
		// "State none" for scripts that look for the state; the exit status is that of id(1) for
		// a name it does not know.
		return fmt.Errorf("%w: %s (state none: no device linked or pending, no SSH key, no lockout)", admin.ErrNoSuchUser, info.Name)
	}
	return nil
}

func newAdminShowCmd(o *adminOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "show USER",
		Short: "Show one user's state, device link, last login and lockout",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.open(cmd, "", readsStore)
			if err != nil {
				return err
			}
			defer c.close()
			info, err := c.be.User(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := knownUser(info); err != nil {
				return err
			}
			if c.json {
				return c.writeJSON(info)
			}
			tw := table(c.out)
			row(tw, "User:", info.Name)
			row(tw, "State:", stateText(info, time.Now()))
			row(tw, "Created:", fmtTime(info.CreatedAt))
			if info.State == store.StatePending {
				row(tw, "Pending since:", fmtTime(info.PendingSince))
				row(tw, "Link expires:", fmtTime(info.PendingExpiresAt))
			}
			row(tw, "Enrolled:", fmtTime(info.EnrolledAt))
			row(tw, "Last login:", fmtTime(info.LastLogin))
			if info.State == store.StateActive {
				row(tw, "Recovery codes left:", strconv.Itoa(info.RecoveryCodesLeft))
			}
			locked := fmtTime(info.LockedUntil)
			if !c.daemonRunning() {
				locked = "- (no daemon running, so no lockouts)"
			}
			row(tw, "Locked until:", locked)
			if info.ClockDrift != "" {
				row(tw, "Clock drift:", info.ClockDrift+" (the phone's clock is probably off; seen "+fmtTime(info.DriftAt)+")")
			}
			for i, lk := range info.Locks {
				label := ""
				if i == 0 {
					label = "Locks:"
				}
				row(tw, label, lk.String())
			}
			if len(info.Keys) == 0 {
				row(tw, "SSH keys:", "")
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			return writeShowKeys(c.out, info, time.Now())
		},
	}
}

func newAdminResetCmd(o *adminOpts) *cobra.Command {
	var keys bool
	cmd := &cobra.Command{
		Use:   "reset USER [--keys]",
		Short: "Forget USER's token and recovery codes and end their live sessions",
		Long: `Forget USER's token and recovery codes and end their live sessions at once (a lost phone
must stop working now). No code of the old device works afterwards; USER can then link a new
device. Devices remembered for USER's SSH keys (keys.remember) are forgotten too. USER's
registered SSH keys stay unless --keys is given. A damaged record is removed whole, its keys with
it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.open(cmd, "", readsStore)
			if err != nil {
				return err
			}
			defer c.close()
			res, err := c.be.ResetWith(cmd.Context(), args[0], admin.ResetOptions{Keys: keys})
			if err != nil {
				return err
			}
			if c.json {
				return c.writeJSON(res)
			}
			if store.CheckName(res.User) != nil {
				fmt.Fprintf(c.out, "%s: the damaged record stored under this name (not a valid user name) was removed.\n", cell(res.User))
				return nil
			}
			var b strings.Builder
			if res.HadRecord {
				fmt.Fprintf(&b, "%s: token and recovery codes forgotten", res.User)
			} else {
				fmt.Fprintf(&b, "%s: had no linked device", res.User)
			}
			switch {
			case res.Damaged:
				b.WriteString("; the record was damaged, so it was removed whole, with any SSH keys it held")
			case keys || res.KeysRemoved > 0:
				fmt.Fprintf(&b, "; %s removed", plural(res.KeysRemoved, "SSH key"))
			case res.KeysKept > 0:
				fmt.Fprintf(&b, "; %s kept (--keys removes them too)", plural(res.KeysKept, "SSH key"))
			}
			if res.RememberedForgotten > 0 {
				fmt.Fprintf(&b, "; %s forgotten", plural(res.RememberedForgotten, "remembered device"))
			}
			if c.daemonRunning() || c.shared {
				fmt.Fprintf(&b, "; %s ended.", plural(res.SessionsEnded, "live session"))
			} else {
				b.WriteString(" (no daemon is running, so there were no live sessions to end).")
			}
			fmt.Fprintf(&b, " %s can now link a new device.", res.User)
			fmt.Fprintln(c.out, b.String())
			return nil
		},
	}
	cmd.Flags().BoolVar(&keys, "keys", false, "remove USER's registered SSH keys too")
	return cmd
}

func newAdminUnlockCmd(o *adminOpts) *cobra.Command {
	var address string
	cmd := &cobra.Command{
		Use:   "unlock USER | unlock --address ADDR",
		Short: "Clear USER's rate-limit lockouts, or those of a source address",
		Long: `Clear every rate-limit lockout and failure count of USER (logins from outside and from the
trusted networks, and the doubling level), or with --address those of a source address: the
address itself (IPv6: its /64) and its network (/24, IPv6 /48).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 1) == (address != "") {
				return errors.New("give USER or --address ADDR (one of them)")
			}
			var addr netip.Addr
			if address != "" {
				var err error
				if addr, err = netip.ParseAddr(address); err != nil || addr.Zone() != "" {
					return fmt.Errorf("--address %q is not an IP address", address)
				}
			}
			c, err := o.open(cmd, "lockouts live only in the daemon", readsStore)
			if err != nil {
				return err
			}
			defer c.close()
			var res admin.UnlockResult
			if address != "" {
				res, err = c.client.UnlockAddress(cmd.Context(), addr)
			} else {
				res, err = c.client.Unlock(cmd.Context(), args[0])
			}
			if err != nil {
				return err
			}
			if c.json {
				return c.writeJSON(res)
			}
			who := res.User + res.Address
			if len(res.Cleared) == 0 {
				fmt.Fprintf(c.out, "%s was not locked out.\n", who)
			}
			for _, lk := range res.Cleared {
				fmt.Fprintf(c.out, "%s: cleared %s\n", who, lk)
			}
			if res.User != "" {
				refusedFrom(cmd.Context(), c, res.User)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&address, "address", "", "clear the lockouts of this source address instead of a user's")
	return cmd
}

// refusedFrom tells, after unlock USER, where user's logins refused in the last hour came
// from: a source address has lockouts of its own, which unlock USER leaves (they hold back
// whoever guessed from there too), and which keep the user out when that is where the user
// tried from. The addresses are named newest refusal first, at most five, with no advice to
// unlock any: the one with the most refusals may well be whoever is guessing, so the admin
// asks the user which is theirs.
func refusedFrom(ctx context.Context, c *adminConn, user string) {
	events, err := c.be.Audit(ctx, store.EventQuery{User: user, Since: time.Now().Add(-time.Hour), Limit: admin.MaxAuditLimit})
	if err != nil {
		return // a hint only
	}
	counts := map[string]int{}
	var addrs []string // newest first
	for _, ev := range slices.Backward(events) {
		if ev.Kind != store.EventLoginRefused || ev.Remote == "" {
			continue
		}
		if counts[ev.Remote] == 0 {
			addrs = append(addrs, ev.Remote)
		}
		counts[ev.Remote]++
	}
	if len(addrs) == 0 {
		return
	}
	more := ""
	if len(addrs) > 5 {
		more = fmt.Sprintf(" and %d more", len(addrs)-5)
		addrs = addrs[:5]
	}
	named := make([]string, len(addrs))
	for i, a := range addrs {
		named[i] = fmt.Sprintf("%s (%d)", a, counts[a])
	}
	fmt.Fprintf(c.out, "%s's logins refused in the last hour came from %s%s, newest first. A source address has lockouts of its own, "+
		"which this leaves: if %s is still refused, ask from which address, and `gatekeeper admin unlock --address ADDR` clears that one.\n",
		user, strings.Join(named, ", "), more, user)
}

// ticketOutput is `admin ticket -o json`.
type ticketOutput struct {
	User      string    `json:"user"`
	Ticket    string    `json:"ticket"`
	ExpiresAt time.Time `json:"expires_at"`
	// PortalURL and SSHCommand are where the user can use it; empty when not configured.
	PortalURL  string `json:"portal_url,omitempty"`
	SSHCommand string `json:"ssh_command,omitempty"`
}

func newAdminTicketCmd(o *adminOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "ticket USER",
		Short: "Issue a one-time ticket to link a device from outside the allowed networks",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.open(cmd, "", addsToStore)
			if err != nil {
				return err
			}
			defer c.close()
			if err := doorsTake(c.cfg, args[0]); err != nil {
				return err
			}
			token, expires, err := c.be.Ticket(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			out := ticketOutput{User: args[0], Ticket: token, ExpiresAt: expires}
			out.PortalURL, out.SSHCommand = linkPlaces(c.cfg, args[0])
			if c.json {
				return c.writeJSON(out)
			}
			writeTicket(c.out, out)
			for _, l := range []struct{ key, addr string }{{"enroll.portal_listen", c.cfg.Enroll.PortalListen}, {"enroll.ssh_listen", c.cfg.Enroll.SSHListen}} {
				if loopbackListen(l.addr) {
					fmt.Fprintf(cmd.ErrOrStderr(), "note: %s is %s, reachable from this machine only unless a proxy forwards to it; the address above names this host\n", l.key, l.addr)
				}
			}
			return nil
		},
	}
}

// loopbackListen reports whether a listen address is on a loopback address (which users
// elsewhere cannot reach).
func loopbackListen(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback() || host == "localhost"
}

// writeTicket prints a ticket, its expiry and what to tell the user.
func writeTicket(w io.Writer, t ticketOutput) {
	until := fmtTime(t.ExpiresAt)
	fmt.Fprintf(w, "Ticket for %s: %s\n", t.User, t.Ticket)
	fmt.Fprintf(w, "Valid once, until %s.\n\n", until)
	fmt.Fprintf(w, "Tell %s:\n", t.User)
	fmt.Fprintln(w, "  To link your authenticator app from outside the campus network, use this one-time ticket:")
	fmt.Fprintf(w, "    %s\n", t.Ticket)
	switch {
	case t.PortalURL != "" && t.SSHCommand != "":
		fmt.Fprintf(w, "  Open %s in a browser, sign in with your password and enter the ticket,\n", t.PortalURL)
		fmt.Fprintf(w, "  or run: %s\n", t.SSHCommand)
	case t.PortalURL != "":
		fmt.Fprintf(w, "  Open %s in a browser, sign in with your password and enter the ticket.\n", t.PortalURL)
	case t.SSHCommand != "":
		fmt.Fprintf(w, "  Run: %s\n", t.SSHCommand)
	default:
		fmt.Fprintln(w, "  (Neither enroll.portal_listen nor enroll.ssh_listen is set: the ticket cannot be used until one is.)")
	}
	fmt.Fprintf(w, "  It works once and expires on %s.\n", until)
}

// linkPlaces returns the portal URL and the terminal link command for user from the config; an
// empty string for one that is off. A listener on a loopback or wildcard address is named by
// this machine's host name, which is what users type.
func linkPlaces(cfg *config.Config, user string) (portalURL, sshCommand string) {
	if host, port, ok := publicHostPort(cfg.Enroll.PortalListen); ok {
		scheme := "http"
		if cfg.Enroll.TLSCert != "" {
			scheme = "https"
		}
		portalURL = scheme + "://" + net.JoinHostPort(host, port) + "/"
	}
	if host, port, ok := publicHostPort(cfg.Enroll.SSHListen); ok {
		sshCommand = fmt.Sprintf("ssh -p %s %s@%s", port, user, host)
	}
	return portalURL, sshCommand
}

func publicHostPort(listen string) (host, port string, ok bool) {
	if listen == "" {
		return "", "", false
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", "", false
	}
	if a, err := netip.ParseAddr(host); host == "" || err == nil && (a.IsLoopback() || a.IsUnspecified()) {
		if h, err := os.Hostname(); err == nil && h != "" {
			host = h
		}
	}
	return host, port, true
}

func newAdminAuditCmd(o *adminOpts) *cobra.Command {
	var who, since string
	var limit int
	cmd := &cobra.Command{
		Use:   "audit [--user U] [--since D] [--limit N]",
		Short: "Show the audit log, oldest first",
		Long: fmt.Sprintf(`Show the audit log, oldest first: the newest --limit events (default %d) of --user (default
everyone) since --since, which is a time (2026-11-23T10:00:00Z), a date (2026-11-23, local
midnight) or a duration back from now (90m, 24h, 7d).`, admin.DefaultAuditLimit),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := store.EventQuery{User: who, Limit: limit}
			if who != "" {
				if err := store.CheckName(who); err != nil {
					return fmt.Errorf("--user: %w", err)
				}
			}
			if since != "" {
				t, err := admin.ParseSince(since, time.Now())
				if err != nil {
					return fmt.Errorf("--%w", err)
				}
				q.Since = t
			}
			if limit < 0 || limit > admin.MaxAuditLimit {
				return fmt.Errorf("--limit %d: want a number from 1 to %d (0 = %d)", limit, admin.MaxAuditLimit, admin.DefaultAuditLimit)
			}
			c, err := o.open(cmd, "", readsStore)
			if err != nil {
				return err
			}
			defer c.close()
			events, err := c.be.Audit(cmd.Context(), q)
			if err != nil {
				return err
			}
			if c.json {
				return c.writeJSON(events)
			}
			if len(events) == 0 {
				fmt.Fprintln(c.out, "No audit events match.")
				return nil
			}
			tw := table(c.out)
			row(tw, "TIME", "KIND", "USER", "REMOTE", "ACTOR", "REASON", "DETAIL")
			for _, e := range events {
				row(tw, e.Time.Local().Format(tableStamp), e.Kind, e.User, e.Remote, e.Actor, e.Reason, e.Detail)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if n := orDefault(limit, admin.DefaultAuditLimit); len(events) >= n {
				fmt.Fprintf(cmd.ErrOrStderr(), "(the newest %d events; --limit or --since for others)\n", n)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&who, "user", "", "only this user's events")
	cmd.Flags().StringVar(&since, "since", "", "only events since a time, a date or a duration ago (7d)")
	cmd.Flags().IntVar(&limit, "limit", 0, fmt.Sprintf("at most this many of the newest events (0 = %d)", admin.DefaultAuditLimit))
	return cmd
}

// orDefault is v, or def when v is 0.
func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func newAdminSessionsCmd(o *adminOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "sessions",
		Short: "List live proxied sessions of every node: node, id, user, source, start, bytes each way",
		Long: `List the live proxied sessions: their node (node_name), id, user, source, start, and the
bytes relayed each way. With several nodes on one etcd cluster every node's sessions are listed
(bytes only for the node asked); sessions are numbered per node, so NODE/ID names one. When the
other nodes' sessions cannot be read (etcd out of reach), this node's are listed and a warning
on stderr says what is missing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.open(cmd, "there are no live sessions", readsStore)
			if err != nil {
				return err
			}
			defer c.close()
			raw, incomplete, err := c.client.Sessions(cmd.Context())
			if err != nil {
				return err
			}
			if incomplete != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s; listing this node's sessions only\n", incomplete)
			}
			if c.json {
				// The daemon's own JSON, indented: fields this command does not know pass through.
				var b bytes.Buffer
				if err := json.Indent(&b, raw, "", "  "); err != nil {
					return fmt.Errorf("sessions: unreadable answer from the daemon: %w", err)
				}
				b.WriteByte('\n')
				_, err := c.out.Write(b.Bytes())
				return err
			}
			var sessions []gatekeeper.SessionInfo
			if err := json.Unmarshal(raw, &sessions); err != nil {
				return fmt.Errorf("sessions: unreadable answer from the daemon: %w", err)
			}
			if len(sessions) == 0 {
				fmt.Fprintln(c.out, "No live sessions.")
				return nil
			}
			tw := table(c.out)
			row(tw, "NODE", "ID", "USER", "FROM", "TRUSTED", "STARTED", "UP", "DOWN")
			for _, s := range sessions {
				trusted := "no"
				if s.Trusted {
					trusted = "yes"
				}
				up, down := "", "" // another node's: not known here
				if s.ThisNode {
					up, down = fmtBytes(s.BytesUp), fmtBytes(s.BytesDown)
				}
				row(tw, s.Node, strconv.FormatUint(s.ID, 10), s.User, s.Remote, trusted, s.Start.Local().Format(tableStamp), up, down)
			}
			return tw.Flush()
		},
	}
}

func newAdminKillCmd(o *adminOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "kill ID | kill NODE/ID",
		Short: "End a live session, on whichever node holds it (see admin sessions)",
		Long: `End a live session: ID is the number in the ID column of admin sessions. With several
nodes on one etcd cluster, sessions are numbered per node: NODE/ID names one exactly, and ID
alone names the only session with that number this node can see (its own or another node's); when
several nodes have one, the command names them and ends none. A session of another node is ended
by that node: the command waits up to 3 s for it to confirm, and fails if it has not (a node that
is down loses its sessions from the list when its lease ends, about 10 s later).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			node, idText, named := strings.Cut(args[0], "/")
			if !named {
				node, idText = "", args[0]
			}
			id, err := strconv.ParseUint(idText, 10, 64)
			if err != nil || named && node == "" {
				return fmt.Errorf("session %q: want ID or NODE/ID from admin sessions", args[0])
			}
			c, err := o.open(cmd, "there are no live sessions", readsStore)
			if err != nil {
				return err
			}
			defer c.close()
			res, err := c.client.Kill(cmd.Context(), node, id)
			if err != nil {
				return err
			}
			name := strconv.FormatUint(res.ID, 10)
			if res.Node != "" {
				name = res.Node + "/" + name
			}
			if !res.Ended {
				return fmt.Errorf("session %s (%s): %s was asked to end it but has not confirmed within a few seconds; "+
					"if that node is down, its sessions leave the list when its lease ends", name, res.User, res.Node)
			}
			if c.json {
				return c.writeJSON(res)
			}
			fmt.Fprintf(c.out, "Session %s (%s) ended.\n", name, res.User)
			return nil
		},
	}
}

// importRow is one home directory's outcome in `import-google-authenticator --all-users`.
type importRow struct {
	User string `json:"user"`
	Home string `json:"home"`
	// Result is "imported", "skipped" (already linked) or "error".
	Result        string `json:"result"`
	Detail        string `json:"detail,omitempty"`
	RecoveryCodes int    `json:"recovery_codes,omitempty"`
}

// Results of importRow.
const (
	importImported = "imported"
	importSkipped  = "skipped"
	importError    = "error"
)

func newAdminImportCmd(o *adminOpts) *cobra.Command {
	var force, allUsers bool
	var homeRoot string
	cmd := &cobra.Command{
		Use:   "import-google-authenticator {USER FILE | --all-users [--home-root DIR]}",
		Short: "Import pam_google_authenticator secrets, so users keep their phones",
		Long: `Import a pam_google_authenticator file (~/.google_authenticator) as USER's linked device: the
codes of the app the user already has keep working, the file's scratch codes become the user's
recovery codes, and time steps the file records as used stay used. Counter-based (HOTP) files
and files without TOTP_AUTH are refused: those users must link a new device. A user who already
has a linked device is left alone unless --force.

With --all-users, every directory under --home-root that holds a .google_authenticator file is
imported for the directory's owner, if the file belongs to that owner too (as the PAM module
insists), and a table reports each user. The exit code is 1 if any import failed.`,
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
				return fmt.Errorf("want USER and FILE (or --all-users), got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if !allUsers {
				if err := store.CheckName(args[0]); err != nil {
					return err
				}
			}
			c, err := o.open(cmd, "", addsToStore)
			if err != nil {
				return err
			}
			defer c.close()
			if allUsers {
				return importAll(cmd.Context(), c, homeRoot, force, lookupUser)
			}
			return importOne(cmd.Context(), c, args[0], args[1], force)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace a device the user has linked already (ends their live sessions)")
	cmd.Flags().BoolVar(&allUsers, "all-users", false, "import every user's file under --home-root")
	cmd.Flags().StringVar(&homeRoot, "home-root", "/home", "where the home directories are, with --all-users")
	return cmd
}

// readGauth reads and checks a google_authenticator file for import. Its errors never quote
// the file, which is a secret.
func readGauth(path string) (*gauth.File, error) {
	gf, err := gauth.ReadFile(path, 0)
	if err != nil {
		return nil, err
	}
	if !gf.TOTP {
		return nil, fmt.Errorf("%s: %w: no TOTP_AUTH line, so pam_google_authenticator accepts only its scratch codes; the user must link a new device",
			path, gauth.ErrUnsupported)
	}
	return gf, nil
}

// importRequest is gf as the daemon's import takes it.
func importRequest(gf *gauth.File, force bool) admin.ImportRequest {
	req := admin.ImportRequest{SecretBase32: gf.SecretBase32, Scratch: gf.Scratch, Force: force}
	if len(gf.UsedSteps) > 0 {
		req.LastStep = slices.Max(gf.UsedSteps)
	}
	return req
}

func importOne(ctx context.Context, c *adminConn, name, path string, force bool) error {
	gf, err := readGauth(path)
	if err != nil {
		return fmt.Errorf("cannot import %s: %w", name, err)
	}
	res, err := c.be.Import(ctx, name, importRequest(gf, force))
	if errors.Is(err, enroll.ErrAlreadyLinked) {
		return fmt.Errorf("cannot import %s: %w; pass --force to replace it with the imported one", name, enroll.ErrAlreadyLinked)
	}
	if err != nil {
		return fmt.Errorf("cannot import %s: %w", name, err)
	}
	if c.json {
		return c.writeJSON(res)
	}
	fmt.Fprintf(c.out, "%s: imported from %s; the codes of %s's current app work now. %s\n",
		name, path, name, recoveryText(name, res.RecoveryCodes))
	if res.Replaced {
		fmt.Fprintf(c.out, "The device linked before was replaced; %s ended.\n", plural(res.SessionsEnded, "live session"))
	}
	return nil
}

// recoveryText says what became of the file's scratch codes.
func recoveryText(name string, n int) string {
	if n == 0 {
		return fmt.Sprintf("The file had no scratch codes, so %s has no recovery codes.", name)
	}
	return fmt.Sprintf("Its %s are %s's recovery codes now.", plural(n, "scratch code"), name)
}

// lookupUser names the owner of a home directory.
func lookupUser(uid uint32) (string, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return "", err
	}
	return u.Username, nil
}

// importAll imports every home directory's google_authenticator file under root for the
// directory's owner (named by lookup) and prints a table of what happened to each.
func importAll(ctx context.Context, c *adminConn, root string, force bool, lookup func(uid uint32) (string, error)) error {
	rows, err := importHomes(ctx, c.be, root, force, lookup)
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range rows {
		if r.Result == importError {
			failed++
		}
	}
	if c.json {
		if err := c.writeJSON(rows); err != nil {
			return err
		}
	} else if len(rows) == 0 {
		fmt.Fprintf(c.out, "No home directory under %s has a %s file.\n", root, gauthFile)
	} else {
		tw := table(c.out)
		row(tw, "USER", "HOME", "RESULT")
		for _, r := range rows {
			res := r.Result
			switch r.Result {
			case importImported:
				res += fmt.Sprintf(" (%s)", plural(r.RecoveryCodes, "recovery code"))
			case importSkipped, importError:
				res += ": " + r.Detail
			}
			row(tw, r.User, r.Home, res)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d google_authenticator files under %s could not be imported", failed, len(rows), root)
	}
	return nil
}

// importHomes does importAll's work. A directory without the file is no row; one whose file
// cannot be imported is an error row, and the walk goes on.
func importHomes(ctx context.Context, be adminBackend, root string, force bool, lookup func(uid uint32) (string, error)) ([]importRow, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("--home-root: %w", err)
	}
	rows := []importRow{}
	done := map[string]string{} // user → home imported from
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return rows, err
		}
		home := filepath.Join(root, e.Name())
		// Stat, not Lstat: sites link home directories elsewhere, and the entries of the home
		// root are root's. The file itself is opened without following a link.
		fi, err := os.Stat(home)
		if err != nil || !fi.IsDir() {
			continue
		}
		path := filepath.Join(home, gauthFile)
		if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil, errors.New("--all-users: file owners are not available on this system")
		}
		r := importRow{User: fmt.Sprintf("uid %d", st.Uid), Home: home}
		fail := func(format string, a ...any) {
			r.Result, r.Detail = importError, fmt.Sprintf(format, a...)
			rows = append(rows, r)
		}
		if st.Uid == 0 {
			// A directory of root's under the home root is no user's home (root's own is
			// elsewhere): its file is nobody's to import.
			fail("the directory is root's, not a user's home")
			continue
		}
		name, err := lookup(st.Uid)
		if err != nil {
			fail("the directory's owner (uid %d) has no user name: %v", st.Uid, err)
			continue
		}
		if err := store.CheckName(name); err != nil {
			fail("owner's name: %v", err)
			continue
		}
		r.User = name
		if prev, ok := done[name]; ok {
			fail("%s also owns %s, imported already", name, prev)
			continue
		}
		gf, err := readGauth(path)
		if err != nil {
			fail("%v", err)
			continue
		}
		if gf.Owner != int(st.Uid) {
			fail("%s belongs to uid %d, not to %s (uid %d); pam_google_authenticator would not trust it either",
				gauthFile, gf.Owner, name, st.Uid)
			continue
		}
		res, err := be.Import(ctx, name, importRequest(gf, force))
		switch {
		case errors.Is(err, enroll.ErrAlreadyLinked):
			r.Result, r.Detail = importSkipped, "already linked"
		case err != nil:
			fail("%v", err)
			continue
		default:
			r.Result, r.RecoveryCodes = importImported, res.RecoveryCodes
			if res.Replaced {
				r.Detail = fmt.Sprintf("replaced the linked device; %s ended", plural(res.SessionsEnded, "live session"))
			}
		}
		done[name] = home
		rows = append(rows, r)
	}
	return rows, nil
}
