package portal

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
)

// contentSecurityPolicy allows the page nothing but its own stylesheet, inline data: images (the
// QR code) and forms posting back to itself. There is no script at all.
const contentSecurityPolicy = "default-src 'none'; img-src 'self' data:; style-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Messages shown to users, kept here because the tests look for them.
const (
	msgSignInFailed  = "Wrong username, password or verification code, or too many attempts. Try again in a minute."
	msgTicketFailed  = "Wrong username, password or ticket, or too many attempts. Try again in a minute."
	msgOutside       = "Linking is only possible from the campus network or VPN. If you are away, ask your admin for a one-time ticket."
	msgShownOnce     = "For your security the code is shown only once. If you scanned it, enter a code from the app below; if not, wait until it expires at %s and start again, or ask your admin."
	msgBadCode       = "That code did not match. Check that you typed the 6 digits the app shows now. If it still fails, check that the phone sets its clock automatically."
	msgUsedCode      = "That code was used already: each code works once, across phones too. Wait for the next code in the app and enter that one."
	msgLinkedOn      = "Linked on %s. Lost your phone? Ask your admin."
	msgLinkedSince   = "Linked on %s."
	msgAlreadyLinked = "Your device is already linked. To link a different one, use “Replace my phone” on your account page, or ask your admin to reset it."
	msgVoided        = "Too many wrong codes: this link was cancelled; start again. The QR code you scanned no longer works: remove it from the app, then link again to get a new one."
	msgElsewhere     = "This link was started in another browser or session (or you have signed in again since), and only that one can finish it. Finish it there, or start again here after it expires at %s."
	msgTooMany       = "You are already signed in to this page in %d other browsers or tabs. Sign out there, or wait %d minutes, and try again."
)

// staticPath is the one path that serves a file rather than a page.
const staticPath = "/static/style.css"

// route is the handler of one path, per method.
type route struct{ get, post http.HandlerFunc }

// routes builds the portal's handler: security headers and method, size and origin checks in
// front of a fixed table of paths.
func (s *Server) routes() http.Handler {
	table := map[string]route{
		"/":             {get: s.home},
		"/signin":       {post: s.signIn},
		"/signout":      {post: s.signOut},
		"/link":         {get: s.linkIntro},
		"/link/start":   {post: s.linkStart},
		"/link/qr":      {get: s.linkQR},
		"/link/confirm": {post: s.linkConfirm},
		"/link/done":    {get: s.linkDone},
		// Credential changes, for a session signed in with both factors (replace.go).
		"/replace":         {get: s.replaceIntro},
		"/replace/start":   {post: s.replaceStart},
		"/replace/qr":      {get: s.replaceQR},
		"/replace/confirm": {post: s.replaceConfirm},
		"/replace/cancel":  {post: s.replaceCancel},
		"/replace/done":    {get: s.replaceDone},
		"/recovery":        {get: s.renewIntro},
		"/recovery/new":    {post: s.renewRecovery},
		"/recovery/done":   {get: s.renewDone},
		// SSH keys, for a session signed in with both factors (keys.go).
		"/keys/add":    {post: s.keyAdd},
		"/keys/revoke": {post: s.keyRevoke},
		staticPath:     {get: s.styleSheet},
	}
	cop := http.NewCrossOriginProtection()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.setHeaders(w)
		if r.Method != http.MethodGet && r.Method != http.MethodPost {
			w.Header().Set("Allow", "GET, POST")
			s.message(w, r, http.StatusMethodNotAllowed, "Not allowed",
				"This page cannot be used that way.")
			return
		}
		rt, ok := table[r.URL.Path]
		if !ok {
			s.message(w, r, http.StatusNotFound, "Page not found",
				"There is no such page here.")
			return
		}
		h := rt.get
		if r.Method == http.MethodPost {
			h = rt.post
		}
		if h == nil {
			switch {
			case rt.get != nil:
				w.Header().Set("Allow", "GET")
			default:
				w.Header().Set("Allow", "POST")
			}
			s.message(w, r, http.StatusMethodNotAllowed, "Not allowed",
				"This page cannot be used that way.")
			return
		}
		if r.URL.Path != staticPath {
			// The style sheet is loaded by the QR page itself; only the page after it counts.
			r = s.rotateDue(w, r)
		}
		if r.Method == http.MethodPost {
			if err := cop.Check(r); err != nil {
				s.log().WarnContext(r.Context(), "portal cross-origin POST refused",
					"path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
				s.csrfFailed(w, r)
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
			if err := r.ParseForm(); err != nil {
				if _, big := errors.AsType[*http.MaxBytesError](err); big {
					s.message(w, r, http.StatusRequestEntityTooLarge, "Too much data",
						"The form sent more data than this page accepts.")
					return
				}
				s.message(w, r, http.StatusBadRequest, "Bad request",
					"The form could not be read.")
				return
			}
		}
		h(w, r)
	})
}

