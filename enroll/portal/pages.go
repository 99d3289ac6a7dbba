package portal

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
	"strconv"
	"time"
)

//go:embed templates/*.html static/*.css
var assets embed.FS

// pageNames are the templates under templates/, each rendered inside layout.html.
var pageNames = []string{"signin", "account", "intro", "qr", "code", "done", "refused", "message",
	"replace", "replaced", "renew", "renewed"}

// pages holds the parsed templates and the static files.
type pages struct {
	tmpl map[string]*template.Template
	css  []byte
}

// mustParsePages parses the embedded templates. They are part of the binary and covered by the
// tests, so a failure is a programming error.
func mustParsePages() *pages {
	p := &pages{tmpl: make(map[string]*template.Template, len(pageNames))}
	for _, name := range pageNames {
		p.tmpl[name] = template.Must(template.New(name).ParseFS(assets,
			"templates/layout.html", "templates/"+name+".html"))
	}
	css, err := assets.ReadFile("static/style.css")
	if err != nil {
		panic(err)
	}
	p.css = css
	return p
}

// pageData is what every template gets. Fields a page does not use stay zero.
type pageData struct {
	Issuer string
	Title  string
	// CSRF is the session's token for the hidden "csrf" field of every form.
	CSRF string
	// User is the signed-in user ("" before sign-in): the header shows it with a sign-out button.
	User string
	// Error is shown in a red box, Notice in a neutral one.
	Error, Notice string

	// sign-in
	Username   string // what was typed, after a failed attempt
	Outside    bool   // the visitor is outside the allowed networks
	AskTicket  bool   // ... and tickets are accepted
	HadTicket  bool   // a ticket was typed in the failed attempt
	ConfirmMin int    // minutes a started link stays valid

	// account and code pages
	State     string // none, pending, expired, active
	ExpiresAt string // when a pending link expires
	LinkedOn  string // when the active link was confirmed
	CanLink   bool   // linking is allowed from here (network or ticket)
	ViaTicket bool   // ... thanks to a ticket
	Bound     bool   // this session started the pending link and may confirm it
	Elsewhere string // why a pending link cannot be confirmed from this session
	// TwoFactor: this session signed in with both factors, so it may change credentials.
	TwoFactor     bool
	RecoveryLeft  int      // unused recovery codes of the active device
	RecoveryTotal int      // how many a new set has
	ShowLog       bool     // the security log is part of the page
	Log           []logRow // its rows, newest first
	LogFailed     bool     // ... which could not be read this time

	// SSH keys (keys.go)
	ShowKeys       bool            // the account page has the SSH keys section
	Keys           []keyRow        // the user's keys, in the order they were added
	KeysFailed     bool            // ... which could not be read this time
	Remembered     []rememberedRow // devices that skip the code for now
	KeyForm        keyForm         // the add form as typed, after an error
	AutomationDays int             // the longest an automation key lives, in days (0: not known)

	// replacing the phone, new recovery codes
	Replacing    bool   // the QR and code pages are for a new phone, confirmed at /replace/confirm
	CanEndSSH    bool   // the replace page offers "also end my open SSH sessions"
	CanChange    bool   // the account page offers the credential changes
	ReplaceUntil string // this session's replacement waits for a code until then

	// QR page
	QR      template.URL // data:image/png;base64,...
	QRSize  int          // its width and height in pixels
	URI     template.URL // otpauth://totp/...
	Secret  string       // base32 in groups of four
	Account string

	// recovery codes page
	Codes        []string
	Download     template.URL // data:text/plain;... of the codes
	DownloadName string
	MadeOn       string // the date the codes were made, for the printout

	// message page
	Paragraphs []string
	BackLink   string
	BackText   string
}

// render executes page into a buffer first, so that a template error becomes a clean 500
// instead of half a page, then writes it with status.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, page string, d pageData) {
	d.Issuer = s.issuer()
	var buf bytes.Buffer
	if err := s.pages.tmpl[page].ExecuteTemplate(&buf, "layout", d); err != nil {
		s.log().ErrorContext(r.Context(), "portal template failed", "page", page, "err", err)
		if page != "message" {
			s.serverError(w, r)
			return
		}
		http.Error(w, "Internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// message renders a simple page: a title, some paragraphs and a link back to the start.
func (s *Server) message(w http.ResponseWriter, r *http.Request, status int, title string, paragraphs ...string) {
	s.render(w, r, status, "message", pageData{
		Title:      title,
		Paragraphs: paragraphs,
		BackLink:   "/",
		BackText:   "Go to the start page",
	})
}

// serverError is the page for every internal failure; the cause is logged by the caller, never
// shown.
func (s *Server) serverError(w http.ResponseWriter, r *http.Request) {
	s.message(w, r, http.StatusInternalServerError, "Something went wrong",
		"Something went wrong on our side. Please try again in a minute.",
		"If it keeps happening, tell your admin.")
}

// timeOfDay formats a time of day for the pages, e.g. "14:05 UTC".
func timeOfDay(t time.Time) string { return t.Local().Format("15:04 MST") }

// day formats a date for the pages, e.g. "23 November 2026".
func day(t time.Time) string { return t.Local().Format("2 January 2006") }
