package portal

import (
	"cmp"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
)

// The security log on the account page lists the user's latest audit events in words a user
// understands, so that they can spot a login they did not make, or a refused one from an
// address they do not know. It shows what the audit trail recorded and nothing more: the
// daemon's other doors write it, the portal only reads it (Server.SecurityLog).

// logRow is one event as the account page shows it.
type logRow struct {
	When   string // date and time of day
	What   string // what happened, in words
	Detail string // why a login was refused, who did it when not the user; may be ""
	Source string // the client's address; "" when not known
	Door   string // where it happened: SSH login, web portal, SSH linking, console; may be ""
	// Alarm marks what a user should look at twice: refusals, lockouts, codes used twice.
	Alarm bool
}

// eventWords is what the security log says for each kind of event, and whether it is an alarm.
var eventWords = map[string]struct {
	what  string
	alarm bool
}{
	store.EventLoginOK:          {"Login accepted", false},
	store.EventLoginRefused:     {"Login refused", true},
	store.EventTrustedBypass:    {"No code asked (trusted network)", false},
	store.EventCodeReuse:        {"A code was used a second time", true},
	store.EventLockout:          {"Locked out after too many failures", true},
	store.EventLockoutEnded:     {"Lockout ended", false},
	store.EventLinkStarted:      {"Device linking started", false},
	store.EventQRShown:          {"New QR code shown (once)", false},
	store.EventLinkConfirmed:    {"Device linked", false},
	store.EventLinkExpired:      {"Unfinished device linking expired", false},
	enroll.EventLinkVoided:      {"Device linking cancelled after too many wrong codes", true},
	store.EventReplaceStarted:   {"Phone replacement started", false},
	store.EventDeviceReplaced:   {"Phone replaced", false},
	store.EventReplaceExpired:   {"Unfinished phone replacement expired", false},
	store.EventReplaceVoided:    {"Phone replacement cancelled after too many wrong codes", true},
	store.EventReplaceCancelled: {"Phone replacement cancelled", false},
	store.EventRecoveryUsed:     {"Recovery code used", false},
	store.EventRecoveryRenewed:  {"New recovery codes made", false},
	store.EventReset:            {"Device reset by an admin", true},
	store.EventUnlock:           {"Lockout cleared by an admin", false},
	store.EventTicketIssued:     {"Linking ticket issued by an admin", false},
	store.EventTicketUsed:       {"Linking ticket used", false},
	store.EventSessionKilled:    {"SSH session ended by an admin", false},
	store.EventImport:           {"Device imported by an admin", false},
	store.EventKeyAdded:         {"SSH key added", false},
	store.EventKeyRevoked:       {"SSH key revoked", false},
}

// refusalWords says why a login was refused (the Reason constants of package gatekeeper). The
// user is signed in and sees only their own log, so the reason helps them: a refused login with
// the right code and a wrong password means someone has their phone, or a code from it.
var refusalWords = map[string]string{
	"wrong_password":     "wrong password",
	"wrong_code":         "wrong code",
	"malformed_code":     "not a code",
	"replayed_code":      "code already used",
	"not_linked":         "no device linked",
	"locked":             "locked out",
	"bad_password":       "password too long",
	"lander_unavailable": "login node not reachable",
}

// doorWords names the doors (store.Door*).
var doorWords = map[string]string{
	store.DoorSSH:     "SSH login",
	store.DoorPortal:  "web portal",
	store.DoorLinking: "SSH linking",
	store.DoorConsole: "console",
}

// securityLog reads and words user's latest events, newest first; failed is set (and the cause
// logged) when they could not be read, so that the page can say so instead of failing.
func (s *Server) securityLog(r *http.Request, user string) (rows []logRow, failed bool) {
	if s.SecurityLog == nil {
		return nil, false
	}
	events, err := s.SecurityLog.SecurityLog(r.Context(), user, SecurityLogEvents)
	if err != nil {
		s.log().ErrorContext(r.Context(), "portal: reading the security log", "user", user, "err", err)
		return nil, true
	}
	// Newest first, whatever order they came in; Seq breaks ties (events of one moment).
	slices.SortFunc(events, func(a, b store.Event) int {
		return cmp.Or(b.Time.Compare(a.Time), cmp.Compare(b.Seq, a.Seq))
	})
	if len(events) > SecurityLogEvents {
		events = events[:SecurityLogEvents]
	}
	for _, e := range events {
		rows = append(rows, wordEvent(e))
	}
	return rows, false
}

// wordEvent is the row of one event.
func wordEvent(e store.Event) logRow {
	row := logRow{When: dateTime(e.Time), Source: e.Remote, Door: doorWords[e.Door]}
	if w, ok := eventWords[e.Kind]; ok {
		row.What, row.Alarm = w.what, w.alarm
	} else {
		row.What = humanKind(e.Kind)
	}
	if e.Reason != "" {
		row.Detail = refusalWords[e.Reason]
	}
	if e.Kind == store.EventKeyAdded || e.Kind == store.EventKeyRevoked {
		// The detail begins with the key's fingerprint (enroll's keyDetail).
		if fp, _, _ := strings.Cut(e.Detail, " "); strings.HasPrefix(fp, "SHA256:") {
			row.Detail = strings.TrimSuffix(fp, ";")
		}
	}
	// Link events name the portal and the browser's address as their actor ("portal
	// 192.0.2.10", see actorContext) rather than in Remote and Door.
	if rest, ok := strings.CutPrefix(e.Actor, "portal "); ok && row.Source == "" {
		if a, err := netip.ParseAddr(rest); err == nil {
			row.Source = a.String()
			if row.Door == "" {
				row.Door = doorWords[store.DoorPortal]
			}
		}
	}
	if strings.HasPrefix(e.Actor, "uid ") && row.Detail == "" && !strings.Contains(row.What, "admin") {
		row.Detail = "by an admin" // an admin socket caller, such as `gatekeeper enroll`
	}
	return row
}

// humanKind is the name of an event kind this page has no words for (a later kind), readable:
// "some_new_kind" → "Some new kind". Better than leaving the user's event out.
func humanKind(kind string) string {
	if kind == "" {
		return "Unknown event"
	}
	words := strings.ReplaceAll(kind, "_", " ")
	return strings.ToUpper(words[:1]) + words[1:]
}

// dateTime formats a moment for the security log, e.g. "23 Nov 2026, 14:05 UTC".
func dateTime(t time.Time) string { return t.Local().Format("2 Jan 2006, 15:04 MST") }
