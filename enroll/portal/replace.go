package portal

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"gatekeeper/enroll"
)

// The credential changes of a user whose device is active: replacing the phone, and new recovery
// codes. Both rest on a sign-in with both factors (session.twoFactor): a session signed in with
// the password alone, which may link a first device, never gets here. Both end the user's other
// portal sessions when they are done, so that a session someone else holds (a shared computer,
// a stolen cookie) does not outlive the change; the replacement may end the SSH sessions too.
//
// Replacing works like linking: an intro page, a POST that makes the new secret, the QR page
// that shows it once (the session id is renewed after it, as for linking), a code from the new
// app to confirm, and the new recovery codes shown once. Until the confirmation the old phone
// keeps working (package enroll keeps both).

// Messages of the credential changes.
const (
	msgNeedBothFactors  = "To replace your phone or get new recovery codes, sign out and sign in again with your password and a code from your app (or a recovery code)."
	msgReplaceVoided    = "Too many wrong codes: the replacement was cancelled and its QR code no longer works. Your old phone still works. Remove the new entry from the app on the new phone, then start again."
	msgReplaceExpired   = "The replacement expired before it was confirmed. Your old phone still works; you can start again."
	msgReplaceGone      = "This replacement cannot be finished here any more (it was finished, cancelled or started again elsewhere). Your account page shows which phone works now."
	msgCurrentDevice    = "That code is from the phone linked now, not from the new one. Type the code the app on the new phone shows."
	msgReplaceCancelled = "The replacement was cancelled. Your current phone still works. Remove the new entry from the app on the new phone, if you added one."
	msgReplacePending   = "A replacement of your phone was started in another browser or session and waits for a code there. Finish it there, or start again here once it expires."
	msgReplaceShown     = "For your security the new QR code is shown only once. If you scanned it, enter a code from the new phone below; if not, wait until it expires at %s and start again. Until then your old phone keeps working."
)

// mayChange returns the session of a user who may change credentials now: signed in with both
// factors, with an active device, and a portal that can make the change. Otherwise it has
// already answered: the start page, or the account page saying why.
func (s *Server) mayChange(w http.ResponseWriter, r *http.Request, v view) bool {
	if s.Credentials == nil {
		seeOther(w, r, "/")
		return false
	}
	st, err := s.linkState(r, v.user)
	if err != nil {
		s.log().ErrorContext(r.Context(), "portal: reading link state", "user", v.user, "err", err)
		s.serverError(w, r)
		return false
	}
	if st.state != "active" {
		seeOther(w, r, "/")
		return false
	}
	if !v.twoFactor {
		s.log().InfoContext(r.Context(), "portal credential change refused: signed in without the second factor",
			"user", v.user, "path", r.URL.Path)
		s.account(w, r, v, http.StatusForbidden, msgNeedBothFactors)
		return false
	}
	return true
}

// endOtherSessions ends the user's portal sessions but v, and with the box ticked also their SSH
// sessions, after a credential change; it returns what the done page says about it.
func (s *Server) endOtherSessions(r *http.Request, v view, endSSH bool) string {
	portal := s.sessions.endUserExcept(v.user, v.id, s.now())
	ssh := 0
	if endSSH && s.EndSSH != nil {
		ssh = s.EndSSH(v.user)
	}
	s.log().InfoContext(r.Context(), "portal: other sessions ended after a credential change",
		"user", v.user, "portal_sessions", portal, "ssh_sessions", ssh, "end_ssh", endSSH)
	var notes []string
	switch portal {
	case 0:
	case 1:
		notes = append(notes, "You were signed out of this page in 1 other browser.")
	default:
		notes = append(notes, fmt.Sprintf("You were signed out of this page in %d other browsers.", portal))
	}
	if endSSH {
		switch ssh {
		case 0:
			notes = append(notes, "You had no open SSH sessions to end.")
		case 1:
			notes = append(notes, "1 open SSH session ended.")
		default:
			notes = append(notes, fmt.Sprintf("%d open SSH sessions ended.", ssh))
		}
	}
	return strings.Join(notes, " ")
}

// replaceIntro explains the replacement before the new secret is made.
func (s *Server) replaceIntro(w http.ResponseWriter, r *http.Request) {
	v, ok := s.signedIn(w, r)
	if !ok || !s.mayChange(w, r, v) {
		return
	}
	if v.replacing && s.now().Before(v.replaceUntil) {
		// This session has a replacement waiting for its code: that page, not a second one.
		seeOther(w, r, "/replace/qr")
		return
	}
	s.render(w, r, http.StatusOK, "replace", pageData{
		Title:      "Replace my phone",
		CSRF:       v.csrf,
		User:       v.user,
		ConfirmMin: int(s.confirmWithin().Round(time.Minute) / time.Minute),
		CanEndSSH:  s.EndSSH != nil,
	})
}

