package admin

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"gatekeeper/gatekeeper/store"
)

// A backup (admin backup FILE, admin restore FILE) is JSON Lines: a header line
//
//	{"gatekeeper_backup":1,"created":"2026-11-23T10:00:00Z","backend":"bolt","node":"login1","audit":true,"users":12,"tickets":1,"events":340}
//
// then one store.Item per line, as Store.Dump hands them out: user records and tickets in their
// stored form (secrets sealed, every value authenticated under the key file), audit events as
// their JSON. The header's counts let a restore tell a complete file from one cut short.

// BackupVersion is the format version this gatekeeper writes and reads.
const BackupVersion = 1

// MaxBackupBytes bounds a backup that restore reads (and the daemon accepts): Load takes all
// items at once, in memory.
const MaxBackupBytes = 1 << 30

// maxBackupLine bounds one line of a backup: a record or an event is a few KiB at most.
const maxBackupLine = 1 << 20

// ErrBadBackup matches (errors.Is) the error for a backup that cannot be restored: not a
// backup, a newer format, a line that is not a valid item (the error names the line), a file
// cut short, or items that do not verify under this store's key file. Nothing was written.
var ErrBadBackup = errors.New("not a usable backup")

// BackupHeader is a backup's first line.
type BackupHeader struct {
	// Version is BackupVersion; its key names the format.
	Version int `json:"gatekeeper_backup"`
	// Created is when the backup began (UTC, to the second).
	Created time.Time `json:"created"`
	// Backend ("bolt" or "etcd") and Node name the store the backup came from.
	Backend string `json:"backend"`
	Node    string `json:"node"`
	// Audit says whether the audit log was included (backup --audit).
	Audit bool `json:"audit"`
	// Users, Tickets and Events count the items that follow.
	Users   int `json:"users"`
	Tickets int `json:"tickets"`
	Events  int `json:"events"`
	// LeftOut names the damaged items the backup left out (store.Item.Damaged): a record that
	// fails its integrity check cannot be restored, and would make the whole backup
	// unrestorable.
	LeftOut []LeftOut `json:"left_out,omitempty"`
	// MoreLeftOut counts the damaged items left out beyond the maxLeftOut named.
	MoreLeftOut int `json:"more_left_out,omitempty"`
}

// maxLeftOut is how many damaged items a backup names at most: the header and the stream's end
// line must stay well within maxBackupLine however damaged the store.
const maxLeftOut = 100

// LeftOutCount is how many damaged items were left out, named or not.
func (h BackupHeader) LeftOutCount() int { return len(h.LeftOut) + h.MoreLeftOut }

// LeftOut is a damaged item a backup left out.
type LeftOut struct {
	Kind string `json:"kind"`
	Key  string `json:"key,omitempty"`
	// Why is what is wrong with it ("fails its integrity check").
	Why string `json:"why"`
}

// leftOut describes it, which failed its check with err.
func leftOut(it store.Item, err error) LeftOut {
	return LeftOut{Kind: it.Kind, Key: shorten(it.Key, 200), Why: shorten(err.Error(), 300)}
}

// shorten cuts s (a key stored under an invalid name can be long) to at most n bytes and a mark.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// name is l by name: "user x", "ticket 1a2b3c4d…", "an audit event".
func (l LeftOut) name() string {
	switch l.Kind {
	case store.ItemTicket:
		return fmt.Sprintf("ticket %.8s…", l.Key)
	case store.ItemEvent:
		return "an audit event"
	}
	return l.Kind + " " + quoteOdd(l.Key)
}

// String names l, says what is wrong with it and what to do: "user x (fails its integrity
// check; it cannot be used as it is: `gatekeeper admin reset x` removes it, and the user
// links again)".
func (l LeftOut) String() string {
	switch l.Kind {
	case store.ItemUser:
		return fmt.Sprintf("%s (%s; it cannot be used as it is: `gatekeeper admin reset %s` removes it, and the user links again)",
			l.name(), l.Why, quoteOdd(l.Key))
	case store.ItemTicket:
		return fmt.Sprintf("%s (%s; it cannot be spent: `gatekeeper admin ticket USER` gives its user a new one)", l.name(), l.Why)
	}
	return fmt.Sprintf("%s (%s)", l.name(), l.Why)
}

