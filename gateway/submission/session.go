package submission

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/admission"
	"github.com/conduit-gateway/conduit/gateway/authlimit"
	"github.com/conduit-gateway/conduit/gateway/smtpserver"
)

// subSession is one SMTP submission session of a member of staff.
type subSession struct {
	srv   *Server
	conn  *smtp.Conn
	user  *config.User
	from  string
	rcpts []string
	cmds  int
	// triage: the message is a reply to the triage address (triage.go).
	triage bool
	// mail: MAIL FROM was accepted (from may be empty: a bounce).
	mail bool
	// bounce: the relay account sends its mail server's bounce.
	bounce bool
}

func (s *subSession) tls() bool {
	_, ok := s.conn.TLSConnectionState()
	return ok
}

func (s *subSession) count() error {
	s.cmds++
	if s.cmds > s.srv.cfg.Limits.Commands {
		return smtpserver.ErrTooMany
	}
	return nil
}

// AuthMechanisms offers PLAIN and LOGIN (RFC 4954; LOGIN for the clients
// and MTAs that use nothing else), and EXTERNAL when the client presented
// a verified certificate that a relay account names.
func (s *subSession) AuthMechanisms() []string {
	m := []string{sasl.Plain, smtpserver.Login}
	if s.certUser() != nil {
		m = append(m, sasl.External)
	}
	return m
}

func (s *subSession) Auth(mech string) (sasl.Server, error) {
	if err := s.count(); err != nil {
		return nil, err
	}
	if !s.tls() {
		return nil, smtpserver.ErrAuthNeedsTLS
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				return smtpserver.ErrAuthFailed
			}
			return s.login(username, password)
		}), nil
	case smtpserver.Login:
		return smtpserver.LoginServer(s.login), nil
	case sasl.External:
		return sasl.NewExternalServer(func(identity string) error {
			u := s.certUser()
			if u == nil || (identity != "" && identity != u.Name) {
				s.srv.log.Warn("submission login by certificate failed", "identity", identity, "remote", s.conn.Conn().RemoteAddr().String())
				return smtpserver.ErrAuthFailed
			}
			s.user = u
			admission.Promote(s.conn.Conn())
			s.srv.log.Info("submission login", "user", u.Name, "by", "client certificate", "remote", s.conn.Conn().RemoteAddr().String())
			return nil
		}), nil
	}
	return nil, smtpserver.Reply(504, smtp.EnhancedCode{5, 5, 4}, "Unrecognised authentication mechanism "+mech+"; use PLAIN or LOGIN")
}

// login checks an account's password, throttled (Server.login).
func (s *subSession) login(username, password string) error {
	return s.srv.login(s.conn, "", username, password, func(u *config.User) { s.user = u })
}

// certUser is the relay account the client's certificate names (its CN,
// verified against the agencies' CA by the handshake), or nil.
func (s *subSession) certUser() *config.User {
	st, ok := s.conn.TLSConnectionState()
	if !ok || len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return nil
	}
	cn := st.PeerCertificates[0].Subject.CommonName
	for i := range s.srv.cfg.Users {
		if u := &s.srv.cfg.Users[i]; u.Relay && u.ClientCert != "" && u.ClientCert == cn {
			return u
		}
	}
	return nil
}

