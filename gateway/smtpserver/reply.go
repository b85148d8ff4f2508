// Package smtpserver is in charge of what the gateway's two SMTP front
// ends (staff submission and partner inbound) share: building a go-smtp
// server with the gateway's limits, timeouts and TLS; bounding the
// connections a listener holds; reading DATA strictly (no bare line
// endings: SMTP smuggling); and the replies, each with its RFC 3463
// enhanced status code and a sentence the sender can act on.
package smtpserver

import (
	"errors"
	"io"

	"github.com/emersion/go-smtp"
)

// Reply builds an SMTP error with its RFC 3463 enhanced status code and a
// sentence the sender can act on. The same text goes to the log; it never
// holds package content.
func Reply(code int, enhanced smtp.EnhancedCode, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: enhanced, Message: msg}
}

// Replies used by both listeners.
var (
	// RFC 3207 section 4: 530 5.7.0 before STARTTLS.
	ErrNeedTLS = Reply(530, smtp.EnhancedCode{5, 7, 0}, "Must issue a STARTTLS command first: this gateway never accepts a package in clear")
	// RFC 4954 section 6: 538 5.7.11 encryption required for AUTH.
	ErrAuthNeedsTLS = Reply(538, smtp.EnhancedCode{5, 7, 11}, "Encryption required: start TLS before authenticating")
	ErrAuthFirst    = Reply(530, smtp.EnhancedCode{5, 7, 0}, "Authentication required: log in with your Conduit account first")
	ErrAuthFailed   = Reply(535, smtp.EnhancedCode{5, 7, 8}, "Authentication failed: wrong user name or password")
	// RFC 3463 5.6.0, as mox answers bare newlines: the message would be
	// read differently by different servers (SMTP smuggling).
	ErrBareLF = Reply(554, smtp.EnhancedCode{5, 6, 0}, "Message refused: it contains a bare CR or LF; lines must end with CRLF")
	ErrTooBig = Reply(552, smtp.EnhancedCode{5, 3, 4}, "Message refused: larger than this gateway accepts")
	// RFC 5321 section 4.5.3.1.6 bounds a text line; a line past the
	// gateway's limit is a permanent error (500), never a 4xx a mail
	// client retries for ever.
	ErrLineTooLong = Reply(500, smtp.EnhancedCode{5, 5, 6}, "Message refused: a line is longer than 4000 characters; wrap long lines or send the content as an attachment")
	ErrTooMany     = Reply(421, smtp.EnhancedCode{4, 7, 0}, "Too many commands in one session; reconnect and try again")
	ErrTempStore   = Reply(451, smtp.EnhancedCode{4, 3, 0}, "Temporary failure storing the package; nothing was lost, try again shortly")
)

// ErrDuplicateRcpt answers a RCPT for a mailbox already a recipient of
// the transaction: accepted once, as Postfix collapses duplicates, and
// (a reply, not an error, so go-smtp does not count it) never counted
// against the recipient limit again. RFC 3463 2.1.5: destination valid.
func ErrDuplicateRcpt(to string) *smtp.SMTPError {
	return Reply(250, smtp.EnhancedCode{2, 1, 5}, to+" is already a recipient of this message; it is counted once")
}

// StrictCRLF passes a DATA stream through, failing at the first CR not
// followed by LF or LF not preceded by CR. go-smtp ends DATA only on a
// strict CRLF.CRLF, but keeps bare line endings in the data, where another
// server on the path may read them as line ends: refuse such a message.
type StrictCRLF struct {
	R      io.Reader
	prevCR bool
	bad    bool
}

var errBareLineEnding = errors.New("bare CR or LF in message data")

func (s *StrictCRLF) Read(p []byte) (int, error) {
	if s.bad {
		return 0, errBareLineEnding
	}
	n, err := s.R.Read(p)
	for i := 0; i < n; i++ {
		c := p[i]
		switch {
		case s.prevCR && c != '\n', !s.prevCR && c == '\n':
			s.bad = true
			return i, errBareLineEnding
		}
		s.prevCR = c == '\r'
	}
	if err == io.EOF && s.prevCR {
		s.bad = true
		return n, errBareLineEnding
	}
	return n, err
}

// DataErr turns an error from reading DATA into the reply for it.
func DataErr(err error) *smtp.SMTPError {
	switch {
	case errors.Is(err, errBareLineEnding):
		return ErrBareLF
	case errors.Is(err, smtp.ErrDataTooLarge):
		return ErrTooBig
	case errors.Is(err, smtp.ErrTooLongLine):
		return ErrLineTooLong
	}
	return Reply(451, smtp.EnhancedCode{4, 4, 2}, "The connection failed while the message was sent; try again")
}