// quoteOdd quotes a name that is not a valid user name (a record stored under one), so that it
// shows as it is.
func quoteOdd(name string) string {
	if store.CheckName(name) != nil {
		return strconv.Quote(name)
	}
	return name
}

// LeftOutNames is "user x, ticket 1a2b3c4d…": the items left out, by name.
func (h BackupHeader) LeftOutNames() string {
	names := make([]string, len(h.LeftOut), len(h.LeftOut)+1)
	for i, l := range h.LeftOut {
		names[i] = l.name()
	}
	if h.MoreLeftOut > 0 {
		names = append(names, fmt.Sprintf("and %d more", h.MoreLeftOut))
	}
	return strings.Join(names, ", ")
}

// LeftOutSummary is "1 damaged record left out: user x (...)", describing at most 20; "" when
// nothing was left out.
func (h BackupHeader) LeftOutSummary() string {
	if h.LeftOutCount() == 0 {
		return ""
	}
	names := make([]string, 0, min(len(h.LeftOut), 20)+1)
	for i, l := range h.LeftOut {
		if i == 20 {
			break
		}
		names = append(names, l.String())
	}
	if more := h.LeftOutCount() - len(names); more > 0 {
		names = append(names, fmt.Sprintf("and %d more", more))
	}
	return plural(h.LeftOutCount(), "damaged record") + " left out: " + strings.Join(names, "; ")
}

// count adds it to h's counts.
func (h *BackupHeader) count(it store.Item) {
	switch it.Kind {
	case store.ItemUser:
		h.Users++
	case store.ItemTicket:
		h.Tickets++
	case store.ItemEvent:
		h.Events++
	}
}