// login checks a password the way a mail server under attack must
// (Dovecot's auth_penalty, mox's lockouts): a locked account or address
// is refused without checking the password; a failure is answered after a
// penalty that grows with the address's failures, counted, audited, and
// ends the connection after auth.session-failures; an unknown account
// costs the same bcrypt as a known one.
func (srv *Server) login(c *smtp.Conn, identity, username, password string, ok func(*config.User)) error {
	ctx := context.Background()
	remote := c.Conn().RemoteAddr().String()
	var addr netip.Addr
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		addr = ap.Addr()
	}
	wait, err := srv.throttle.Check(ctx, addr, username)
	var locked *authlimit.LockedError
	if errors.As(err, &locked) {
		srv.metrics.AuthFailure("locked")
		srv.log.Warn("submission login refused: locked out", "scope", locked.Scope, "remote", remote)
		admission.Drop(c.Conn())
		// RFC 4954 section 6: 454 4.7.0, a temporary authentication
		// failure: the account is not confirmed to exist or not.
		return smtpserver.Reply(454, smtp.EnhancedCode{4, 7, 0}, fmt.Sprintf(
			"Too many failed logins (%s locked until %s UTC); try again later or ask your administrator (conduit user unlock)",
			locked.Scope, locked.Until.UTC().Format("15:04")))
	}
	if err != nil {
		srv.log.Error("login throttle unavailable", "err", err)
		return smtpserver.Reply(454, smtp.EnhancedCode{4, 7, 0}, "Temporary authentication failure; try again shortly")
	}
	i := -1
	if identity == "" || identity == username {
		i = srv.accounts.Verify(username, password)
	}
	if i >= 0 {
		u := &srv.cfg.Users[i]
		srv.throttle.Success(addr, username)
		// Staff who logged in hold a kept slot, free of the pre-auth
		// deadlines.
		admission.Promote(c.Conn())
		ok(u)
		srv.log.Info("submission login", "user", u.Name, "remote", remote)
		return nil
	}
	// The penalty is served before the answer, so a guesser waits
	// whether it guessed in one session or in many.
	authlimit.Wait(ctx, wait)
	lock, lerr := srv.throttle.Failure(ctx, addr, username)
	if lerr != nil {
		srv.log.Error("login throttle unavailable", "err", lerr)
	}
	// Never the name as typed when it is no account: people type
	// passwords into the name field.
	who := "an unknown account"
	if srv.accounts.Known(username) {
		who = "account " + username
	}
	srv.metrics.AuthFailure("failed")
	events := []audit.Event{{Kind: audit.AuthFailed, Actor: addr.String(), Detail: "failed login for " + who}}
	if lock != nil {
		srv.metrics.AuthFailure("lockout")
		srv.log.Error("admin alert: submission logins locked out", "scope", lock.Scope, "until", lock.Until.UTC().Format(time.RFC3339), "remote", remote, "for", who)
		events = append(events, audit.Event{Kind: audit.AuthLocked, Actor: addr.String(),
			Detail: fmt.Sprintf("%s locked until %s after failed logins (%s)", lock.Scope, lock.Until.UTC().Format(time.RFC3339), who)})
	}
	srv.audit.Append(ctx, events...)
	srv.log.Warn("submission login failed", "for", who, "remote", remote)
	if admission.Fail(c.Conn()) >= srv.throttle.Config().SessionLimit || lock != nil {
		admission.Drop(c.Conn())
		return smtpserver.Reply(535, smtp.EnhancedCode{5, 7, 8}, "Authentication failed: wrong user name or password; too many failures, closing the connection")
	}
	return smtpserver.ErrAuthFailed
}

func (s *subSession) Mail(from string, _ *smtp.MailOptions) error {
	if err := s.count(); err != nil {
		return err
	}
	if !s.tls() {
		return smtpserver.ErrNeedTLS
	}
	if s.user == nil {
		return smtpserver.ErrAuthFirst
	}
	switch {
	case s.user.Relay && from == "":
		// The agency's mail server's own bounce (RFC 5321 section
		// 4.5.5: a null reverse path): delivered to the agency's
		// mailboxes it is addressed to.
		s.bounce = true
	case s.user.Relay:
		// The agency's mail server sends for all its staff: each
		// sender must be a mailbox of this agency in the directory
		// (security invariant 5).
		if !s.srv.self.HasMailbox(from) {
			return smtpserver.Reply(553, smtp.EnhancedCode{5, 7, 1}, from+" is not a mailbox of "+s.srv.cfg.Agency+
				" in the agency directory: the mail server may send only for the agency's own mailboxes; ask your administrator to add it, or send from one that is there")
		}
	case !strings.EqualFold(from, s.user.Address):
		// Security invariant 5: a submitter may only send as its own agency.
		return smtpserver.Reply(553, smtp.EnhancedCode{5, 7, 1},
			"You may send only as "+s.user.Address+", your own mailbox at "+s.srv.cfg.Agency)
	}
	s.from, s.mail = from, true
	return nil
}

