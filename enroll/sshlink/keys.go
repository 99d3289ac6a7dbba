package sshlink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
)

// SSH keys in the menu (Server.KeysEnabled): a user who proved both factors lists their keys,
// adds one by pasting its line, or revokes one by its number or fingerprint. The changes go
// through KeyManager (enroll.Service, which checks the key and writes the audit log). A key that
// cannot be added is explained and the keys menu is shown again.

// Prompts and messages of the keys menu.
const (
	keysMenuText = `  a) Add a key
  r) Revoke a key
  b) Back to the menu
  q) Quit
`
	promptKeys       = "Choose a, r, b or q: "
	msgBadKeysChoice = "Please type a, r, b or q."
	promptPasteKey   = "Public key: "
	promptLabel      = "Label (Enter for %q): "
	promptAutomation = "Is it a key for scripts (automation: no code asked, only from the networks you give, until it expires)? [y/N] "
	promptFrom       = "Networks it may log in from (addresses or CIDR networks, comma-separated): "
	promptDays       = "Expires in how many days (Enter for the longest allowed): "
	promptCommand    = "Only this command (Enter for any command): "
	promptRevoke     = "Number or fingerprint of the key to revoke (Enter to go back): "
	promptRevokeSure = "Revoke %s? It stops logging in at once. [y/N] "
)

// Bounds of what the keys menu reads.
const (
	// maxKeyLine bounds a pasted public key line (enroll refuses longer ones).
	maxKeyLine = 16 << 10
	// maxKeyDays bounds an expiry in days.
	maxKeyDays = 3650
)

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

// keys runs the keys menu until the user goes back (done false) or quits or the session ends
// (done true, with the exit status).
func (ss *session) keys(ctx context.Context, km KeyManager, in *lineInput, out, errOut io.Writer) (status int, done bool) {
	for {
		list, err := km.Keys(ctx, ss.user)
		if err != nil {
			return ss.fail(ctx, err, in, errOut), true
		}
		ss.showKeys(ctx, out, list)
		fmt.Fprint(out, keysMenuText)
		fmt.Fprintln(out)
		for again := true; again; {
			answer, err := ss.ask(in, out, promptKeys)
			if err != nil {
				return ss.fail(ctx, err, in, errOut), true
			}
			again = false
			switch strings.ToLower(strings.TrimSpace(answer)) {
			case "a":
				err = ss.addKey(ctx, km, in, out)
			case "r":
				err = ss.revokeKey(ctx, km, list, in, out)
			case "b":
				return 0, false
			case "q":
				ss.log.Info("sshlink: menu quit")
				fmt.Fprintln(out, "Bye.")
				return 0, true
			default:
				fmt.Fprintln(out, msgBadKeysChoice)
				again = true
			}
			if err != nil {
				return ss.fail(ctx, err, in, errOut), true
			}
		}
	}
}

