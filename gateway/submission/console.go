package submission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/smtpserver"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/policy"
)

// What the web console (package console) and `conduit send` use of the
// staff side: submission through the same intake as SMTP, and the sharing
// policy's decision on a draft.

// SubmitError is a package the gateway did not accept, with the reply an
// SMTP client would have had.
type SubmitError struct {
	Code      int    // the SMTP reply code: 4xx try again, 5xx refused
	Enhanced  string // the RFC 3463 enhanced status code, "5.7.1"
	Message   string
	Temporary bool
}

func (e *SubmitError) Error() string { return e.Message }

// Reply is the SMTP reply code and enhanced status code.
func (e *SubmitError) Reply() (code int, enhanced string) { return e.Code, e.Enhanced }

// DecisionsKept is how many decisions the decision log keeps for an
// administrator's dry runs.
const DecisionsKept = 1000

// Submit takes a message (RFC 5322, CRLF line ends, the same headers as an
// SMTP submission: Handling-Label, Conduit-Subject, Conduit-Risk,
// Conduit-Topic) from an authenticated user to recipient mailboxes, spools
// it encrypted, and runs it through the intake that SMTP submission uses:
// the same checks, one transaction, the same promise. It returns the
// package id and the text of the 250 reply; a refusal or a temporary
// failure is a *SubmitError.
func (srv *Server) Submit(ctx context.Context, user *config.User, rcpts []string, msg io.Reader) (pkgID, accepted string, err error) {
	if len(rcpts) == 0 {
		return "", "", &SubmitError{Code: 554, Enhanced: "5.5.1", Message: "no recipient: address the package to at least one agency"}
	}
	for _, to := range rcpts {
		// Security invariant 5, as at RCPT.
		a := srv.agencyOfMailbox(to)
		if a == nil {
			return "", "", &SubmitError{Code: 550, Enhanced: "5.1.1", Message: to + " is not a mailbox in the agency directory"}
		}
		if a.ID == srv.cfg.Agency {
			return "", "", &SubmitError{Code: 550, Enhanced: "5.1.6", Message: to + " is in your own agency; use your internal mail"}
		}
	}
	sp, err := envelope.NewSpool("", srv.cfg.Limits.MessageBytes)
	if err != nil {
		return "", "", toSubmitError(smtpserver.ErrTempStore)
	}
	defer sp.Close()
	if _, err := io.Copy(sp, msg); err != nil {
		if errors.Is(err, envelope.ErrTooLarge) {
			return "", "", toSubmitError(smtpserver.ErrTooBig)
		}
		return "", "", fmt.Errorf("submit: %w", err)
	}
	if err := sp.Finish(); err != nil {
		return "", "", toSubmitError(smtpserver.ErrTempStore)
	}
	rerr := srv.intake(ctx, submission{user: user, from: user.Address, rcpts: rcpts, msg: sp})
	var se *smtp.SMTPError
	if errors.As(rerr, &se) && se.Code == 250 {
		return packageIDRE.FindString(se.Message), se.Message, nil
	}
	return "", "", toSubmitError(rerr)
}

func toSubmitError(err error) error {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return err
	}
	e := se.EnhancedCode
	return &SubmitError{Code: se.Code, Enhanced: fmt.Sprintf("%d.%d.%d", e[0], e[1], e[2]), Message: se.Message, Temporary: se.Code/100 == 4}
}

// Explain decides a draft package as this gateway would decide it if it
// were submitted now, without sending, storing or logging anything.
func (srv *Server) Explain(ctx context.Context, m *envelope.Manifest) policy.Decision {
	d := *m
	d.From = srv.cfg.Agency
	if d.Label.Originator == "" {
		d.Label.Originator = srv.cfg.Agency
	}
	if d.Label.Created.IsZero() {
		d.Label.Created = srv.now().UTC().Truncate(1e9)
	}
	return srv.engine.Policy().Decide(ctx, &d, policy.Sender{Agency: srv.cfg.Agency})
}

// decided is what the decision log keeps of a package: what the policy
// routed it on (never a subject's identity, never content), for an
// administrator's dry runs; nil when the store keeps no log.
func (srv *Server) decided(pkgID string, m *envelope.Manifest, dec policy.Decision) *store.Decided {
	if _, ok := srv.store.(store.DecisionLog); !ok {
		return nil
	}
	r := *m
	r.Subjects = make([]envelope.Subject, len(m.Subjects))
	for i, s := range m.Subjects {
		s.ID = ""
		r.Subjects[i] = s
	}
	r.Body, r.Attachments = "", nil
	b, err := json.Marshal(&r)
	if err != nil {
		srv.log.Warn("decision not kept for dry runs", "package", pkgID, "err", err)
		return nil
	}
	return &store.Decided{PackageID: pkgID, Decided: srv.now(), Manifest: b, Outcome: string(dec.Decision)}
}

// recordDecision writes a decision on its own, for a package that is not
// stored (refused, or failed before its transaction); a stored package's
// decision is written in the transaction that stores it. It is a record
// for later reading, not part of any promise.
func (srv *Server) recordDecision(ctx context.Context, d *store.Decided) {
	dl, ok := srv.store.(store.DecisionLog)
	if !ok || d == nil {
		return
	}
	if err := dl.RecordDecided(ctx, *d, DecisionsKept); err != nil {
		srv.log.Warn("decision not kept for dry runs", "package", d.PackageID, "err", strings.TrimSpace(err.Error()))
	}
}