// setHeaders sets the headers every response carries, errors included: nothing is cached or
// framed, nothing is loaded from elsewhere, no referrer leaves.
func (s *Server) setHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	if s.Secure {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
}

// actorContext names the portal and the browser's address as the actor, and the portal as the
// door, of the link events the request causes, in the audit log.
func actorContext(r *http.Request) context.Context {
	ctx := enroll.WithActor(r.Context(), "portal "+remoteAddr(r).String())
	return enroll.WithDoor(ctx, store.DoorPortal)
}

// remoteAddr is the client's address from r.RemoteAddr (which the daemon may have replaced with
// the PROXY protocol's), unmapped; invalid when it is not an IP:port.
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// sessionIDKey is the context key of a session id given out during the request (rotateDue),
// which replaces the one in the request's cookie.
type sessionIDKey struct{}

// sessionID is the request's session id: a new one from rotateDue, or the cookie's.
func sessionID(r *http.Request) string {
	if id, ok := r.Context().Value(sessionIDKey{}).(string); ok {
		return id
	}
	if c, err := r.Cookie(cookieName); err == nil {
		return c.Value
	}
	return ""
}

// current returns the request's live session, if any.
func (s *Server) current(r *http.Request) (view, bool) {
	return s.sessions.get(sessionID(r), s.now())
}

// rotateDue gives the session a new id on the first page request after the QR page, and
// returns r carrying it. The browser gets the new cookie and Clear-Site-Data: "cache" with this
// answer: the old id is dead, and the browser drops the QR page from its caches (including the
// back/forward cache, which would otherwise show it again on Back without asking the server).
func (s *Server) rotateDue(w http.ResponseWriter, r *http.Request) *http.Request {
	newID, ok := s.sessions.rotateDue(sessionID(r), s.now())
	if !ok {
		return r
	}
	s.setCookie(w, newID)
	w.Header().Set("Clear-Site-Data", `"cache"`)
	return r.WithContext(context.WithValue(r.Context(), sessionIDKey{}, newID))
}

// setCookie hands the browser a session id.
func (s *Server) setCookie(w http.ResponseWriter, id string) {
	http.SetCookie(w, &http.Cookie{
		Name:     cookieName,
		Value:    id,
		Path:     "/",
		HttpOnly: true,
		Secure:   s.Secure,
		SameSite: http.SameSiteStrictMode,
	})
}

// dropCookie tells the browser to forget its session id.
func (s *Server) dropCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{
		Name:     cookieName,
		Value:    "",
		Path:     "/",
		MaxAge:   -1,
		HttpOnly: true,
		Secure:   s.Secure,
		SameSite: http.SameSiteStrictMode,
	})
}

// checkPost returns the session of a POST whose "csrf" field matches the session's token;
// otherwise it has already answered 403.
func (s *Server) checkPost(w http.ResponseWriter, r *http.Request) (view, bool) {
	v, ok := s.current(r)
	got := r.PostForm.Get("csrf")
	if !ok || got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(v.csrf)) != 1 {
		s.log().WarnContext(r.Context(), "portal POST without a valid CSRF token",
			"path", r.URL.Path, "remote", r.RemoteAddr, "session", ok)
		s.csrfFailed(w, r)
		return view{}, false
	}
	return v, true
}

func (s *Server) csrfFailed(w http.ResponseWriter, r *http.Request) {
	s.message(w, r, http.StatusForbidden, "This form has expired",
		"The form was sent from an old page, after a long pause, or not from this site, so it was ignored.",
		"Go to the start page and try again.")
}

// seeOther sends the browser to path with a GET (so a reload never sends a form again).
func seeOther(w http.ResponseWriter, r *http.Request, path string) {
	http.Redirect(w, r, path, http.StatusSeeOther)
}

