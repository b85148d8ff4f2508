package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/examples"
	"github.com/conduit-gateway/conduit/policy"
)

// RuleView is one rule in force, in the order rules take effect.
type RuleView struct {
	Order   int    `json:"order"`
	ID      string `json:"id"`
	Source  string `json:"source"`
	Summary string `json:"summary"`
	Admin   bool   `json:"administrator"`
}

// CheckResult is the type-check of a draft policy: ok, or the error at
// its line.
type CheckResult struct {
	OK      bool   `json:"ok"`
	Line    int    `json:"line,omitempty"`
	Column  int    `json:"column,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message,omitempty"`
	Quote   string `json:"quote,omitempty"`
	Rules   int    `json:"administrator_rules"`
}

// Change is one decision that a draft policy would change.
type Change struct {
	Sample string `json:"sample"` // an example package, or a package this gateway decided
	Before string `json:"before"`
	After  string `json:"after"`
	// Removed and Added are what the draft takes away and adds.
	Removed []string `json:"removed"`
	Added   []string `json:"added"`
}

// DryRun is what a draft would change.
type DryRun struct {
	Tried   int      `json:"tried"`
	Changes []Change `json:"changes"`
}

// Version is a policy file kept before a change.
type Version struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

type policyData struct {
	Rules    []RuleView
	File     string
	Source   string
	Check    *CheckResult
	DryRun   *DryRun
	Versions []Version
}

func (s *Server) rulesInForce() []RuleView {
	p := s.opt.Gateway.Policy().Policy()
	admin := map[string]bool{}
	for _, r := range p.AdminRules() {
		admin[r.ID()] = true
	}
	var out []RuleView
	for i, r := range p.Rules() {
		v := RuleView{Order: i + 1, ID: r.ID(), Source: r.Source(), Admin: admin[r.ID()]}
		if d, ok := r.(policy.Described); ok {
			v.Summary = d.Summary()
		}
		out = append(out, v)
	}
	return out
}

// compile type-checks a draft policy file.
func (s *Server) compile(src []byte) (*policy.Policy, CheckResult) {
	p, err := policy.Compile(s.cfg.Directory, s.cfg.Agency, s.cfg.Policy, src)
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			return nil, CheckResult{Line: ce.Line, Column: ce.Column, Field: ce.Field, Message: ce.Reason, Quote: ce.Source}
		}
		return nil, CheckResult{Message: err.Error()}
	}
	return p, CheckResult{OK: true, Rules: len(p.AdminRules())}
}

// facts lists a decision's outcome as separate statements ("to AGENCY
// MAILBOX by RULE", "refused AGENCY by RULE", "held ..."), sorted, so that
// two decisions can be compared and their difference shown.
func facts(d policy.Decision) []string {
	out := []string{"decision: " + string(d.Decision)}
	for _, dl := range d.Deliveries {
		x := "to " + dl.Agency + " " + dl.Mailbox
		if dl.Priority == policy.Immediate {
			x += " (immediate)"
		}
		out = append(out, x+" by "+dl.Rule)
	}
	for _, r := range d.Refusals {
		out = append(out, "refused "+r.Agency+" by "+r.Rule)
	}
	for _, st := range d.Trace {
		if st.Effect == policy.EffectDeny {
			out = append(out, "refused the package by "+st.Rule)
		}
	}
	for _, h := range d.Holds {
		out = append(out, "held "+h.Agency+" by "+h.Rule)
	}
	sort.Strings(out[1:])
	return slices.Compact(out)
}

// difference lists what is only in a and only in b.
func difference(a, b []string) (onlyA, onlyB []string) {
	for _, x := range a {
		if !slices.Contains(b, x) {
			onlyA = append(onlyA, x)
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			onlyB = append(onlyB, x)
		}
	}
	return onlyA, onlyB
}

type sample struct {
	name string
	m    *envelope.Manifest
}

// samples are the example packages and the metadata of the last packages
// this gateway decided.
func (s *Server) samples(ctx context.Context) ([]sample, error) {
	var out []sample
	names, _ := fs.Glob(examples.Packages, "packages/*.yaml")
	for _, n := range names {
		f, err := examples.Packages.Open(n)
		if err != nil {
			continue
		}
		m, err := envelope.ParseManifest(f)
		f.Close()
		if err != nil {
			continue
		}
		out = append(out, sample{"example " + path.Base(n), m})
	}
	recent, err := s.opt.Store.RecentDecided(ctx, s.opt.DryRunRecent)
	if err != nil {
		return nil, err
	}
	for _, d := range recent {
		var m envelope.Manifest
		if err := json.Unmarshal(d.Manifest, &m); err != nil {
			continue
		}
		out = append(out, sample{fmt.Sprintf("package %s (decided %s)", d.PackageID, d.Decided.UTC().Format("2006-01-02 15:04")), &m})
	}
	return out, nil
}

