package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
)

// Compile checks a policy file's source against a directory and compiles
// it: parameters over the defaults, administrator rules type-checked.
// Errors are *config.Error with the file and line.
func Compile(dir *config.Directory, self string, fileName string, src []byte) (*Policy, error) {
	a := dir.Agency(self)
	if a == nil {
		return nil, fmt.Errorf("policy: this gateway's agency %q is not in the directory", self)
	}
	p := &Policy{Directory: dir, Self: a, Params: DefaultParams(), File: fileName}
	if len(src) > 0 {
		doc, err := config.ParseDoc(fileName, src)
		if err != nil {
			return nil, err
		}
		var f file
		// An empty file (only comments) is the built-in policy.
		if len(doc.AST.Docs) > 0 && doc.AST.Docs[0].Body != nil {
			if err := doc.Decode("$", &f); err != nil {
				return nil, err
			}
		}
		if f.Parameters != nil {
			if err := p.Params.merge(doc, dir, f.Parameters); err != nil {
				return nil, err
			}
		}
		if err := compileAdmin(doc, dir, f.Rules); err != nil {
			return nil, err
		}
		p.admin = f.Rules
	}
	p.build()
	return p, nil
}

// merge overrides the defaults with the file's parameters, checking that
// every override narrows what the agreements allow rather than widens it.
func (p *Params) merge(doc *config.Doc, dir *config.Directory, f *Params) error {
	const at = "$.parameters"
	if c := f.ClassificationCeiling; c.Max != "" || c.Routes != nil {
		if c.Max != "" {
			if !slices.Contains(envelope.Classifications, c.Max) {
				return doc.Errorf(at+".classification-ceiling.max", "%q is not a classification", c.Max)
			}
			// MoU Annex A: secure email carries OFFICIAL; SECRET belongs
			// to accredited systems, which this gateway is not.
			if c.Max.Rank() > envelope.OfficialSensitive.Rank() {
				return doc.Errorf(at+".classification-ceiling.max", "%s is above what secure email may carry (OFFICIAL-SENSITIVE)", c.Max)
			}
			p.ClassificationCeiling.Max = c.Max
		}
		for id, cl := range c.Routes {
			if dir.Agency(id) == nil {
				return doc.Errorf(at+".classification-ceiling.routes", "%q is not an agency in the directory", id)
			}
			if !slices.Contains(envelope.Classifications, cl) {
				return doc.Errorf(at+".classification-ceiling.routes", "%s: %q is not a classification", id, cl)
			}
		}
		p.ClassificationCeiling.Routes = c.Routes
	}
	narrow := func(field string, def *[]envelope.Purpose, over []envelope.Purpose) error {
		if over == nil {
			return nil
		}
		for _, x := range over {
			if !slices.Contains(*def, x) {
				return doc.Errorf(at+".purpose-approved."+field, "%q is not an approved purpose for this direction (approved: %s)", x, joinPurposes(*def))
			}
		}
		*def = over
		return nil
	}
	if err := narrow("hmpps-to-police", &p.PurposeApproved.HMPPSToPolice, f.PurposeApproved.HMPPSToPolice); err != nil {
		return err
	}
	if err := narrow("police-to-hmpps", &p.PurposeApproved.PoliceToHMPPS, f.PurposeApproved.PoliceToHMPPS); err != nil {
		return err
	}
	if err := narrow("internal", &p.PurposeApproved.Internal, f.PurposeApproved.Internal); err != nil {
		return err
	}
	esc := f.ImminentRisk
	if esc.AcknowledgeHours < 0 || esc.AcknowledgeHours > 24 {
		return doc.Errorf(at+".imminent-risk-escalation.acknowledge-hours", "must be 1 to 24: an imminent risk is escalated immediately")
	}
	if esc.AcknowledgeHours > 0 {
		p.ImminentRisk.AcknowledgeHours = esc.AcknowledgeHours
	}
	riskCodes := func(field string, rs []string, must []string) error {
		for _, r := range rs {
			if !slices.ContainsFunc(envelope.Risks, func(c envelope.Code) bool { return c.Code == r }) {
				return doc.Errorf(at+"."+field, "%q is not a risk flag", r)
			}
		}
		for _, m := range must {
			if rs != nil && !slices.Contains(rs, m) {
				return doc.Errorf(at+"."+field, "must keep %q: the agreements require it", m)
			}
		}
		return nil
	}
	if err := riskCodes("imminent-risk-escalation.risks", esc.Risks, p.ImminentRisk.Risks); err != nil {
		return err
	}
	if esc.Risks != nil {
		p.ImminentRisk.Risks = esc.Risks
	}
	for id, cs := range esc.Contacts {
		a := dir.Agency(id)
		if a == nil {
			return doc.Errorf(at+".imminent-risk-escalation.contacts", "%q is not an agency in the directory", id)
		}
		for _, c := range cs {
			known := false
			for _, l := range [][]config.Mailbox{a.Escalation, a.Mailboxes} {
				for _, m := range l {
					known = known || m.Address == c
				}
			}
			if !known {
				return doc.Errorf(at+".imminent-risk-escalation.contacts", "%s is not a mailbox or escalation contact of %s in the directory (its training must be on record)", c, id)
			}
		}
	}
	if esc.Contacts != nil {
		p.ImminentRisk.Contacts = esc.Contacts
	}
	if err := riskCodes("high-risk-seniority.risks", f.HighRiskSeniority.Risks, p.HighRiskSeniority.Risks); err != nil {
		return err
	}
	if f.HighRiskSeniority.Risks != nil {
		p.HighRiskSeniority.Risks = f.HighRiskSeniority.Risks
	}
	if f.HighRiskSeniority.CopyPAS != nil {
		p.HighRiskSeniority.CopyPAS = f.HighRiskSeniority.CopyPAS
	}
	if h := f.Triage.Hours; h != 0 {
		if h < 1 || h > 72 {
			return doc.Errorf(at+".triage-72h.hours", "must be 1 to 72: the MoU sets 72 hours as the limit")
		}
		p.Triage.Hours = h
	}
	if v := f.TrainedRecipients.ValidDays; v != 0 {
		if v < 0 {
			return doc.Errorf(at+".trained-recipients.valid-days", "must be positive (or absent: a recorded date suffices)")
		}
		p.TrainedRecipients.ValidDays = v
	}
	if h := f.HandlingCode.HoldHours; h != 0 {
		if h < 1 || h > 24*30 {
			return doc.Errorf(at+".handling-code.hold-hours", "must be 1 to 720 (30 days)")
		}
		p.HandlingCode.HoldHours = h
	}
	if d := f.Retention.Days; d != 0 {
		if d < 1 {
			return doc.Errorf(at+".retention.days", "must be positive")
		}
		p.Retention.Days = d
	}
	return nil
}