// home is the start page: the sign-in form, or the account page once signed in.
func (s *Server) home(w http.ResponseWriter, r *http.Request) {
	v, ok := s.current(r)
	if !ok {
		var err error
		v, err = s.sessions.create(s.now(), signedInAs{})
		if err != nil {
			s.busy(w, r)
			return
		}
		s.setCookie(w, v.id)
	}
	if v.user == "" {
		s.render(w, r, http.StatusOK, "signin", s.signInData(r, v))
		return
	}
	s.account(w, r, v, http.StatusOK, s.takeFlash(v))
}

func (s *Server) busy(w http.ResponseWriter, r *http.Request) {
	s.log().WarnContext(r.Context(), "portal session store full", "remote", r.RemoteAddr)
	w.Header().Set("Retry-After", "300")
	s.message(w, r, http.StatusServiceUnavailable, "Too busy",
		"Too many people are using this page right now. Please try again in a few minutes.")
}

func (s *Server) signInData(r *http.Request, v view) pageData {
	outside := !s.allowed(remoteAddr(r))
	return pageData{
		Title:     "Sign in",
		CSRF:      v.csrf,
		Outside:   outside,
		AskTicket: outside && s.Tickets != nil,
	}
}

// signIn checks the sign-in form and starts a signed-in session with a new id, so an id known
// before sign-in is worth nothing after it. From outside the allowed networks a ticket is
// checked first (before the password, so nobody without one can try passwords from there).
// Then Auth.SignIn decides: password and code once the user has a device, the password alone
// before; the session remembers which, because only a sign-in with both factors may change
// credentials (replace the phone, new recovery codes).
func (s *Server) signIn(w http.ResponseWriter, r *http.Request) {
	v, ok := s.checkPost(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	remote := remoteAddr(r)
	user := r.PostForm.Get("username")
	password := r.PostForm.Get("password")
	code := r.PostForm.Get("code")
	ticket := strings.TrimSpace(r.PostForm.Get("ticket"))
	outside := !s.allowed(remote)
	log := s.log().With("remote", remote.String())

	// From outside, a ticket lets a user link a first device; without one, only a user whose
	// device is linked signs in, with a code from it.
	withTicket := outside && ticket != "" && s.Tickets != nil
	if outside && !withTicket && code == "" {
		log.DebugContext(ctx, "portal sign-in refused: outside the allowed networks without a ticket or a code")
		s.refused(w, r)
		return
	}
	fail := func(reason string, checked bool) {
		// The reason goes to the log only; the page says the same thing for every failure,
		// after the same time: a refusal before Auth.SignIn waits as long as one by it.
		log.WarnContext(ctx, "portal sign-in failed", "user", logName(user), "reason", reason)
		if !checked {
			s.waitRefusal(ctx)
		}
		d := s.signInData(r, v)
		d.Username = user
		d.HadTicket = ticket != ""
		d.Error = msgSignInFailed
		if d.HadTicket {
			d.Error = msgTicketFailed
		}
		s.render(w, r, http.StatusUnauthorized, "signin", d)
	}
	if err := store.CheckName(user); err != nil {
		fail("invalid user name", false)
		return
	}
	if password == "" {
		fail("empty password", false)
		return
	}
	if !withTicket {
		ticket = "" // not needed (or not usable) here: keep it for when it is
	} else if err := s.Tickets.CheckTicket(user, ticket, s.now()); err != nil {
		fail("ticket: "+err.Error(), false)
		return
	}
	var linked bool
	var err error
	if outside && !withTicket {
		linked, err = true, s.Auth.SignInLinked(ctx, user, password, code, remote, store.DoorPortal)
	} else {
		linked, err = s.Auth.SignIn(ctx, user, password, code, remote, store.DoorPortal)
	}
	if err != nil {
		fail("sign-in: "+err.Error(), true)
		return
	}
	// Counted after the sign-in, so that only the user learns how many sessions they have.
	nv, err := s.sessions.create(s.now(), signedInAs{user: user, ticket: ticket, twoFactor: linked})
	switch {
	case errors.Is(err, errUserSessions):
		log.WarnContext(ctx, "portal sign-in refused: too many sessions", "user", user, "max", MaxSessionsPerUser)
		s.message(w, r, http.StatusTooManyRequests, "Signed in too often",
			fmt.Sprintf(msgTooMany, MaxSessionsPerUser, int(IdleTimeout/time.Minute)))
		return
	case err != nil:
		s.busy(w, r)
		return
	}
	s.sessions.delete(v.id)
	log.InfoContext(ctx, "portal sign-in", "user", user, "both_factors", linked, "ticket", ticket != "")
	s.setCookie(w, nv.id)
	seeOther(w, r, "/")
}

// logName bounds what a failed sign-in puts into the log (the handler quotes and escapes it).
func logName(user string) string {
	if len(user) > 64 {
		return user[:64] + "…"
	}
	return user
}

func (s *Server) refused(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusForbidden, "refused", pageData{Title: "Not from this network"})
}