// Summary is "12 users, 1 ticket, 340 events" (the events only when the audit log is in).
func (h BackupHeader) Summary() string {
	s := plural(h.Users, "user") + ", " + plural(h.Tickets, "ticket")
	if h.Audit || h.Events > 0 {
		s += ", " + plural(h.Events, "event")
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// MarshalLine is h as a backup's first line, newline included.
func (h BackupHeader) MarshalLine() []byte {
	b, _ := json.Marshal(h) // fixed types: cannot fail
	return append(b, '\n')
}

// BackupFile is a backup read and checked by ParseBackup.
type BackupFile struct {
	Header BackupHeader
	Items  []store.Item
	// raw is the file as read, which the Client sends to the daemon as it is.
	raw []byte
}

// ParseBackup reads a backup and checks all of it before anything is written anywhere: the
// header (a gatekeeper backup, of a format this gatekeeper reads), every line a valid item (a
// known kind, a user name, a ticket key, a readable event; no user or ticket twice), and the
// header's counts against the items, so that a file cut short is refused. Its errors match
// ErrBadBackup and name the line. Whether the records verify under the key file is Load's
// check (Restore).
func ParseBackup(raw []byte) (*BackupFile, error) {
	f := &BackupFile{raw: raw}
	bad := func(line int, format string, a ...any) error {
		return fmt.Errorf("%w: line %d: %s", ErrBadBackup, line, fmt.Sprintf(format, a...))
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, maxBackupLine)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return nil, bad(1, "%v", scanErr(err))
		}
		return nil, fmt.Errorf("%w: the file is empty", ErrBadBackup)
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(sc.Bytes(), &probe); err != nil || probe["gatekeeper_backup"] == nil {
		return nil, bad(1, "not a gatekeeper backup header (a backup begins with {\"gatekeeper_backup\":%d,...})", BackupVersion)
	}
	h := &f.Header
	if err := json.Unmarshal(sc.Bytes(), h); err != nil {
		return nil, bad(1, "header cannot be read: %v", err)
	}
	switch {
	case h.Version > BackupVersion:
		return nil, bad(1, "backup format %d was written by a newer gatekeeper (this one reads format %d)", h.Version, BackupVersion)
	case h.Version < 1:
		return nil, bad(1, "backup format %d does not exist", h.Version)
	case h.Users < 0 || h.Tickets < 0 || h.Events < 0:
		return nil, bad(1, "negative counts in the header")
	}
	var got BackupHeader
	seen := map[string]int{} // kind/key → line
	for line := 2; sc.Scan(); line++ {
		it, err := parseItem(sc.Bytes())
		if err != nil {
			return nil, bad(line, "%v", err)
		}
		if it.Kind != store.ItemEvent {
			id := it.Kind + " " + it.Key
			if first, dup := seen[id]; dup {
				return nil, bad(line, "%s %s appears twice (also on line %d)", it.Kind, it.Key, first)
			}
			seen[id] = line
		}
		got.count(it)
		f.Items = append(f.Items, it)
	}
	if err := sc.Err(); err != nil {
		return nil, bad(len(f.Items)+2, "%v", scanErr(err))
	}
	if got.Users != h.Users || got.Tickets != h.Tickets || got.Events != h.Events {
		return nil, fmt.Errorf("%w: the header announces %d users, %d tickets and %d events, the file holds %d, %d and %d: is it cut short?",
			ErrBadBackup, h.Users, h.Tickets, h.Events, got.Users, got.Tickets, got.Events)
	}
	return f, nil
}

func scanErr(err error) error {
	if errors.Is(err, bufio.ErrTooLong) {
		return fmt.Errorf("longer than %d bytes", maxBackupLine)
	}
	return err
}

// parseItem reads one item line strictly: one JSON object with the fields of store.Item and
// nothing else, of a known kind, with a key fit for its kind and a value.
func parseItem(b []byte) (store.Item, error) {
	var it store.Item
	if len(bytes.TrimSpace(b)) == 0 {
		return it, errors.New("empty line")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&it); err != nil {
		return it, fmt.Errorf("not a backup item: %v", err)
	}
	if dec.InputOffset() != int64(len(bytes.TrimRight(b, " \t\r"))) {
		return it, errors.New("not a backup item: more after the JSON object")
	}
	if len(it.Value) == 0 {
		return it, fmt.Errorf("%q item without a value", it.Kind)
	}
	switch it.Kind {
	case store.ItemUser:
		if err := store.CheckName(it.Key); err != nil {
			return it, err
		}
	case store.ItemTicket:
		if k, err := hex.DecodeString(it.Key); err != nil || len(k) != 32 {
			return it, fmt.Errorf("ticket key %q is not a hex SHA-256", it.Key)
		}
	case store.ItemEvent:
		if it.Key != "" {
			return it, errors.New("an event item has no key")
		}
		if _, ok := store.DecodeEvent(1, it.Value); !ok {
			return it, errors.New("audit event cannot be read")
		}
	default:
		return it, fmt.Errorf("unknown item kind %q", it.Kind)
	}
	return it, nil
}

// Backup calls fn with every record and ticket of st, and with the audit events when h.Audit,
// and returns h with its counts set. A damaged item (store.Item.Damaged) is left out and named
// in h.LeftOut: one record that cannot be used must not make the backup of everyone else
// unrestorable. The daemon's endpoint and commands working on the store directly both use it,
// and write the audit event (AuditBackup) once the backup has gone where it goes.
func Backup(st store.Store, h BackupHeader, fn func(store.Item) error) (BackupHeader, error) {
	h.Users, h.Tickets, h.Events, h.LeftOut, h.MoreLeftOut = 0, 0, 0, nil, 0
	err := st.Dump(h.Audit, func(it store.Item) error {
		if it.Damaged != nil {
			if len(h.LeftOut) < maxLeftOut {
				h.LeftOut = append(h.LeftOut, leftOut(it, it.Damaged))
			} else {
				h.MoreLeftOut++
			}
			return nil
		}
		h.count(it)
		return fn(it)
	})
	return h, err
}

// AuditBackup writes the "backup" event of h, by actor, to st's audit log: what went where
// ("sent 12 users, 1 ticket to the admin command", "wrote 12 users, 1 ticket to FILE"), and
// what was left out. A failure to write it goes to log: the backup is made by then.
func AuditBackup(st store.Store, h BackupHeader, actor, what string, log *slog.Logger) {
	detail := what
	if h.LeftOutCount() > 0 {
		detail += "; left out " + plural(h.LeftOutCount(), "damaged record") + ": " + h.LeftOutNames()
	}
	e := store.Event{Kind: store.EventBackup, Actor: actor, Door: store.DoorConsole, Detail: detail}
	if err := st.Append(e); err != nil {
		log.Error("audit log write failed", "err", err, "kind", e.Kind)
	}
}

// RestoreResult is the answer to a restore: what was written. Events counts the events
// restored, EventsHeld those of them the audit log held already, which were not added again.
type RestoreResult struct {
	Users      int `json:"users"`
	Tickets    int `json:"tickets"`
	Events     int `json:"events"`
	EventsHeld int `json:"events_held,omitempty"`
}

// Restore loads f's items into st (Store.Load): a user who already has a record is refused,
// all of them named, with an error matching store.ErrExists unless force; items that do not
// verify under st's key file get an error matching ErrBadBackup that names the line. The
// error says what was written: "nothing was written", or for a store that stopped part-way
// (a *store.LoadError) how much was. On success it writes a "restore" event with actor to the
// audit log (a failure to write it goes to log). The daemon's endpoint and commands working
// on the store directly both use it.
func Restore(st store.Store, f *BackupFile, force bool, actor string, log *slog.Logger) (RestoreResult, error) {
	res, err := st.Load(f.Items, force)
	if _, ok := errors.AsType[*store.LoadError](err); ok {
		return RestoreResult{}, err // its message says what was written
	}
	if err != nil {
		return RestoreResult{}, fmt.Errorf("%w; nothing was written", lineError(err))
	}
	out := RestoreResult{Users: res.Users, Tickets: res.Tickets, Events: res.Events, EventsHeld: res.EventsHeld}
	h := f.Header
	detail := fmt.Sprintf("loaded %s from a backup of %s (%s) made %s",
		BackupHeader{Users: out.Users, Tickets: out.Tickets, Events: out.Events, Audit: h.Audit}.Summary(),
		orDash(h.Node), orDash(h.Backend), h.Created.UTC().Format(time.RFC3339))
	if out.EventsHeld > 0 {
		detail += fmt.Sprintf("; %s of them already in the log, not added again", plural(out.EventsHeld, "event"))
	}
	if force {
		detail += "; --force: existing users overwritten"
	}
	e := store.Event{Kind: store.EventRestore, Actor: actor, Door: store.DoorConsole, Detail: detail}
	if err := st.Append(e); err != nil {
		log.Error("audit log write failed", "err", err, "kind", e.Kind)
	}
	return out, nil
}

// lineError is err with an *store.ItemError (item n of a backup) turned into an ErrBadBackup
// error naming its line.
func lineError(err error) error {
	if ie, ok := errors.AsType[*store.ItemError](err); ok {
		// Item n is on line n+1, after the header.
		return fmt.Errorf("%w: line %d: %v", ErrBadBackup, ie.Index+1, ie.Err)
	}
	return err
}

// CheckBackupKey checks f's records and tickets against key (the bytes of the key file) as
// Restore will, so that a command about to open a store itself refuses a backup made under
// another key file before anything is created: a new store takes the key file it is first
// opened with. The error matches ErrBadBackup and names the line.
func CheckBackupKey(key []byte, f *BackupFile) error {
	c, err := store.NewCodec(key, "")
	if err != nil {
		return err
	}
	// The events need no key (and there may be many): only the sealed items, numbered as in f.
	var sealed []store.Item
	var index []int
	for i, it := range f.Items {
		if it.Kind == store.ItemUser || it.Kind == store.ItemTicket {
			sealed = append(sealed, it)
			index = append(index, i)
		}
	}
	_, err = c.CheckItems(sealed)
	if ie, ok := errors.AsType[*store.ItemError](err); ok {
		err = &store.ItemError{Index: index[ie.Index-1] + 1, Err: ie.Err}
	}
	return lineError(err)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// The backup stream of GET /v1/backup: the header line (counts zero), the items, and a last
// line {"kind":"end",...} with the counts, or {"kind":"error",...} when the dump failed after
// the answer had begun. A stream without its end line is cut short.
const (
	streamEnd   = "end"
	streamError = "error"
)

// streamLine is one line of the backup stream after the header: an item, the end or an error.
type streamLine struct {
	Kind    string `json:"kind"`
	Key     string `json:"key,omitempty"`
	Value   []byte `json:"value,omitempty"`
	Users   int    `json:"users,omitempty"`
	Tickets int    `json:"tickets,omitempty"`
	Events  int    `json:"events,omitempty"`
	// LeftOut and MoreLeftOut, on the end line, are the damaged items left out.
	LeftOut     []LeftOut `json:"left_out,omitempty"`
	MoreLeftOut int       `json:"more_left_out,omitempty"`
	Error       string    `json:"error,omitempty"`
}

// backupIOTimeout bounds each write of the backup stream and the whole upload of a restore.
// A stalled reader must not hold the store's read transaction (a bbolt file cannot grow while
// one is open) for long.
const (
	backupWriteTimeout = 10 * time.Second
	restoreIOTimeout   = 5 * time.Minute
)

// deadlineWriter gives every write to the response its own deadline and counts what was sent.
type deadlineWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	n  int64
}

func (d *deadlineWriter) Write(b []byte) (int, error) {
	if err := d.rc.SetWriteDeadline(time.Now().Add(backupWriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return 0, err
	}
	n, err := d.w.Write(b)
	d.n += int64(n)
	return n, err
}

// handleBackup answers GET /v1/backup?audit=true with the backup stream.
func (s *Server) handleBackup(w http.ResponseWriter, r *http.Request) {
	audit, err := queryBool(r, "audit")
	if err != nil {
		writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
		return
	}
	h := BackupHeader{Version: BackupVersion, Created: s.now().UTC().Truncate(time.Second), Backend: s.Backend, Node: s.Node, Audit: audit}
	dw := &deadlineWriter{w: w, rc: http.NewResponseController(w)}
	bw := bufio.NewWriterSize(dw, 64<<10)
	bw.Write(h.MarshalLine())
	enc := json.NewEncoder(bw)
	w.Header().Set("Content-Type", "application/jsonl")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	h, err = Backup(s.store(), h, func(it store.Item) error {
		return enc.Encode(streamLine{Kind: it.Kind, Key: it.Key, Value: it.Value})
	})
	if err != nil && dw.n == 0 {
		// Nothing has gone out yet: a proper error answer.
		s.writeErr(w, r, err)
		return
	}
	if err != nil {
		s.log().ErrorContext(r.Context(), "backup failed", "err", err, "actor", actorOf(r))
		enc.Encode(streamLine{Kind: streamError, Error: "the backup failed half-way: " + internalMessage})
		bw.Flush()
		return
	}
	enc.Encode(streamLine{Kind: streamEnd, Users: h.Users, Tickets: h.Tickets, Events: h.Events, LeftOut: h.LeftOut, MoreLeftOut: h.MoreLeftOut})
	if err := bw.Flush(); err != nil {
		s.log().WarnContext(r.Context(), "backup not delivered", "err", err, "actor", actorOf(r))
		return
	}
	// The daemon knows that the backup was sent, not whether the command stored it (a full
	// disk there): the event says so.
	AuditBackup(s.store(), h, actorOf(r), "sent "+h.Summary()+" to the admin command, which writes the backup file", s.log())
	s.log().InfoContext(r.Context(), "backup", "actor", actorOf(r), "users", h.Users, "tickets", h.Tickets, "events", h.Events,
		"left_out", h.LeftOutCount())
}

// handleRestore answers POST /v1/restore?force=true, whose body is a backup file.
func (s *Server) handleRestore(w http.ResponseWriter, r *http.Request) {
	force, err := queryBool(r, "force")
	if err != nil {
		writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
		return
	}
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(restoreIOTimeout))
	rc.SetWriteDeadline(time.Now().Add(restoreIOTimeout))
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBackupBytes))
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		writeError(w, http.StatusRequestEntityTooLarge, codeBadRequest, fmt.Sprintf("backup larger than %d bytes", int64(MaxBackupBytes)))
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, codeBadRequest, "reading the backup: "+err.Error())
		return
	}
	f, err := ParseBackup(raw)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	res, err := Restore(s.store(), f, force, actorOf(r), s.log())
	if le, ok := errors.AsType[*store.LoadError](err); ok && !errors.Is(err, store.ErrUnavailable) && !errors.Is(err, store.ErrExists) {
		// writeErr would answer with its internal message alone: the caller must learn what
		// was written.
		s.log().ErrorContext(r.Context(), "restore failed part-way", "err", err, "actor", actorOf(r))
		writeError(w, http.StatusInternalServerError, codeInternal, internalMessage+"; "+le.Progress())
		return
	}
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	s.log().InfoContext(r.Context(), "restore", "actor", actorOf(r), "force", force,
		"users", res.Users, "tickets", res.Tickets, "events", res.Events)
	writeJSON(w, http.StatusOK, res)
}

