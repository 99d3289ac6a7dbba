package portal

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
)

// SSH keys registered at the gatekeeper (keys.enabled): the account page of a user signed in
// with both factors lists their keys and the devices remembered for them, and has a form to add
// a key and a button per key to revoke it. Both changes are POSTs with the CSRF token, go through
// KeyManager (enroll.Service, which checks the key and writes the audit log) and answer with a
// redirect to the account page, which then says what was done (a reload sends nothing again).
// A key that cannot be added gets the account page with the error and the form as it was typed.

// Messages of the key changes.
const (
	msgKeysNeedBothFactors = "To add or revoke SSH keys, sign out and sign in again with your password and a code from your app (or a recovery code)."
	msgKeyNotAdded         = "The key was not added: %s"
	msgKeyGone             = "That key is not registered (any more): it may have been revoked in another browser or by your admin."
	msgNoKeyChosen         = "Choose the key to revoke."
)

// Bounds of the key form's fields, checked before anything is parsed. The public key itself is
// bounded by MaxBodyBytes and by enroll.ParsePublicKey.
const (
	maxKeyLabel   = 200  // bytes; enroll shortens labels to 100 characters
	maxKeyFrom    = 2048 // bytes of the comma-separated networks
	maxKeyCommand = 1024 // bytes, as enroll allows
	maxKeyDays    = 3650 // days an expiry may lie ahead
	maxKeyFPLen   = 128  // bytes of a fingerprint in the revoke form
)

// keyRow is one registered key as the account page shows it.
type keyRow struct {
	Label       string
	Fingerprint string
	Type        string // ssh-ed25519, ecdsa-sha2-nistp256, ...
	Automation  bool
	Networks    string // "anywhere" or the list
	Expires     string // "never", a date, or "expired on ..."
	Expired     bool
	LastUsed    string // "never" or a date and time
	Command     string // "" when none
	Added       string // the date it was added, and by whom when not the user
}

// rememberedRow is one remembered device: a key that logged in with a code from a network,
// which skips the code from there until Until.
type rememberedRow struct {
	Key     string // the key's label, or its fingerprint
	Network string
	Until   string
}

// keyForm is the add form as typed, shown again with an error.
type keyForm struct {
	PublicKey   string
	Label       string
	Automation  bool
	From        string
	ExpiresDays string
	Command     string
}

// keyManager is the KeyManager to use, or nil when keys are off or nothing implements it.
func (s *Server) keyManager() KeyManager {
	if !s.KeysEnabled {
		return nil
	}
	if s.Keys != nil {
		return s.Keys
	}
	if km, ok := s.Linker.(KeyManager); ok {
		return km
	}
	return nil
}

// automationMaxDays is the longest an automation key may live, in whole days, when the
// KeyManager is an enroll.Service that says (0: not known).
func (s *Server) automationMaxDays() int {
	svc, ok := s.keyManager().(*enroll.Service)
	if !ok {
		return 0
	}
	d := svc.KeyPolicy.AutomationMaxLifetime
	if d <= 0 {
		d = enroll.DefaultAutomationMaxLifetime
	}
	return int(d / (24 * time.Hour))
}