// signOut ends the session.
func (s *Server) signOut(w http.ResponseWriter, r *http.Request) {
	v, ok := s.checkPost(w, r)
	if !ok {
		return
	}
	s.sessions.delete(v.id)
	s.dropCookie(w)
	seeOther(w, r, "/")
}

// signedIn returns the session of a signed-in user; otherwise it has already sent the browser
// to the start page.
func (s *Server) signedIn(w http.ResponseWriter, r *http.Request) (view, bool) {
	v, ok := s.current(r)
	if !ok || v.user == "" {
		seeOther(w, r, "/")
		return view{}, false
	}
	return v, true
}

// linkState is a user's link state as the pages show it.
type linkState struct {
	state        string // none, pending, expired, active
	expiresAt    time.Time
	linkedOn     time.Time
	recoveryLeft int // unused recovery codes of an active device
	remembered   []store.Remembered
}

func (s *Server) linkState(r *http.Request, user string) (linkState, error) {
	u, err := s.Linker.State(r.Context(), user)
	if err != nil {
		return linkState{}, err
	}
	switch u.State {
	case store.StateActive:
		return linkState{state: "active", linkedOn: u.EnrolledAt, recoveryLeft: len(u.Recovery), remembered: u.Remembered}, nil
	case store.StatePending:
		exp := u.PendingSince.Add(s.confirmWithin())
		if !s.now().Before(exp) {
			return linkState{state: "expired", expiresAt: exp}, nil
		}
		return linkState{state: "pending", expiresAt: exp}, nil
	default:
		return linkState{state: "none"}, nil
	}
}

// canLink reports whether this request may start a link: from an allowed network, or with the
// ticket accepted at sign-in.
func (s *Server) canLink(r *http.Request, v view) bool {
	return s.allowed(remoteAddr(r)) || v.ticket != ""
}

// account renders the account page with the user's link state. With an active device it also
// shows how many recovery codes are left, the user's security log and, to a session signed in
// with both factors, the buttons that change credentials.
func (s *Server) account(w http.ResponseWriter, r *http.Request, v view, status int, notice string) {
	s.accountWith(w, r, v, status, func(d *pageData) { d.Notice = notice })
}

// accountWith renders the account page as account does, after more changes to its data (an
// error, the key form as typed).
func (s *Server) accountWith(w http.ResponseWriter, r *http.Request, v view, status int, more func(*pageData)) {
	st, err := s.linkState(r, v.user)
	if err != nil {
		s.log().ErrorContext(r.Context(), "portal: reading link state", "user", v.user, "err", err)
		s.serverError(w, r)
		return
	}
	d := pageData{
		Title:     "Your account",
		CSRF:      v.csrf,
		User:      v.user,
		State:     st.state,
		CanLink:   s.canLink(r, v),
		ViaTicket: v.ticket != "" && !s.allowed(remoteAddr(r)),
		Bound:     v.bound,
		TwoFactor: v.twoFactor,
	}
	switch st.state {
	case "pending":
		d.ExpiresAt = timeOfDay(st.expiresAt)
		if !v.bound {
			d.Elsewhere = fmt.Sprintf(msgElsewhere, timeOfDay(st.expiresAt))
		}
	case "active":
		if v.twoFactor {
			d.LinkedOn = fmt.Sprintf(msgLinkedSince, day(st.linkedOn))
		} else {
			d.LinkedOn = fmt.Sprintf(msgLinkedOn, day(st.linkedOn))
		}
		if v.replacing && s.now().Before(v.replaceUntil) {
			d.ReplaceUntil = timeOfDay(v.replaceUntil)
		}
		d.CanChange = v.twoFactor && s.Credentials != nil
		d.RecoveryLeft = st.recoveryLeft
		d.RecoveryTotal = enroll.RecoveryCodes
		d.ShowLog = s.SecurityLog != nil
		d.Log, d.LogFailed = s.securityLog(r, v.user)
		s.keysData(r, &d, v.user, st.remembered)
	}
	more(&d)
	s.render(w, r, status, "account", d)
}

