package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
)

func (g *Gateway) newSmtpServer(be smtp.Backend) *smtp.Server {
	s := smtp.NewServer(be)
	s.Domain = g.hostname()
	s.TLSConfig = g.serverTLS
	s.MaxMessageBytes = g.cfg.Limits.MessageBytes
	s.MaxRecipients = g.cfg.Limits.Recipients
	s.MaxLineLength = 4000
	s.AllowInsecureAuth = false // invariant 4: no AUTH without TLS
	s.ReadTimeout = 5 * time.Minute
	s.WriteTimeout = 5 * time.Minute
	s.ErrorLog = slogPrintf{g.log}
	return s
}

// hostname is the name the gateway gives in its greeting and HELO.
func (g *Gateway) hostname() string {
	if h, _, ok := strings.Cut(g.self.Gateway, ":"); ok && h != "" {
		return h
	}
	return g.cfg.Agency + ".conduit.invalid"
}

type slogPrintf struct {
	l interface{ Warn(string, ...any) }
}

func (s slogPrintf) Printf(format string, v ...any) {
	s.l.Warn("smtp", "detail", fmt.Sprintf(format, v...))
}
func (s slogPrintf) Println(v ...any) { s.l.Warn("smtp", "detail", fmt.Sprintln(v...)) }

func (g *Gateway) newSubmissionServer() *smtp.Server {
	return g.newSmtpServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &subSession{g: g, conn: c}, nil
	}))
}

// subSession is one SMTP submission session of a member of staff.
type subSession struct {
	g     *Gateway
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
	if s.cmds > s.g.cfg.Limits.Commands {
		return errTooMany
	}
	return nil
}

func (s *subSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *subSession) Auth(mech string) (sasl.Server, error) {
	if err := s.count(); err != nil {
		return nil, err
	}
	if !s.tls() {
		return nil, errAuthNeedsTLS
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if identity != "" && identity != username {
			return errAuthFailed
		}
		for i := range s.g.cfg.Users {
			u := &s.g.cfg.Users[i]
			if u.Name != username {
				continue
			}
			if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) != nil {
				break
			}
			s.user = u
			s.g.log.Info("submission login", "user", u.Name, "remote", s.conn.Conn().RemoteAddr().String())
			return nil
		}
		s.g.log.Warn("submission login failed", "user", username, "remote", s.conn.Conn().RemoteAddr().String())
		return errAuthFailed
	}), nil
}

func (s *subSession) Mail(from string, _ *smtp.MailOptions) error {
	if err := s.count(); err != nil {
		return err
	}
	if !s.tls() {
		return errNeedTLS
	}
	if s.user == nil {
		return errAuthFirst
	}
	// Security invariant 5: a submitter may only send as its own agency.
	if !strings.EqualFold(from, s.user.Address) {
		return reply(553, smtp.EnhancedCode{5, 7, 1},
			"You may send only as "+s.user.Address+", your own mailbox at "+s.g.cfg.Agency)
	}
	s.from = from
	return nil
}

func (s *subSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := s.count(); err != nil {
		return err
	}
	if s.from == "" {
		return reply(503, smtp.EnhancedCode{5, 5, 1}, "MAIL FROM first")
	}
	if s.g.isTriageAddress(to) || s.triage {
		if !s.g.isTriageAddress(to) || len(s.rcpts) > 0 {
			return reply(550, smtp.EnhancedCode{5, 5, 3}, "A triage reply goes to "+s.g.triageAddress()+" alone; send anything else separately")
		}
		s.triage = true
		s.rcpts = append(s.rcpts, to)
		return nil
	}
	a := s.g.agencyOfMailbox(to)
	if a == nil {
		// Security invariant 5: a recipient not in the directory is refused.
		return reply(550, smtp.EnhancedCode{5, 1, 1}, to+" is not a mailbox in the agency directory; check the address or ask your administrator")
	}
	if a.ID == s.g.cfg.Agency {
		return reply(550, smtp.EnhancedCode{5, 1, 6}, to+" is in your own agency; use your internal mail")
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
		return s.g.triageReply(context.Background(), s.user, r)
	}
	sp, err := envelope.NewSpool("", s.g.cfg.Limits.MessageBytes)
	if err != nil {
		io.Copy(io.Discard, r)
		return errTempStore
	}
	defer sp.Close()
	if _, err := io.Copy(sp, &strictCRLF{r: r}); err != nil {
		io.Copy(io.Discard, r) // go-smtp needs the data consumed
		if errors.Is(err, envelope.ErrTooLarge) {
			return errTooBig
		}
		return dataErr(err)
	}
	if err := sp.Finish(); err != nil {
		return errTempStore
	}
	return s.g.intake(context.Background(), submission{user: s.user, from: s.from, rcpts: s.rcpts, msg: sp})
}

func (s *subSession) Reset() {
	s.from, s.rcpts, s.triage = "", nil, false
}

func (s *subSession) Logout() error { return nil }

// agencyOfMailbox returns the directory agency that holds a mailbox.
func (g *Gateway) agencyOfMailbox(addr string) *config.Agency {
	for _, a := range g.cfg.Directory.Agencies {
		if a.HasMailbox(addr) {
			return a
		}
	}
	return nil
}