// keysData fills the SSH keys section of the account page for user, whose remembered devices
// are remembered.
func (s *Server) keysData(r *http.Request, d *pageData, user string, remembered []store.Remembered) {
	km := s.keyManager()
	if km == nil {
		return
	}
	d.ShowKeys = true
	d.AutomationDays = s.automationMaxDays()
	if !d.TwoFactor {
		return // the page says to sign in with both factors; nothing is listed
	}
	keys, err := km.Keys(r.Context(), user)
	if err != nil {
		s.log().ErrorContext(r.Context(), "portal: reading the SSH keys", "user", user, "err", err)
		d.KeysFailed = true
		return
	}
	now := s.now()
	labels := make(map[string]string, len(keys))
	for _, k := range keys {
		d.Keys = append(d.Keys, s.keyRowOf(k, now))
		labels[k.Fingerprint] = cmpOr(k.Label, k.Fingerprint)
	}
	for _, m := range remembered {
		if !m.Until.After(now) {
			continue
		}
		d.Remembered = append(d.Remembered, rememberedRow{
			Key:     cmpOr(labels[m.Fingerprint], m.Fingerprint),
			Network: m.Network,
			Until:   dateTime(m.Until),
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// keyRowOf words key k at now.
func (s *Server) keyRowOf(k store.Key, now time.Time) keyRow {
	row := keyRow{
		Label:       k.Label,
		Fingerprint: k.Fingerprint,
		Automation:  k.Automation,
		Networks:    "anywhere",
		Expires:     "never",
		LastUsed:    "never",
		Command:     k.Command,
	}
	if typ, _, ok := strings.Cut(k.PublicKey, " "); ok {
		row.Type = typ
	}
	if len(k.From) > 0 {
		row.Networks = strings.Join(k.From, ", ")
	}
	if !k.Expires.IsZero() {
		if k.Expires.After(now) {
			row.Expires = dateTime(k.Expires)
		} else {
			row.Expires, row.Expired = "expired on "+dateTime(k.Expires), true
		}
	}
	if !k.LastUsed.IsZero() {
		row.LastUsed = dateTime(k.LastUsed)
	}
	if !k.AddedAt.IsZero() {
		row.Added = day(k.AddedAt)
	}
	if k.AddedBy != "" && k.AddedBy != enroll.AddedBySelf {
		row.Added = strings.TrimSpace(row.Added + " by an admin")
	}
	return row
}

// mayKeys reports whether the session may change user's keys now: keys are on, the device is
// active and the session signed in with both factors. Otherwise it has already answered.
func (s *Server) mayKeys(w http.ResponseWriter, r *http.Request, v view) (KeyManager, bool) {
	km := s.keyManager()
	if km == nil || v.user == "" {
		seeOther(w, r, "/")
		return nil, false
	}
	st, err := s.linkState(r, v.user)
	if err != nil {
		s.log().ErrorContext(r.Context(), "portal: reading link state", "user", v.user, "err", err)
		s.serverError(w, r)
		return nil, false
	}
	if st.state != "active" {
		seeOther(w, r, "/")
		return nil, false
	}
	if !v.twoFactor {
		s.log().InfoContext(r.Context(), "portal key change refused: signed in without the second factor",
			"user", v.user, "path", r.URL.Path)
		s.account(w, r, v, http.StatusForbidden, msgKeysNeedBothFactors)
		return nil, false
	}
	return km, true
}

// keyFormOf reads the add form.
func keyFormOf(r *http.Request) keyForm {
	return keyForm{
		PublicKey:   strings.TrimSpace(r.PostForm.Get("public_key")),
		Label:       strings.TrimSpace(r.PostForm.Get("label")),
		Automation:  r.PostForm.Get("automation") != "",
		From:        strings.TrimSpace(r.PostForm.Get("from")),
		ExpiresDays: strings.TrimSpace(r.PostForm.Get("expires_days")),
		Command:     strings.TrimSpace(r.PostForm.Get("command")),
	}
}

// newKey checks the form's bounds and turns it into the key to add at now; the error is for
// the user.
func (f keyForm) newKey(now time.Time) (enroll.NewKey, error) {
	nk := enroll.NewKey{PublicKey: f.PublicKey, Label: f.Label, Automation: f.Automation, Command: f.Command}
	switch {
	case f.PublicKey == "":
		return nk, errors.New("paste the public key (the contents of a file such as ~/.ssh/id_ed25519.pub)")
	case strings.ContainsAny(f.PublicKey, "\r\n"):
		return nk, errors.New("one key at a time: paste a single line")
	case len(f.Label) > maxKeyLabel || !utf8.ValidString(f.Label):
		return nk, fmt.Errorf("the label is too long (at most %d characters)", maxKeyLabel/2)
	case len(f.From) > maxKeyFrom:
		return nk, errors.New("too many networks")
	case len(f.Command) > maxKeyCommand:
		return nk, fmt.Errorf("the command is too long (at most %d characters)", maxKeyCommand)
	}
	nk.From = strings.FieldsFunc(f.From, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	if f.ExpiresDays != "" {
		days, err := strconv.Atoi(f.ExpiresDays)
		if err != nil || days < 1 || days > maxKeyDays {
			return nk, fmt.Errorf("“expires in days” must be a whole number from 1 to %d, or empty", maxKeyDays)
		}
		nk.Expires = now.Add(time.Duration(days) * 24 * time.Hour)
	}
	return nk, nil
}

// keyAdd registers the key of the add form.
func (s *Server) keyAdd(w http.ResponseWriter, r *http.Request) {
	v, ok := s.checkPost(w, r)
	if !ok {
		return
	}
	km, ok := s.mayKeys(w, r, v)
	if !ok {
		return
	}
	ctx := actorContext(r)
	log := s.log().With("user", v.user, "remote", remoteAddr(r).String())
	form := keyFormOf(r)
	refuse := func(msg string) {
		s.accountWith(w, r, v, http.StatusUnprocessableEntity, func(d *pageData) {
			d.Error = fmt.Sprintf(msgKeyNotAdded, msg)
			d.KeyForm = form
		})
	}
	nk, err := form.newKey(s.now())
	if err != nil {
		log.InfoContext(ctx, "portal key refused", "reason", err.Error())
		refuse(enroll.KeyErrorText(err))
		return
	}
	k, err := km.AddKey(ctx, v.user, nk, enroll.AddedBySelf)
	switch {
	case err == nil:
	case errors.Is(err, enroll.ErrBadKey), errors.Is(err, enroll.ErrKeyExists), errors.Is(err, enroll.ErrTooManyKeys):
		log.InfoContext(ctx, "portal key refused", "reason", err.Error())
		refuse(enroll.KeyErrorText(err))
		return
	case errors.Is(err, enroll.ErrNotLinked):
		seeOther(w, r, "/") // reset by an admin meanwhile: the account page says what now
		return
	default:
		log.ErrorContext(ctx, "portal: adding a key", "err", err)
		s.serverError(w, r)
		return
	}
	log.InfoContext(ctx, "portal key added", "fingerprint", k.Fingerprint, "automation", k.Automation)
	note := fmt.Sprintf("SSH key %s added.", keyName(k))
	if k.Automation {
		note += " It logs in without a code from " + strings.Join(k.From, ", ") + " until " + dateTime(k.Expires) + "."
	} else {
		note += " It replaces your password when you log in with ssh; the code from your app is still asked for."
	}
	s.flash(v, note)
	seeOther(w, r, "/#ssh-keys")
}

// keyRevoke revokes the key named by the form's fingerprint, and says how many live sessions
// that logged in with it were ended.
func (s *Server) keyRevoke(w http.ResponseWriter, r *http.Request) {
	v, ok := s.checkPost(w, r)
	if !ok {
		return
	}
	km, ok := s.mayKeys(w, r, v)
	if !ok {
		return
	}
	ctx := actorContext(r)
	log := s.log().With("user", v.user, "remote", remoteAddr(r).String())
	fp := strings.TrimSpace(r.PostForm.Get("fingerprint"))
	if fp == "" || len(fp) > maxKeyFPLen {
		s.accountWith(w, r, v, http.StatusUnprocessableEntity, func(d *pageData) { d.Error = msgNoKeyChosen })
		return
	}
	k, ended, err := km.RevokeKey(ctx, v.user, fp)
	switch {
	case err == nil:
	case errors.Is(err, enroll.ErrNoKey):
		log.InfoContext(ctx, "portal key revoke: no such key", "fingerprint", fp)
		s.accountWith(w, r, v, http.StatusConflict, func(d *pageData) { d.Error = msgKeyGone })
		return
	default:
		log.ErrorContext(ctx, "portal: revoking a key", "fingerprint", fp, "err", err)
		s.serverError(w, r)
		return
	}
	log.InfoContext(ctx, "portal key revoked", "fingerprint", k.Fingerprint, "sessions_ended", ended)
	note := fmt.Sprintf("SSH key %s revoked: it no longer logs in.", keyName(k))
	switch ended {
	case 0:
		note += " No live session had logged in with it."
	case 1:
		note += " 1 live session that had logged in with it was ended."
	default:
		note += fmt.Sprintf(" %d live sessions that had logged in with it were ended.", ended)
	}
	s.flash(v, note)
	seeOther(w, r, "/#ssh-keys")
}

// keyName names a key in a message: its label and fingerprint.
func keyName(k store.Key) string {
	if k.Label != "" {
		return fmt.Sprintf("“%s” (%s)", k.Label, k.Fingerprint)
	}
	return k.Fingerprint
}

// flash keeps a notice in the session for the next page; the account page shows it once.
func (s *Server) flash(v view, notice string) {
	s.sessions.update(v.id, s.now(), func(ss *session) { ss.flash = notice })
}

// takeFlash returns the session's notice, once.
func (s *Server) takeFlash(v view) string {
	var notice string
	s.sessions.update(v.id, s.now(), func(ss *session) { notice, ss.flash = ss.flash, "" })
	return notice
}