// linkIntro explains what will happen before the secret is made.
func (s *Server) linkIntro(w http.ResponseWriter, r *http.Request) {
	v, ok := s.signedIn(w, r)
	if !ok {
		return
	}
	st, err := s.linkState(r, v.user)
	if err != nil {
		s.log().ErrorContext(r.Context(), "portal: reading link state", "user", v.user, "err", err)
		s.serverError(w, r)
		return
	}
	if st.state == "active" || st.state == "pending" {
		seeOther(w, r, "/")
		return
	}
	if !s.canLink(r, v) {
		s.refused(w, r)
		return
	}
	s.render(w, r, http.StatusOK, "intro", pageData{
		Title:      "Link your mobile device",
		CSRF:       v.csrf,
		User:       v.user,
		ConfirmMin: int(s.confirmWithin().Round(time.Minute) / time.Minute),
	})
}

// linkStart makes the new secret and parks it in the session for the one page that shows it.
func (s *Server) linkStart(w http.ResponseWriter, r *http.Request) {
	v, ok := s.checkPost(w, r)
	if !ok {
		return
	}
	if v.user == "" {
		seeOther(w, r, "/")
		return
	}
	ctx := actorContext(r)
	log := s.log().With("user", v.user, "remote", remoteAddr(r).String())
	if !s.canLink(r, v) {
		log.InfoContext(ctx, "portal link refused: outside the allowed networks without a ticket")
		s.refused(w, r)
		return
	}
	st, err := s.linkState(r, v.user)
	if err != nil {
		log.ErrorContext(ctx, "portal: reading link state", "err", err)
		s.serverError(w, r)
		return
	}
	switch st.state {
	case "active":
		s.account(w, r, v, http.StatusConflict, msgAlreadyLinked)
		return
	case "pending":
		s.account(w, r, v, http.StatusConflict, "")
		return
	}
	if !s.allowed(remoteAddr(r)) {
		// Linking from outside: this is where the ticket is used up, right before the secret is
		// made, so that a refused or failed sign-in never costs it.
		err := s.Tickets.UseTicket(v.user, v.ticket, s.now())
		s.sessions.update(v.id, s.now(), func(ss *session) { ss.ticket = "" })
		if err != nil {
			log.WarnContext(ctx, "portal link refused: ticket no longer valid", "err", err)
			s.refused(w, r)
			return
		}
		log.InfoContext(ctx, "portal ticket used")
		v.ticket = ""
	}
	link, binding, err := s.Linker.Begin(ctx, v.user)
	switch {
	case errors.Is(err, enroll.ErrAlreadyLinked), errors.Is(err, enroll.ErrPending):
		s.account(w, r, v, http.StatusConflict, "")
		return
	case err != nil:
		log.ErrorContext(ctx, "portal: starting a link", "err", err)
		s.serverError(w, r)
		return
	}
	if !s.sessions.update(v.id, s.now(), func(ss *session) { ss.link, ss.binding, ss.replacing = &link, binding, false }) {
		// The session ended between the two calls (idle timeout, sign-out in another tab): the
		// secret is dropped unseen and the link expires on its own.
		seeOther(w, r, "/")
		return
	}
	log.InfoContext(ctx, "portal link started", "expires_at", link.ExpiresAt)
	seeOther(w, r, "/link/qr")
}

// linkQR shows the secret once. Whatever comes later (reload, back, second tab) finds it gone
// and gets the explanation and the code form.
func (s *Server) linkQR(w http.ResponseWriter, r *http.Request) {
	v, ok := s.signedIn(w, r)
	if !ok {
		return
	}
	var link *enroll.Link
	s.sessions.update(v.id, s.now(), func(ss *session) {
		if !ss.replacing { // a replacement's secret is for /replace/qr only
			link, ss.link = ss.link, nil
			ss.rotate = ss.rotate || link != nil
		}
	})
	if link != nil && s.now().Before(link.ExpiresAt) {
		d, err := s.qrData(*link)
		if err != nil {
			s.log().ErrorContext(r.Context(), "portal: drawing the QR code", "user", v.user, "err", err)
			s.serverError(w, r)
			return
		}
		d.CSRF, d.User = v.csrf, v.user
		s.log().InfoContext(r.Context(), "portal QR shown", "user", v.user)
		s.render(w, r, http.StatusOK, "qr", d)
		return
	}
	st, err := s.linkState(r, v.user)
	if err != nil {
		s.log().ErrorContext(r.Context(), "portal: reading link state", "user", v.user, "err", err)
		s.serverError(w, r)
		return
	}
	if st.state != "pending" || !v.bound {
		// Nothing to confirm here: the account page says why.
		seeOther(w, r, "/")
		return
	}
	s.codePage(w, r, v, st, http.StatusOK, "The QR code is not shown again", "")
}