// Load reads a gateway config file, its directory and its policy file,
// and compiles the policy.
func Load(configPath string) (*Policy, *config.Config, error) {
	cfg, err := config.Load(configPath)
	if err != nil {
		return nil, nil, err
	}
	src, err := config.ReadFile(cfg.Policy)
	if err != nil {
		return nil, cfg, fmt.Errorf("policy: %w", err)
	}
	p, err := Compile(cfg.Directory, cfg.Agency, cfg.Policy, src)
	if err != nil {
		return nil, cfg, err
	}
	p.LegacySource = cfg.LegacySource
	return p, cfg, nil
}

// Engine holds the policy in force and swaps it atomically on reload, so
// that a decision in progress finishes with the policy it started with
// and no decision ever waits for a reload.
type Engine struct {
	cur atomic.Pointer[Policy]
	log *slog.Logger
	// OnReload, if set before reloads start, is called after every reload
	// attempt with its result (nil: the new policy is in force), for the
	// daemon's audit trail and metrics.
	OnReload func(error)
}

// NewEngine starts an engine with a compiled policy.
func NewEngine(p *Policy, log *slog.Logger) *Engine {
	if log == nil {
		log = slog.Default()
	}
	e := &Engine{log: log}
	e.cur.Store(p)
	return e
}

// Policy returns the policy in force.
func (e *Engine) Policy() *Policy { return e.cur.Load() }

// Decide decides an outgoing package under the policy in force.
func (e *Engine) Decide(ctx context.Context, m *envelope.Manifest, s Sender) Decision {
	d := e.cur.Load().Decide(ctx, m, s)
	logDecision(e.log, "outbound", m, &d)
	return d
}

// DecideInbound decides a received package under the policy in force.
func (e *Engine) DecideInbound(ctx context.Context, m *envelope.Manifest, from string) Decision {
	d := e.cur.Load().DecideInbound(ctx, m, from)
	logDecision(e.log, "inbound", m, &d)
	return d
}

// DecideInboundFor decides a received package addressed to particular
// mailboxes with the policy in force (Policy.DecideInboundFor).
func (e *Engine) DecideInboundFor(ctx context.Context, m *envelope.Manifest, from string, mailboxes []string) Decision {
	d := e.cur.Load().DecideInboundFor(ctx, m, from, mailboxes)
	logDecision(e.log, "inbound", m, &d)
	return d
}

// ErrReloadRefused wraps the reason a new policy was not put in force.
var ErrReloadRefused = errors.New("policy reload refused; the policy in force is unchanged")

// Reload compiles a new policy with load and puts it in force. If load
// fails, the policy in force stays and the error says why.
func (e *Engine) Reload(load func() (*Policy, error)) error {
	p, err := load()
	if err != nil {
		e.log.Error("policy reload refused", slog.String("error", err.Error()))
		err = fmt.Errorf("%w: %w", ErrReloadRefused, err)
	} else {
		old := e.cur.Swap(p)
		e.log.Info("policy reloaded", slog.String("file", p.File), slog.Int("admin_rules", len(p.admin)),
			slog.Bool("replaced", old != nil))
	}
	if e.OnReload != nil {
		e.OnReload(err)
	}
	return err
}

// ReloadConfig reloads from the gateway's config file: the directory and
// the policy file are both read again.
func (e *Engine) ReloadConfig(configPath string) error {
	return e.Reload(func() (*Policy, error) {
		p, _, err := Load(configPath)
		return p, err
	})
}

// WatchSIGHUP installs a SIGHUP handler before it returns, then reloads
// the policy from the config file on every SIGHUP until ctx is done. The
// daemon calls it at start; `conduit policy reload` sends the signal.
func (e *Engine) WatchSIGHUP(ctx context.Context, configPath string) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				start := time.Now()
				if err := e.ReloadConfig(configPath); err == nil {
					e.log.Info("policy reload on SIGHUP", slog.Duration("took", time.Since(start)))
				}
			}
		}
	}()
}
