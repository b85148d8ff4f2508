package submission

import (
	"context"
	"errors"
	"io"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
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

func (s *subSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *subSession) Auth(mech string) (sasl.Server, error) {
	if err := s.count(); err != nil {
		return nil, err
	}
	if !s.tls() {
		return nil, smtpserver.ErrAuthNeedsTLS
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if identity != "" && identity != username {
			return smtpserver.ErrAuthFailed
		}
		for i := range s.srv.cfg.Users {
			u := &s.srv.cfg.Users[i]
			if u.Name != username {
				continue
			}
			if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) != nil {
				break
			}
			s.user = u
			s.srv.log.Info("submission login", "user", u.Name, "remote", s.conn.Conn().RemoteAddr().String())
			return nil
		}
		s.srv.log.Warn("submission login failed", "user", username, "remote", s.conn.Conn().RemoteAddr().String())
		return smtpserver.ErrAuthFailed
	}), nil
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
	// Security invariant 5: a submitter may only send as its own agency.
	if !strings.EqualFold(from, s.user.Address) {
		return smtpserver.Reply(553, smtp.EnhancedCode{5, 7, 1},
			"You may send only as "+s.user.Address+", your own mailbox at "+s.srv.cfg.Agency)
	}
	s.from = from
	return nil
}

func (s *subSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := s.count(); err != nil {
		return err
	}
	if s.from == "" {
		return smtpserver.Reply(503, smtp.EnhancedCode{5, 5, 1}, "MAIL FROM first")
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
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *subSession) Data(r io.Reader) error {
	if err := s.count(); err != nil {
		io.Copy(io.Discard, r)
		return err
	}
	if s.triage {
		return s.srv.triageReply(context.Background(), s.user, r)
	}
	sp, err := envelope.NewSpool("", s.srv.cfg.Limits.MessageBytes)
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
	return s.srv.intake(context.Background(), submission{user: s.user, from: s.from, rcpts: s.rcpts, msg: sp})
}

func (s *subSession) Reset() {
	s.from, s.rcpts, s.triage = "", nil, false
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