// queryBool reads a true/false query parameter; absent is false.
func queryBool(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%q: want true or false", name, v)
	}
	return b, nil
}

// readStream reads the backup stream of GET /v1/backup, calling fn with every item, and
// returns the header with the counts of the end line, which must match what came.
func readStream(body io.Reader, fn func(store.Item) error) (BackupHeader, error) {
	var h BackupHeader
	sc := bufio.NewScanner(body)
	sc.Buffer(nil, maxBackupLine)
	unreadable := func(format string, a ...any) error {
		return fmt.Errorf("backup: unreadable answer from the daemon: %s", fmt.Sprintf(format, a...))
	}
	if !sc.Scan() {
		return h, unreadable("no header (%v)", orEOF(sc.Err()))
	}
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil || h.Version != BackupVersion {
		return h, unreadable("header %.100q", sc.Bytes())
	}
	var got BackupHeader
	for sc.Scan() {
		var l streamLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return h, unreadable("%v", err)
		}
		switch l.Kind {
		case streamEnd:
			if got.Users != l.Users || got.Tickets != l.Tickets || got.Events != l.Events {
				return h, unreadable("the daemon sent %s but counted %d users, %d tickets and %d events",
					got.Summary(), l.Users, l.Tickets, l.Events)
			}
			if sc.Scan() {
				return h, unreadable("more after the end line")
			}
			h.Users, h.Tickets, h.Events, h.LeftOut, h.MoreLeftOut = got.Users, got.Tickets, got.Events, l.LeftOut, l.MoreLeftOut
			return h, nil
		case streamError:
			return h, fmt.Errorf("gatekeeper daemon: %s", l.Error)
		case store.ItemUser, store.ItemTicket, store.ItemEvent:
			it := store.Item{Kind: l.Kind, Key: l.Key, Value: l.Value}
			got.count(it)
			if err := fn(it); err != nil {
				return h, err
			}
		default:
			return h, unreadable("unknown line kind %q", l.Kind)
		}
	}
	return h, unreadable("the answer ended before the backup did (%v)", orEOF(sc.Err()))
}

func orEOF(err error) error {
	if err == nil {
		return io.ErrUnexpectedEOF
	}
	return err
}