// qrData prepares the QR page for link.
func (s *Server) qrData(link enroll.Link) (pageData, error) {
	// Only an otpauth URI becomes a link: html/template would refuse the scheme otherwise, and
	// marking it safe must not let anything else through.
	if !strings.HasPrefix(link.URI, "otpauth://totp/") || strings.ContainsAny(link.URI, "\"'<> \t\r\n") {
		return pageData{}, fmt.Errorf("unexpected link URI form (%d bytes)", len(link.URI))
	}
	qr, size, err := qrDataURI(link.URI)
	if err != nil {
		return pageData{}, err
	}
	return pageData{
		Title:     "Scan the QR code",
		QR:        qr,
		QRSize:    size,
		URI:       template.URL(link.URI),
		Secret:    enroll.GroupSecret(link.Secret),
		Account:   link.User,
		ExpiresAt: timeOfDay(link.ExpiresAt),
	}, nil
}

// codePage asks for a code of a pending link whose secret is no longer shown.
func (s *Server) codePage(w http.ResponseWriter, r *http.Request, v view, st linkState, status int, title, errMsg string) {
	s.render(w, r, status, "code", pageData{
		Title:     title,
		CSRF:      v.csrf,
		User:      v.user,
		Error:     errMsg,
		ExpiresAt: timeOfDay(st.expiresAt),
		Notice:    fmt.Sprintf(msgShownOnce, timeOfDay(st.expiresAt)),
	})
}

// linkConfirm checks the code with the session's binding and parks the recovery codes for the
// one page that shows them. Wrong codes are counted per user in the store (see
// enroll.MaxConfirmTries), not here.
func (s *Server) linkConfirm(w http.ResponseWriter, r *http.Request) {
	v, ok := s.checkPost(w, r)
	if !ok {
		return
	}
	if v.user == "" {
		seeOther(w, r, "/")
		return
	}
	ctx := actorContext(r)
	code := r.PostForm.Get("code")
	if len(code) > 64 {
		code = code[:64] // too long to be a code anyway; keep what Confirm sees small
	}
	var binding enroll.Binding
	s.sessions.update(v.id, s.now(), func(ss *session) {
		if !ss.replacing { // a replacement's binding confirms at /replace/confirm only
			binding = ss.binding
		}
	})
	// Without a binding the store refuses (ErrStartedElsewhere): it is the one place that decides.
	codes, err := s.Linker.Confirm(ctx, v.user, binding, code)
	switch {
	case errors.Is(err, enroll.ErrVoided), errors.Is(err, enroll.ErrStartedElsewhere),
		errors.Is(err, enroll.ErrExpired), errors.Is(err, enroll.ErrNoPending):
		// This session's binding is of no use any more.
		s.sessions.update(v.id, s.now(), func(ss *session) {
			if !ss.replacing {
				ss.binding = ""
			}
		})
		v.bound = false
	}
	switch {
	case err == nil:
		if !s.parkCodes(v, codes, codesLink) {
			seeOther(w, r, "/")
			return
		}
		s.log().InfoContext(ctx, "portal device linked", "user", v.user)
		seeOther(w, r, "/link/done")
	case errors.Is(err, enroll.ErrBadCode):
		s.log().WarnContext(ctx, "portal wrong confirmation code", "user", v.user)
		msg := badCodeMessage(err)
		st, stErr := s.linkState(r, v.user)
		if stErr != nil || st.state != "pending" {
			// Something else happened to the link meanwhile (a concurrent attempt voided it,
			// say): say what this code did, and show the link's state now.
			s.account(w, r, v, http.StatusUnprocessableEntity, msg)
			return
		}
		s.codePage(w, r, v, st, http.StatusUnprocessableEntity, "Enter a code from the app", msg)
	case errors.Is(err, enroll.ErrVoided):
		s.log().WarnContext(ctx, "portal link cancelled after too many wrong codes", "user", v.user)
		s.account(w, r, v, http.StatusConflict, msgVoided)
	case errors.Is(err, enroll.ErrStartedElsewhere):
		s.account(w, r, v, http.StatusConflict, "")
	case errors.Is(err, enroll.ErrExpired):
		s.account(w, r, v, http.StatusConflict, "The link expired before it was confirmed. You can start again.")
	case errors.Is(err, enroll.ErrNoPending):
		s.account(w, r, v, http.StatusConflict, "")
	default:
		s.log().ErrorContext(ctx, "portal: confirming a link", "user", v.user, "err", err)
		s.serverError(w, r)
	}
}