// dryRun decides every sample under the policy in force and the draft,
// and lists those whose decision would change.
func (s *Server) dryRun(ctx context.Context, draft *policy.Policy) (*DryRun, error) {
	cur := s.opt.Gateway.Policy().Policy()
	ss, err := s.samples(ctx)
	if err != nil {
		return nil, err
	}
	dr := &DryRun{Changes: []Change{}}
	for _, x := range ss {
		a, b := cur, draft
		if x.m.From != s.cfg.Agency {
			// An example from another agency is decided as its gateway
			// would decide it, under each policy.
			var err1, err2 error
			a, err1 = cur.As(x.m.From)
			b, err2 = draft.As(x.m.From)
			if err1 != nil || err2 != nil {
				continue
			}
		}
		before := facts(a.Decide(ctx, x.m, policy.Sender{Agency: x.m.From}))
		after := facts(b.Decide(ctx, x.m, policy.Sender{Agency: x.m.From}))
		dr.Tried++
		if removed, added := difference(before, after); len(removed)+len(added) > 0 {
			dr.Changes = append(dr.Changes, Change{Sample: x.name, Before: strings.Join(before, "; "), After: strings.Join(after, "; "),
				Removed: removed, Added: added})
		}
	}
	return dr, nil
}

var versionName = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}(\.[0-9]+)?Z\.yaml$`)

func (s *Server) versionsDir() string {
	return filepath.Join(filepath.Dir(s.cfg.Policy), "policy-versions")
}

func (s *Server) versions() []Version {
	ents, _ := os.ReadDir(s.versionsDir())
	var out []Version
	for _, e := range ents {
		if !versionName.MatchString(e.Name()) {
			continue
		}
		v := Version{Name: e.Name()}
		if fi, err := e.Info(); err == nil {
			v.Size = fi.Size()
		}
		out = append(out, v)
	}
	slices.Reverse(out)
	return out
}

// apply writes a checked policy, keeps the previous file as a version,
// reloads the gateway's policy and audits the change with its reason. If
// the gateway refuses the reload, the previous file is put back.
func (s *Server) apply(ctx context.Context, ss *session, src []byte, reason string) (string, CheckResult, error) {
	s.policyMu.Lock()
	defer s.policyMu.Unlock()
	reason = oneLine(reason)
	if reason == "" {
		return "", CheckResult{}, errors.New("give a reason for the change: it is kept in the audit trail")
	}
	if _, cr := s.compile(src); !cr.OK {
		return "", cr, errors.New("the policy does not type-check; nothing was applied")
	}
	old, err := os.ReadFile(s.cfg.Policy)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", CheckResult{}, fmt.Errorf("read the policy in force: %w", err)
	}
	if err := os.MkdirAll(s.versionsDir(), 0o700); err != nil {
		return "", CheckResult{}, fmt.Errorf("policy versions: %w", err)
	}
	kept := s.now().UTC().Format("20060102T150405.000000000Z") + ".yaml"
	if err := os.WriteFile(filepath.Join(s.versionsDir(), kept), old, 0o600); err != nil {
		return "", CheckResult{}, fmt.Errorf("keep the previous policy: %w", err)
	}
	if err := writeAtomic(s.cfg.Policy, src); err != nil {
		return "", CheckResult{}, err
	}
	if err := s.opt.Gateway.ReloadPolicy(); err != nil {
		_ = writeAtomic(s.cfg.Policy, old)
		return "", CheckResult{}, fmt.Errorf("the gateway refused the new policy and keeps the one in force: %w", err)
	}
	e := audit.Event{Kind: audit.PolicyReload, Rule: "policy", Detail: fmt.Sprintf("policy changed in the console: %s; previous version kept as %s", reason, kept)}
	s.fill(ss, &e)
	if _, err := s.opt.Trail.Append(ctx, e); err != nil {
		s.log.Error("admin alert: audit trail not written", "kind", e.Kind, "err", err)
	}
	s.log.Info("console: policy applied", "user", ss.user.Name, "previous", kept)
	return kept, CheckResult{OK: true}, nil
}

func writeAtomic(file string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".policy-*")
	if err != nil {
		return fmt.Errorf("write the policy: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write the policy: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write the policy: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write the policy: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("write the policy: %w", err)
	}
	return os.Rename(tmp.Name(), file)
}

func (s *Server) readVersion(name string) ([]byte, error) {
	if !versionName.MatchString(name) {
		return nil, fmt.Errorf("%q is not a kept version", name)
	}
	return os.ReadFile(filepath.Join(s.versionsDir(), name))
}

func (s *Server) policyData(src string) policyData {
	if src == "" {
		b, _ := os.ReadFile(s.cfg.Policy)
		src = string(b)
	}
	return policyData{Rules: s.rulesInForce(), File: s.cfg.Policy, Source: src, Versions: s.versions()}
}

func (s *Server) policyPage(w http.ResponseWriter, r *http.Request, ss *session) {
	s.render(w, r, ss, http.StatusOK, "policy", "Routing policy", s.policyData(""), r.URL.Query().Get("done"), "")
}

// policyForm: op=check, dry-run or apply on the edited source.
func (s *Server) policyForm(w http.ResponseWriter, r *http.Request, ss *session) {
	src := strings.ReplaceAll(r.PostFormValue("source"), "\r\n", "\n")
	pd := s.policyData(src)
	p, cr := s.compile([]byte(src))
	pd.Check = &cr
	code, notice, problem := http.StatusOK, "", ""
	if !cr.OK {
		code, problem = http.StatusUnprocessableEntity, "The policy does not type-check: see the error below; nothing was applied."
		s.render(w, r, ss, code, "policy", "Routing policy", pd, notice, problem)
		return
	}
	switch r.PostFormValue("op") {
	case "dry-run":
		dr, err := s.dryRun(r.Context(), p)
		if err != nil {
			s.fail(w, r, ss, err)
			return
		}
		pd.DryRun = dr
		notice = fmt.Sprintf("Dry run: %d decisions tried, %d would change.", dr.Tried, len(dr.Changes))
	case "apply":
		kept, cr2, err := s.apply(r.Context(), ss, []byte(src), r.PostFormValue("reason"))
		if err != nil {
			if !cr2.OK && cr2.Message != "" {
				pd.Check = &cr2
			}
			s.render(w, r, ss, http.StatusUnprocessableEntity, "policy", "Routing policy", pd, "", err.Error())
			return
		}
		http.Redirect(w, r, "/admin/policy?done="+urlQuery("Policy applied and in force; the previous version is kept as "+kept+"."), http.StatusSeeOther)
		return
	default:
		notice = fmt.Sprintf("The policy type-checks: %d administrator rules.", cr.Rules)
	}
	s.render(w, r, ss, code, "policy", "Routing policy", pd, notice, problem)
}

func (s *Server) restoreForm(w http.ResponseWriter, r *http.Request, ss *session) {
	name, reason := r.PostFormValue("version"), r.PostFormValue("reason")
	kept, err := s.restore(r.Context(), ss, name, reason)
	if err != nil {
		s.render(w, r, ss, http.StatusUnprocessableEntity, "policy", "Routing policy", s.policyData(""), "", err.Error())
		return
	}
	http.Redirect(w, r, "/admin/policy?done="+urlQuery("Version "+name+" restored and in force; the policy it replaced is kept as "+kept+"."), http.StatusSeeOther)
}

func (s *Server) restore(ctx context.Context, ss *session, name, reason string) (string, error) {
	if oneLine(reason) == "" {
		return "", errors.New("give a reason for restoring: it is kept in the audit trail")
	}
	src, err := s.readVersion(name)
	if err != nil {
		return "", err
	}
	kept, _, err := s.apply(ctx, ss, src, "restored version "+name+": "+reason)
	return kept, err
}

type policySource struct {
	Source string `json:"source"`
	Reason string `json:"reason,omitempty"`
}

func (s *Server) apiPolicy(w http.ResponseWriter, r *http.Request, ss *session) {
	pd := s.policyData("")
	writeJSON(w, http.StatusOK, map[string]any{"rules": pd.Rules, "file": pd.File, "source": pd.Source})
}

func (s *Server) apiPolicyCheck(w http.ResponseWriter, r *http.Request, ss *session) {
	var req policySource
	if err := jsonDecoder(w, r, 1<<20).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "give {\"source\": ...}: "+err.Error())
		return
	}
	_, cr := s.compile([]byte(req.Source))
	writeJSON(w, http.StatusOK, cr)
}

func (s *Server) apiPolicyDryRun(w http.ResponseWriter, r *http.Request, ss *session) {
	var req policySource
	if err := jsonDecoder(w, r, 1<<20).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "give {\"source\": ...}: "+err.Error())
		return
	}
	p, cr := s.compile([]byte(req.Source))
	if !cr.OK {
		writeJSON(w, http.StatusUnprocessableEntity, cr)
		return
	}
	dr, err := s.dryRun(r.Context(), p)
	if err != nil {
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, dr)
}

func (s *Server) apiPolicyApply(w http.ResponseWriter, r *http.Request, ss *session) {
	var req policySource
	if err := jsonDecoder(w, r, 1<<20).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "give {\"source\": ..., \"reason\": ...}: "+err.Error())
		return
	}
	kept, cr, err := s.apply(r.Context(), ss, []byte(req.Source), req.Reason)
	if err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"error": err.Error(), "check": cr})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"previous_version": kept})
}

func (s *Server) apiPolicyVersions(w http.ResponseWriter, r *http.Request, ss *session) {
	writeJSON(w, http.StatusOK, map[string]any{"versions": nonNil(s.versions())})
}

func (s *Server) apiPolicyRestore(w http.ResponseWriter, r *http.Request, ss *session) {
	var req struct {
		Version string `json:"version"`
		Reason  string `json:"reason"`
	}
	if err := jsonDecoder(w, r, 64<<10).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "give {\"version\": ..., \"reason\": ...}: "+err.Error())
		return
	}
	kept, err := s.restore(r.Context(), ss, req.Version, req.Reason)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"previous_version": kept})
}
