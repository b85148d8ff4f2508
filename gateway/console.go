package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/policy"
)

// What the web console (package console) and `conduit send` use of a
// running gateway: submission through the same intake as SMTP, and the
// sharing policy's decision for a draft.

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
func (g *Gateway) Submit(ctx context.Context, user *config.User, rcpts []string, msg io.Reader) (pkgID, accepted string, err error) {
	if len(rcpts) == 0 {
		return "", "", &SubmitError{Code: 554, Enhanced: "5.5.1", Message: "no recipient: address the package to at least one agency"}
	}
	for _, to := range rcpts {
		// Security invariant 5, as at RCPT.
		a := g.agencyOfMailbox(to)
		if a == nil {
			return "", "", &SubmitError{Code: 550, Enhanced: "5.1.1", Message: to + " is not a mailbox in the agency directory"}
		}
		if a.ID == g.cfg.Agency {
			return "", "", &SubmitError{Code: 550, Enhanced: "5.1.6", Message: to + " is in your own agency; use your internal mail"}
		}
	}
	sp, err := envelope.NewSpool("", g.cfg.Limits.MessageBytes)
	if err != nil {
		return "", "", smtpToSubmit(errTempStore)
	}
	defer sp.Close()
	if _, err := io.Copy(sp, msg); err != nil {
		if errors.Is(err, envelope.ErrTooLarge) {
			return "", "", smtpToSubmit(errTooBig)
		}
		return "", "", fmt.Errorf("submit: %w", err)
	}
	if err := sp.Finish(); err != nil {
		return "", "", smtpToSubmit(errTempStore)
	}
	rerr := g.intake(ctx, submission{user: user, from: user.Address, rcpts: rcpts, msg: sp})
	var se *smtp.SMTPError
	if errors.As(rerr, &se) && se.Code == 250 {
		id := packageIDRE.FindString(se.Message)
		return id, se.Message, nil
	}
	return "", "", smtpToSubmit(rerr)
}

func smtpToSubmit(err error) error {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return err
	}
	e := se.EnhancedCode
	return &SubmitError{Code: se.Code, Enhanced: fmt.Sprintf("%d.%d.%d", e[0], e[1], e[2]), Message: se.Message, Temporary: se.Code/100 == 4}
}

// Explain decides a draft package as this gateway would decide it if it
// were submitted now, without sending, storing or logging anything.
func (g *Gateway) Explain(ctx context.Context, m *envelope.Manifest) policy.Decision {
	d := *m
	d.From = g.cfg.Agency
	if d.Label.Originator == "" {
		d.Label.Originator = g.cfg.Agency
	}
	if d.Label.Created.IsZero() {
		d.Label.Created = g.Now().UTC().Truncate(1e9)
	}
	return g.engine.Policy().Decide(ctx, &d, policy.Sender{Agency: g.cfg.Agency})
}

// Rectify sends a rectification notice about a package this gateway
// sent, to every agency it went to (MoU Annex A, Accuracy), marked like
// the package it corrects (its label, from the decision log, with a
// reference of its own). It returns the notice's id and destinations.
func (g *Gateway) Rectify(ctx context.Context, user *config.User, pkgID string, text io.Reader) (string, []string, error) {
	dl, ok := g.store.(store.DecisionLog)
	if !ok {
		return "", nil, errors.New("this gateway's store keeps no decisions: use conduit notice send")
	}
	recent, err := dl.RecentDecided(ctx, DecisionsKept)
	if err != nil {
		return "", nil, err
	}
	for _, d := range recent {
		if d.PackageID != pkgID {
			continue
		}
		var m envelope.Manifest
		if err := json.Unmarshal(d.Manifest, &m); err != nil {
			return "", nil, fmt.Errorf("the package's label cannot be read: %w", err)
		}
		l := m.Label
		l.Reference = strings.TrimSuffix(l.Reference, "-RECT") + "-RECT"
		l.Created = time.Time{}
		return g.SendNotice(ctx, Notice{Kind: policy.NoticeRectification, PackageID: pkgID, Originator: g.cfg.Agency,
			Label: l, Text: text, Sender: user.Address})
	}
	return "", nil, fmt.Errorf("package %s is not among the last %d this gateway decided: use conduit notice send with its label", pkgID, DecisionsKept)
}

// ReloadPolicy reads the config's directory and policy file again and
// puts the policy in force; an invalid one is refused and the policy in
// force stays.
func (g *Gateway) ReloadPolicy() error { return g.engine.ReloadConfig(g.cfg.File) }

// recordDecision keeps what the policy routed a package on (never a
// subject's identity, never content) for an administrator's dry runs.
func (g *Gateway) recordDecision(ctx context.Context, pkgID string, m *envelope.Manifest, dec policy.Decision) {
	dl, ok := g.store.(store.DecisionLog)
	if !ok {
		return
	}
	r := *m
	r.Subjects = make([]envelope.Subject, len(m.Subjects))
	for i, s := range m.Subjects {
		s.ID = ""
		r.Subjects[i] = s
	}
	r.Body, r.Attachments = "", nil
	b, err := json.Marshal(&r)
	if err == nil {
		err = dl.RecordDecided(ctx, store.Decided{PackageID: pkgID, Decided: g.Now(), Manifest: b, Outcome: string(dec.Decision)}, DecisionsKept)
	}
	if err != nil {
		g.log.Warn("decision not kept for dry runs", "package", pkgID, "err", strings.TrimSpace(err.Error()))
	}
}