// badCodeMessage is what a wrong confirmation code gets: the clock advice when the code is what
// the new secret gives a few minutes off (the phone's clock is wrong), and for a replacement a
// hint when the code came from the phone linked now; a code whose window was used already says
// so; otherwise msgBadCode.
func badCodeMessage(err error) string {
	if ce, ok := errors.AsType[*enroll.ClockError](err); ok {
		return ce.Error()
	}
	if errors.Is(err, enroll.ErrCurrentDeviceCode) {
		return msgCurrentDevice
	}
	if errors.Is(err, enroll.ErrUsedCode) {
		return msgUsedCode
	}
	return msgBadCode
}

// linkDone shows the recovery codes once.
func (s *Server) linkDone(w http.ResponseWriter, r *http.Request) {
	v, ok := s.signedIn(w, r)
	if !ok {
		return
	}
	s.showCodes(w, r, v, codesLink, "done", "Your device is linked")
}

// showCodes renders page with the recovery codes parked for it (codesFor), once: without them
// (a reload, the back button) it sends the browser to the account page.
func (s *Server) showCodes(w http.ResponseWriter, r *http.Request, v view, codesFor, page, title string) {
	var codes []string
	var note string
	s.sessions.update(v.id, s.now(), func(ss *session) {
		if ss.codesFor == codesFor {
			codes, note = ss.codes, ss.codesNote
			ss.codes, ss.codesFor, ss.codesNote = nil, "", ""
		}
	})
	if codes == nil {
		seeOther(w, r, "/")
		return
	}
	s.render(w, r, http.StatusOK, page, pageData{
		Title:        title,
		CSRF:         v.csrf,
		User:         v.user,
		Notice:       note,
		Codes:        codes,
		Download:     s.codesDownload(v.user, codes),
		DownloadName: "recovery-codes-" + v.user + ".txt",
		MadeOn:       day(s.now()),
	})
}

// The pages that show a new set of recovery codes, once (session.codesFor).
const (
	codesLink    = "link"    // /link/done, after a first link
	codesReplace = "replace" // /replace/done, after a replacement
	codesRenew   = "renew"   // /recovery/done, new codes alone
)

// parkCodes keeps new recovery codes in the session for the one page (codesFor) that shows
// them, and drops the link and binding they came from; false when the session has ended.
func (s *Server) parkCodes(v view, codes []string, codesFor string) bool {
	codes = append([]string(nil), codes...)
	return s.sessions.update(v.id, s.now(), func(ss *session) {
		ss.codes, ss.codesFor, ss.codesNote = codes, codesFor, ""
		ss.link, ss.binding, ss.replacing = nil, "", false
	})
}

// codesDownload returns the recovery codes as a data: URI for a download link: the browser saves
// it from the page itself, so the codes need not stay on the server for a second request.
func (s *Server) codesDownload(user string, codes []string) template.URL {
	var b strings.Builder
	fmt.Fprintf(&b, "Recovery codes for %s at %s\r\n", user, s.issuer())
	fmt.Fprintf(&b, "Made on %s.\r\n\r\n", day(s.now()))
	b.WriteString("Each code lets you log in once instead of a code from the app,\r\n")
	b.WriteString("for example if you lose your phone. Keep them somewhere safe.\r\n\r\n")
	for _, c := range codes {
		b.WriteString(c + "\r\n")
	}
	return template.URL("data:text/plain;charset=utf-8;base64," + base64.StdEncoding.EncodeToString([]byte(b.String())))
}

// styleSheet serves the embedded CSS.
func (s *Server) styleSheet(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Write(s.pages.css)
}