// replaceStart makes the new secret and parks it in the session for the one page that shows it,
// with the "also end my open SSH sessions" box for the confirmation.
func (s *Server) replaceStart(w http.ResponseWriter, r *http.Request) {
	v, ok := s.checkPost(w, r)
	if !ok {
		return
	}
	if v.user == "" {
		seeOther(w, r, "/")
		return
	}
	if !s.mayChange(w, r, v) {
		return
	}
	ctx := actorContext(r)
	log := s.log().With("user", v.user, "remote", remoteAddr(r).String())
	endSSH := r.PostForm.Get("endssh") == "1" && s.EndSSH != nil
	link, binding, err := s.Credentials.BeginReplace(ctx, v.user)
	switch {
	case errors.Is(err, enroll.ErrNotLinked):
		seeOther(w, r, "/") // reset by an admin meanwhile: the account page says what now
		return
	case errors.Is(err, enroll.ErrPending):
		log.InfoContext(ctx, "portal replacement refused: another one is pending", "err", err)
		s.account(w, r, v, http.StatusConflict, msgReplacePending)
		return
	case err != nil:
		log.ErrorContext(ctx, "portal: starting a replacement", "err", err)
		s.serverError(w, r)
		return
	}
	if !s.sessions.update(v.id, s.now(), func(ss *session) {
		ss.link, ss.binding, ss.replacing = &link, binding, true
		ss.endSSH, ss.replaceUntil = endSSH, link.ExpiresAt
	}) {
		seeOther(w, r, "/")
		return
	}
	log.InfoContext(ctx, "portal replacement started", "expires_at", link.ExpiresAt, "end_ssh", endSSH)
	seeOther(w, r, "/replace/qr")
}