// showKeys lists the user's keys and the devices remembered for them.
func (ss *session) showKeys(ctx context.Context, out io.Writer, list []store.Key) {
	now := ss.srv.now()
	fmt.Fprintln(out)
	if len(list) == 0 {
		fmt.Fprintln(out, "You have no SSH keys registered here. A registered key replaces your password when you")
		fmt.Fprintln(out, "log in with ssh; the code from your app is still asked for.")
		fmt.Fprintln(out)
		return
	}
	fmt.Fprintf(out, "Your SSH keys (%d):\n", len(list))
	labels := make(map[string]string, len(list))
	for i, k := range list {
		kind := "personal"
		if k.Automation {
			kind = "automation"
		}
		typ, _, _ := strings.Cut(k.PublicKey, " ")
		fmt.Fprintf(out, "  %d) %s (%s, %s)\n", i+1, cmpOr(k.Label, "no label"), typ, kind)
		fmt.Fprintf(out, "     %s\n", k.Fingerprint)
		from := "anywhere"
		if len(k.From) > 0 {
			from = strings.Join(k.From, ", ")
		}
		expires := "never expires"
		switch {
		case k.Expires.IsZero():
		case k.Expires.After(now):
			expires = "expires " + formatTime(k.Expires)
		default:
			expires = "expired " + formatTime(k.Expires)
		}
		used := "never used"
		if !k.LastUsed.IsZero() {
			used = "last used " + formatTime(k.LastUsed)
		}
		line := fmt.Sprintf("from %s, %s, %s", from, expires, used)
		if k.Command != "" {
			line += fmt.Sprintf(", only runs %q", k.Command)
		}
		fmt.Fprintf(out, "     %s\n", line)
		labels[k.Fingerprint] = cmpOr(k.Label, k.Fingerprint)
	}
	if st, ok := ss.srv.Linker.(stater); ok {
		if u, err := st.State(ctx, ss.user); err == nil {
			var rows []string
			for _, m := range u.Remembered {
				if m.Until.After(now) {
					rows = append(rows, fmt.Sprintf("  %s from %s, until %s", cmpOr(labels[m.Fingerprint], m.Fingerprint), m.Network, formatTime(m.Until)))
				}
			}
			if len(rows) > 0 {
				fmt.Fprintln(out, "Remembered devices (no code asked from these networks until then):")
				for _, r := range rows {
					fmt.Fprintln(out, r)
				}
			}
		}
	}
	fmt.Fprintln(out)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// addKey asks for a key line and what it may do, and registers it. A key that cannot be added
// is explained (nil error); the error is for what ends the session.
func (ss *session) addKey(ctx context.Context, km KeyManager, in *lineInput, out io.Writer) error {
	fmt.Fprintln(out, "Paste your public key: one line, the contents of a file such as ~/.ssh/id_ed25519.pub")
	fmt.Fprintln(out, "(never the private key). An empty line goes back.")
	fmt.Fprint(out, promptPasteKey)
	ss.setAsking(true)
	line, err := in.readLineMax(maxKeyLine)
	if err != nil {
		fmt.Fprintln(out)
		if errors.Is(err, io.EOF) {
			return errNoAnswer
		}
		return err
	}
	line = strings.TrimSpace(line)
	if line == "" {
		fmt.Fprintln(out, msgNothingChange)
		return nil
	}
	// Checked before the other questions, so that a mistyped key is told at once.
	_, comment, err := enroll.ParsePublicKey(line)
	if err != nil {
		fmt.Fprintln(out, "The key was not added: "+enroll.KeyErrorText(err))
		return nil
	}
	nk := enroll.NewKey{PublicKey: line}
	labelPrompt := "Label (for example \"work laptop\"): "
	if comment != "" {
		labelPrompt = fmt.Sprintf(promptLabel, shorten(comment, 40))
	}
	if nk.Label, err = ss.ask(in, out, labelPrompt); err != nil {
		return err
	}
	nk.Label = strings.TrimSpace(nk.Label)
	if nk.Automation, err = ss.yesNo(in, out, promptAutomation); err != nil {
		return err
	}
	if nk.Automation {
		from, err := ss.ask(in, out, promptFrom)
		if err != nil {
			return err
		}
		nk.From = strings.FieldsFunc(from, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
		for {
			days, err := ss.ask(in, out, promptDays)
			if err != nil {
				return err
			}
			days = strings.TrimSpace(days)
			if days == "" {
				break
			}
			n, err := strconv.Atoi(days)
			if err == nil && n >= 1 && n <= maxKeyDays {
				nk.Expires = ss.srv.now().Add(time.Duration(n) * 24 * time.Hour)
				break
			}
			fmt.Fprintf(out, "Please type a whole number from 1 to %d, or nothing.\n", maxKeyDays)
		}
		if nk.Command, err = ss.ask(in, out, promptCommand); err != nil {
			return err
		}
		nk.Command = strings.TrimSpace(nk.Command)
	}
	if err := ss.stopReason(); err != nil {
		return err // a reset came in while the questions waited
	}
	k, err := km.AddKey(ctx, ss.user, nk, enroll.AddedBySelf)
	switch {
	case err == nil:
	case errors.Is(err, enroll.ErrBadKey), errors.Is(err, enroll.ErrKeyExists), errors.Is(err, enroll.ErrTooManyKeys):
		ss.log.Info("sshlink: key refused", "reason", err.Error())
		fmt.Fprintln(out, "The key was not added: "+enroll.KeyErrorText(err))
		return nil
	default:
		return err
	}
	ss.log.Info("sshlink: key added", "fingerprint", k.Fingerprint, "automation", k.Automation)
	fmt.Fprintf(out, "SSH key %s added.", keyName(k))
	if k.Automation {
		fmt.Fprintf(out, " It logs in without a code from %s until %s.\n", strings.Join(k.From, ", "), formatTime(k.Expires))
	} else {
		fmt.Fprintln(out, " It replaces your password when you log in with ssh; the code from your app is still asked for.")
	}
	return nil
}

// revokeKey asks which of list to revoke, by number or fingerprint, and revokes it after a
// confirmation.
func (ss *session) revokeKey(ctx context.Context, km KeyManager, list []store.Key, in *lineInput, out io.Writer) error {
	if len(list) == 0 {
		fmt.Fprintln(out, "You have no SSH keys to revoke.")
		return nil
	}
	var k store.Key
	for {
		answer, err := ss.ask(in, out, promptRevoke)
		if err != nil {
			return err
		}
		answer = strings.TrimSpace(answer)
		if answer == "" {
			fmt.Fprintln(out, msgNothingChange)
			return nil
		}
		if found, ok := pickKey(list, answer); ok {
			k = found
			break
		}
		fmt.Fprintf(out, "No key %s here: type its number (1 to %d) or its fingerprint (SHA256:...).\n", strconv.Quote(shorten(answer, 64)), len(list))
	}
	yes, err := ss.yesNo(in, out, fmt.Sprintf(promptRevokeSure, keyName(k)))
	if err != nil {
		return err
	}
	if !yes {
		fmt.Fprintln(out, msgNothingChange)
		return nil
	}
	if err := ss.stopReason(); err != nil {
		return err
	}
	gone, ended, err := km.RevokeKey(ctx, ss.user, k.Fingerprint)
	switch {
	case err == nil:
	case errors.Is(err, enroll.ErrNoKey):
		fmt.Fprintln(out, "That key is not registered any more: it may have been revoked elsewhere.")
		return nil
	default:
		return err
	}
	ss.log.Info("sshlink: key revoked", "fingerprint", gone.Fingerprint, "sessions_ended", ended)
	fmt.Fprintf(out, "SSH key %s revoked: it no longer logs in.", keyName(gone))
	switch ended {
	case 0:
		fmt.Fprintln(out, " No live session had logged in with it.")
	case 1:
		fmt.Fprintln(out, " 1 live session that had logged in with it was ended.")
	default:
		fmt.Fprintf(out, " %d live sessions that had logged in with it were ended.\n", ended)
	}
	return nil
}

// pickKey finds the key answer names: its number in list, or its fingerprint (with or without
// "SHA256:").
func pickKey(list []store.Key, answer string) (store.Key, bool) {
	if n, err := strconv.Atoi(answer); err == nil {
		if n >= 1 && n <= len(list) {
			return list[n-1], true
		}
		return store.Key{}, false
	}
	fp := answer
	if !strings.HasPrefix(fp, "SHA256:") {
		fp = "SHA256:" + fp
	}
	if i := store.FindKey(list, fp); i >= 0 {
		return list[i], true
	}
	return store.Key{}, false
}

// keyName names a key in a message: its label and fingerprint.
func keyName(k store.Key) string {
	if k.Label != "" {
		return fmt.Sprintf("%q (%s)", k.Label, k.Fingerprint)
	}
	return k.Fingerprint
}

// shorten bounds what the user typed when it is said back.
func shorten(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