func (s *subSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := s.count(); err != nil {
		return err
	}
	if !s.mail {
		return smtpserver.Reply(503, smtp.EnhancedCode{5, 5, 1}, "MAIL FROM first")
	}
	if s.bounce {
		if !s.srv.self.HasMailbox(to) {
			return smtpserver.Reply(550, smtp.EnhancedCode{5, 1, 1}, "A bounce from your mail server is delivered here only to a mailbox of "+s.srv.cfg.Agency+"; "+to+" is not one")
		}
		s.rcpts = append(s.rcpts, to)
		return nil
	}
	if s.srv.isTriageAddress(to) || s.triage {
		if !s.srv.isTriageAddress(to) || len(s.rcpts) > 0 {
			return smtpserver.Reply(550, smtp.EnhancedCode{5, 5, 3}, "A triage reply goes to "+s.srv.triageAddress()+" alone; send anything else separately")
		}
		s.triage = true
		s.rcpts = append(s.rcpts, to)
		return nil
	}
	a := s.srv.agencyOfMailbox(to)
	if a == nil {
		// Security invariant 5: a recipient not in the directory is refused.
		return smtpserver.Reply(550, smtp.EnhancedCode{5, 1, 1}, to+" is not a mailbox in the agency directory; check the address or ask your administrator")
	}
	if a.ID == s.srv.cfg.Agency {
		return smtpserver.Reply(550, smtp.EnhancedCode{5, 1, 6}, to+" is in your own agency; use your internal mail")
	}
	if slices.ContainsFunc(s.rcpts, func(r string) bool { return strings.EqualFold(r, to) }) {
		return smtpserver.ErrDuplicateRcpt(to)
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *subSession) Data(r io.Reader) error {
	if err := s.count(); err != nil {
		io.Copy(io.Discard, r)
		return err
	}
	if s.triage {
		ctx, done := s.srv.handlers.Begin()
		defer done()
		return s.srv.triageReply(ctx, s.user, r)
	}
	if s.bounce {
		ctx, done := s.srv.handlers.Begin()
		defer done()
		return s.srv.deliverBounce(ctx, s.user, s.rcpts, r)
	}
	sp, err := envelope.NewSpool("", s.srv.maxMessage)
	if err != nil {
		io.Copy(io.Discard, r)
		return smtpserver.ErrTempStore
	}
	defer sp.Close()
	if _, err := io.Copy(sp, &smtpserver.StrictCRLF{R: r}); err != nil {
		io.Copy(io.Discard, r) // go-smtp needs the data consumed
		if errors.Is(err, envelope.ErrTooLarge) {
			return smtpserver.ErrTooBig
		}
		return smtpserver.DataErr(err)
	}
	if err := sp.Finish(); err != nil {
		return smtpserver.ErrTempStore
	}
	ctx, done := s.srv.handlers.Begin()
	defer done()
	return s.srv.intake(ctx, submission{user: s.user, from: s.from, rcpts: s.rcpts, msg: sp})
}

func (s *subSession) Reset() {
	s.from, s.rcpts, s.triage, s.mail, s.bounce = "", nil, false, false, false
}

func (s *subSession) Logout() error { return nil }

// agencyOfMailbox returns the directory agency that holds a mailbox.
func (srv *Server) agencyOfMailbox(addr string) *config.Agency {
	for _, a := range srv.cfg.Directory.Agencies {
		if a.HasMailbox(addr) {
			return a
		}
	}
	return nil
}