// replaceQR shows the new secret once; later requests get the code form.
func (s *Server) replaceQR(w http.ResponseWriter, r *http.Request) {
	v, ok := s.signedIn(w, r)
	if !ok {
		return
	}
	var link *enroll.Link
	s.sessions.update(v.id, s.now(), func(ss *session) {
		if ss.replacing {
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
		d.Title, d.Replacing = "Scan the new QR code with your new phone", true
		d.CSRF, d.User = v.csrf, v.user
		s.log().InfoContext(r.Context(), "portal QR shown", "user", v.user, "replacement", true)
		s.render(w, r, http.StatusOK, "qr", d)
		return
	}
	if !v.replacing || !s.now().Before(v.replaceUntil) {
		seeOther(w, r, "/")
		return
	}
	s.replaceCodePage(w, r, v, http.StatusOK, "The QR code is not shown again", "")
}

// replaceCodePage asks for a code of the new phone once its secret is no longer shown.
func (s *Server) replaceCodePage(w http.ResponseWriter, r *http.Request, v view, status int, title, errMsg string) {
	s.render(w, r, status, "code", pageData{
		Title:     title,
		CSRF:      v.csrf,
		User:      v.user,
		Error:     errMsg,
		Replacing: true,
		ExpiresAt: timeOfDay(v.replaceUntil),
		Notice:    fmt.Sprintf(msgReplaceShown, timeOfDay(v.replaceUntil)),
	})
}

// replaceConfirm checks a code of the new phone with the session's binding. On success the new
// phone is the only one, the recovery codes are new, and the user's other sessions end.
func (s *Server) replaceConfirm(w http.ResponseWriter, r *http.Request) {
	v, ok := s.checkPost(w, r)
	if !ok {
		return
	}
	if v.user == "" {
		seeOther(w, r, "/")
		return
	}
	if !s.mayChange(w, r, v) {
		return
	}
	ctx := actorContext(r)
	code := r.PostForm.Get("code")
	if len(code) > 64 {
		code = code[:64]
	}
	var (
		binding enroll.Binding
		endSSH  bool
	)
	s.sessions.update(v.id, s.now(), func(ss *session) {
		if ss.replacing {
			binding, endSSH = ss.binding, ss.endSSH
		}
	})
	// Without a binding the service refuses (ErrStartedElsewhere): it is the one place that decides.
	codes, err := s.Credentials.ConfirmReplace(ctx, v.user, binding, code)
	if err != nil && !errors.Is(err, enroll.ErrBadCode) {
		// Whatever else happened, this session's replacement is over.
		s.sessions.update(v.id, s.now(), func(ss *session) {
			if ss.replacing {
				ss.binding, ss.replacing, ss.link = "", false, nil
			}
		})
		v.replacing = false
	}
	switch {
	case err == nil:
		note := s.endOtherSessions(r, v, endSSH)
		if !s.parkCodes(v, codes, codesReplace) {
			seeOther(w, r, "/")
			return
		}
		s.sessions.update(v.id, s.now(), func(ss *session) { ss.codesNote, ss.endSSH = note, false })
		s.log().InfoContext(ctx, "portal phone replaced", "user", v.user)
		seeOther(w, r, "/replace/done")
	case errors.Is(err, enroll.ErrBadCode):
		s.log().WarnContext(ctx, "portal wrong code for the new phone", "user", v.user)
		s.replaceCodePage(w, r, v, http.StatusUnprocessableEntity, "Enter a code from the new phone", badCodeMessage(err))
	case errors.Is(err, enroll.ErrVoided):
		s.log().WarnContext(ctx, "portal replacement cancelled after too many wrong codes", "user", v.user)
		s.account(w, r, v, http.StatusConflict, msgReplaceVoided)
	case errors.Is(err, enroll.ErrExpired):
		s.account(w, r, v, http.StatusConflict, msgReplaceExpired)
	case errors.Is(err, enroll.ErrStartedElsewhere), errors.Is(err, enroll.ErrNoPending), errors.Is(err, enroll.ErrNotLinked):
		s.account(w, r, v, http.StatusConflict, msgReplaceGone)
	default:
		s.log().ErrorContext(ctx, "portal: confirming a replacement", "user", v.user, "err", err)
		s.serverError(w, r)
	}
}

// replaceCancel drops this session's replacement: the new secret is forgotten, the phone linked
// now stays the only one.
func (s *Server) replaceCancel(w http.ResponseWriter, r *http.Request) {
	v, ok := s.checkPost(w, r)
	if !ok {
		return
	}
	if v.user == "" {
		seeOther(w, r, "/")
		return
	}
	if !s.mayChange(w, r, v) {
		return
	}
	ctx := actorContext(r)
	var binding enroll.Binding
	s.sessions.update(v.id, s.now(), func(ss *session) {
		if ss.replacing {
			binding = ss.binding
			ss.binding, ss.replacing, ss.link, ss.endSSH = "", false, nil, false
		}
	})
	v.replacing = false // whatever the answer, this session has no replacement any more
	err := s.Credentials.CancelReplace(ctx, v.user, binding)
	switch {
	case err == nil:
		s.log().InfoContext(ctx, "portal replacement cancelled", "user", v.user)
		s.account(w, r, v, http.StatusOK, msgReplaceCancelled)
	case errors.Is(err, enroll.ErrStartedElsewhere), errors.Is(err, enroll.ErrNoPending), errors.Is(err, enroll.ErrNotLinked):
		// Nothing of this session's left to cancel (expired, voided, done elsewhere).
		s.account(w, r, v, http.StatusConflict, msgReplaceGone)
	default:
		s.log().ErrorContext(ctx, "portal: cancelling a replacement", "user", v.user, "err", err)
		s.serverError(w, r)
	}
}

// replaceDone shows the new recovery codes once.
func (s *Server) replaceDone(w http.ResponseWriter, r *http.Request) {
	v, ok := s.signedIn(w, r)
	if !ok {
		return
	}
	s.showCodes(w, r, v, codesReplace, "replaced", "Your new phone is linked")
}

// renewIntro asks before the recovery codes are replaced.
func (s *Server) renewIntro(w http.ResponseWriter, r *http.Request) {
	v, ok := s.signedIn(w, r)
	if !ok || !s.mayChange(w, r, v) {
		return
	}
	st, err := s.linkState(r, v.user)
	if err != nil {
		s.log().ErrorContext(r.Context(), "portal: reading link state", "user", v.user, "err", err)
		s.serverError(w, r)
		return
	}
	s.render(w, r, http.StatusOK, "renew", pageData{
		Title:        "New recovery codes",
		CSRF:         v.csrf,
		User:         v.user,
		RecoveryLeft: st.recoveryLeft,
	})
}

// renewRecovery makes new recovery codes (the old ones void) and parks them for the one page
// that shows them; the user's other portal sessions end.
func (s *Server) renewRecovery(w http.ResponseWriter, r *http.Request) {
	v, ok := s.checkPost(w, r)
	if !ok {
		return
	}
	if v.user == "" {
		seeOther(w, r, "/")
		return
	}
	if !s.mayChange(w, r, v) {
		return
	}
	ctx := actorContext(r)
	codes, err := s.Credentials.RenewRecovery(ctx, v.user)
	if errors.Is(err, enroll.ErrNotLinked) {
		seeOther(w, r, "/")
		return
	}
	if err != nil {
		s.log().ErrorContext(ctx, "portal: new recovery codes", "user", v.user, "err", err)
		s.serverError(w, r)
		return
	}
	note := s.endOtherSessions(r, v, false)
	if !s.parkCodes(v, codes, codesRenew) {
		seeOther(w, r, "/")
		return
	}
	s.sessions.update(v.id, s.now(), func(ss *session) { ss.codesNote = note })
	s.log().InfoContext(ctx, "portal recovery codes renewed", "user", v.user)
	seeOther(w, r, "/recovery/done")
}

// renewDone shows the new recovery codes once.
func (s *Server) renewDone(w http.ResponseWriter, r *http.Request) {
	v, ok := s.signedIn(w, r)
	if !ok {
		return
	}
	s.showCodes(w, r, v, codesRenew, "renewed", "Your new recovery codes")
}
