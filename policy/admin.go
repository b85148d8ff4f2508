package policy

import (
	"fmt"
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	costpkg "cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"
	"github.com/goccy/go-yaml/ast"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
)

// Administrator rule actions.
const (
	ActDeliver  = "deliver"  // add destinations as if the sender had addressed them
	ActRedirect = "redirect" // replace destinations
	ActCopy     = "copy"     // add a copy after the redirections
	ActEscalate = "escalate" // immediate priority, escalation copies, acknowledgement deadline
	ActRequire  = "require"  // refuse the package unless a second condition holds
	ActHold     = "hold"     // hold the package (or some destinations) for a release
	ActDeny     = "deny"     // refuse the package (or some destinations)
)

var actions = []string{ActDeliver, ActRedirect, ActCopy, ActEscalate, ActRequire, ActHold, ActDeny}

// AdminRule is one administrator rule from the policy file.
type AdminRule struct {
	RuleID      string          `yaml:"id"`
	Description string          `yaml:"description,omitempty"`
	Citation    string          `yaml:"source,omitempty"`
	Direction   string          `yaml:"direction,omitempty"` // outbound (default), inbound or both
	When        string          `yaml:"when"`
	Action      string          `yaml:"action"`
	To          []string        `yaml:"to,omitempty"`
	From        []string        `yaml:"from,omitempty"`
	Function    config.Function `yaml:"function,omitempty"`
	Require     string          `yaml:"require,omitempty"`
	Reason      string          `yaml:"reason,omitempty"`
	// AcknowledgeHours is the escalate action's deadline (default: the
	// imminent-risk-escalation parameter).
	AcknowledgeHours int `yaml:"acknowledge-hours,omitempty"`

	file    string
	line    int
	source  string // Source, computed once at load
	when    program
	require program
	to      []*config.Agency
}

// program is a compiled condition: fast runs without cost tracking, which
// is safe while the manifest's lists are within the sizes the static cost
// estimate assumed; guarded runs with a runtime cost limit otherwise.
type program struct {
	fast, guarded cel.Program
}

func (p program) eval(e *eval) (ref.Val, error) {
	if len(e.m.To) > maxListLen || len(e.m.Risk) > maxListLen || len(e.m.Subjects) > maxListLen ||
		len(e.m.Label.Subjects) > maxListLen || subjectFlags(e.m) > maxListLen {
		v, _, err := p.guarded.ContextEval(e.ctx, e.act)
		return v, err
	}
	v, _, err := p.fast.Eval(e.act)
	return v, err
}

func subjectFlags(m *envelope.Manifest) int {
	n := 0
	for _, s := range m.Subjects {
		n += len(s.Flags)
	}
	return n
}

// sizeHints tells CEL's static cost estimator how large the variables
// can be, so that a condition's worst-case cost is known at load.
type sizeHints struct{}

// maxListLen and maxStringLen bound the variables for the estimate; a
// manifest with longer lists is evaluated with runtime cost tracking.
const (
	maxListLen   = 64
	maxStringLen = 64
)

func (sizeHints) EstimateSize(n costpkg.AstNode) *costpkg.SizeEstimate {
	if len(n.Path()) == 0 {
		return nil
	}
	switch n.Type().Kind() {
	case types.ListKind:
		return &costpkg.SizeEstimate{Min: 0, Max: maxListLen}
	case types.StringKind:
		return &costpkg.SizeEstimate{Min: 0, Max: maxStringLen}
	}
	return nil
}

func (sizeHints) EstimateCallCost(function, overloadID string, target *costpkg.AstNode, args []costpkg.AstNode) *costpkg.CallEstimate {
	return nil
}

// ID implements Rule.
func (r *AdminRule) ID() string { return r.RuleID }

// Source implements Rule: the administrator's citation, and where the
// rule is written.
func (r *AdminRule) Source() string {
	if r.source != "" {
		return r.source
	}
	at := fmt.Sprintf("administrator rule, %s:%d", r.file, r.line)
	if r.Citation != "" {
		return r.Citation + " (" + at + ")"
	}
	return at
}

// Summary implements Described.
func (r *AdminRule) Summary() string {
	if r.Description != "" {
		return r.Description
	}
	return r.Action + " when " + r.When
}

func (r *AdminRule) reason() string {
	if r.Reason != "" {
		return r.Reason
	}
	return "administrator rule " + r.RuleID
}

// file is the policy file's form.
type file struct {
	Parameters *Params      `yaml:"parameters,omitempty"`
	Rules      []*AdminRule `yaml:"rules,omitempty"`
}

// celEnv declares what an administrator's condition can see: the label,
// the package (never a subject's identity), the sender, this gateway, and
// directory look-ups.
func celEnv(dir *config.Directory) (*cel.Env, error) {
	str, strs := cel.StringType, cel.ListType(cel.StringType)
	vars := []struct {
		name string
		t    *cel.Type
	}{
		{"label.classification", str}, {"label.rank", cel.IntType}, {"label.descriptor", str},
		{"label.caveat", str}, {"label.scheme", str}, {"label.source", str},
		{"label.intelligence", str}, {"label.handling", str}, {"label.authorisation", str},
		{"label.has_conditions", cel.BoolType}, {"label.basis", str}, {"label.subjects", strs},
		{"label.purpose", str}, {"label.sanitised", cel.BoolType}, {"label.sanitised_by", str},
		{"label.originator", str}, {"label.reference", str},
		{"manifest.from", str}, {"manifest.to", strs}, {"manifest.risk", strs}, {"manifest.topic", str},
		{"manifest.roles", strs}, {"manifest.flags", strs}, {"manifest.establishments", strs},
		{"manifest.posts", strs}, {"manifest.post_kinds", strs}, {"manifest.oversight", cel.BoolType},
		{"sender.agency", str}, {"sender.kind", str}, {"sender.region", str},
		{"sender.jurisdiction", str}, {"sender.force", str},
		{"self.agency", str}, {"self.kind", str}, {"direction", str},
	}
	opts := []cel.EnvOption{}
	for _, v := range vars {
		opts = append(opts, cel.Variable(v.name, v.t))
	}
	lookup := func(name string, f func(*config.Agency) string) cel.EnvOption {
		return cel.Function("directory."+name,
			cel.Overload("directory_"+name+"_string", []*cel.Type{cel.StringType}, cel.StringType,
				cel.UnaryBinding(func(v ref.Val) ref.Val {
					s, ok := v.(types.String)
					if !ok {
						return types.NewErr("directory.%s: want a string", name)
					}
					a := dir.Agency(string(s))
					if a == nil {
						return types.String("")
					}
					return types.String(f(a))
				})))
	}
	opts = append(opts,
		lookup("kind", func(a *config.Agency) string { return string(a.Kind) }),
		lookup("region", func(a *config.Agency) string { return a.Region }),
		lookup("jurisdiction", func(a *config.Agency) string { return a.Jurisdiction }),
		lookup("force", func(a *config.Agency) string { return a.Force }),
		lookup("ceiling", func(a *config.Agency) string { return string(a.Ceiling) }),
		lookup("regional_ccu", func(a *config.Agency) string {
			if c := dir.RegionalCCU(a.Region); c != nil {
				return c.ID
			}
			return ""
		}),
		lookup("pio", func(a *config.Agency) string {
			if p := dir.PIOFor(a.ID); p != nil {
				return p.ID
			}
			return ""
		}),
		cel.Function("directory.known",
			cel.Overload("directory_known_string", []*cel.Type{cel.StringType}, cel.BoolType,
				cel.UnaryBinding(func(v ref.Val) ref.Val {
					s, ok := v.(types.String)
					return types.Bool(ok && dir.Agency(string(s)) != nil)
				}))),
	)
	return cel.NewEnv(opts...)
}

// costLimit bounds one condition's evaluation; conditions have no loops
// but macros over lists are bounded by this.
const costLimit = 10000

// compileExpr type-checks a condition, reporting errors at their line in
// the policy file.
func compileExpr(env *cel.Env, doc *config.Doc, path, expr string) (program, error) {
	if strings.TrimSpace(expr) == "" {
		return program{}, doc.Errorf(path, "is empty: a CEL condition is required")
	}
	checked, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		errs := iss.Errors()
		e := doc.Errorf(path, "%s", strings.TrimSpace(iss.Err().Error()))
		if len(errs) > 0 {
			// Point at the line of the expression the error is on.
			first := errs[0]
			line := first.Location.Line()
			if n := doc.Node(path); n != nil && n.GetToken() != nil {
				base := n.GetToken().Position.Line
				if _, block := n.(*ast.LiteralNode); block {
					base++
				}
				if line > 0 {
					e.Line = base + line - 1
				}
				e.Column = 0
			}
			e.Reason = "CEL: " + first.Message + " (in: " + snippetLine(expr, line) + ")"
		}
		return program{}, e
	}
	if checked.OutputType() != cel.BoolType {
		return program{}, doc.Errorf(path, "must be a true/false condition, but its type is %s", checked.OutputType())
	}
	est, err := env.EstimateCost(checked, sizeHints{})
	if err != nil {
		return program{}, doc.Errorf(path, "cannot estimate the condition's cost: %v", err)
	}
	if est.Max > costLimit {
		return program{}, doc.Errorf(path, "is too costly to evaluate on every package (worst case %d, limit %d): simplify it", est.Max, costLimit)
	}
	fast, err := env.Program(checked, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return program{}, doc.Errorf(path, "%v", err)
	}
	guarded, err := env.Program(checked, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(costLimit))
	if err != nil {
		return program{}, doc.Errorf(path, "%v", err)
	}
	return program{fast, guarded}, nil
}

func snippetLine(expr string, line int) string {
	lines := strings.Split(expr, "\n")
	if line >= 1 && line <= len(lines) {
		return strings.TrimSpace(lines[line-1])
	}
	return strings.TrimSpace(expr)
}

// compileAdmin checks and compiles the administrator's rules.
func compileAdmin(doc *config.Doc, dir *config.Directory, rules []*AdminRule) error {
	env, err := celEnv(dir)
	if err != nil {
		return fmt.Errorf("policy: CEL environment: %w", err)
	}
	seen := map[string]bool{}
	for _, r := range builtins(new(Params)) {
		seen[r.ID()] = true
	}
	for i, r := range rules {
		at := fmt.Sprintf("$.rules[%d]", i)
		if r == nil {
			return doc.Errorf(at, "is empty")
		}
		r.file = doc.File
		if n := doc.Node(at); n != nil && n.GetToken() != nil {
			r.line = n.GetToken().Position.Line
		}
		if !envelope.IsAgencyID(r.RuleID) {
			return doc.Errorf(at+".id", "%q is not a rule id: lower-case letters, digits and hyphens", r.RuleID)
		}
		if seen[r.RuleID] {
			return doc.Errorf(at+".id", "duplicate rule id %q (built-in rule ids are taken too)", r.RuleID)
		}
		seen[r.RuleID] = true
		if !slices.Contains(actions, r.Action) {
			return doc.Errorf(at+".action", "%q is not an action; allowed: %s", r.Action, strings.Join(actions, ", "))
		}
		switch r.Direction {
		case "":
			r.Direction = "outbound"
		case "outbound", "inbound", "both":
		default:
			return doc.Errorf(at+".direction", "%q is not a direction; allowed: outbound, inbound, both", r.Direction)
		}
		if r.Direction != "outbound" && (r.Action == ActDeliver || r.Action == ActRedirect || r.Action == ActCopy) {
			return doc.Errorf(at+".action", "%s routes an outgoing package; it cannot apply to received packages", r.Action)
		}
		for j, id := range r.To {
			a := dir.Agency(id)
			if a == nil {
				return doc.Errorf(fmt.Sprintf("%s.to[%d]", at, j), "%q is not an agency in the directory", id)
			}
			r.to = append(r.to, a)
		}
		for j, id := range r.From {
			if dir.Agency(id) == nil {
				return doc.Errorf(fmt.Sprintf("%s.from[%d]", at, j), "%q is not an agency in the directory", id)
			}
		}
		switch r.Action {
		case ActDeliver, ActCopy:
			if len(r.To) == 0 {
				return doc.Errorf(at, "%s needs to: the agencies to %s to", r.Action, r.Action)
			}
		case ActRedirect:
			if len(r.To) != 1 {
				return doc.Errorf(at, "redirect needs exactly one agency in to")
			}
		}
		if len(r.From) > 0 && r.Action != ActRedirect {
			return doc.Errorf(at+".from", "only redirect takes from")
		}
		if r.Function != "" {
			if !slices.Contains(config.Functions, r.Function) {
				return doc.Errorf(at+".function", "%q is not a mailbox function", r.Function)
			}
			if r.Action != ActDeliver && r.Action != ActCopy && r.Action != ActRedirect {
				return doc.Errorf(at+".function", "only deliver, copy and redirect choose a mailbox")
			}
			for j, a := range r.to {
				if a.Mailbox(r.Function) == nil {
					return doc.Errorf(fmt.Sprintf("%s.to[%d]", at, j), "%s has no %s mailbox", a.ID, r.Function)
				}
			}
		}
		if (r.Require != "") != (r.Action == ActRequire) {
			return doc.Errorf(at, "require (a second condition) goes with action require, and only with it")
		}
		if r.AcknowledgeHours < 0 || (r.AcknowledgeHours > 0 && r.Action != ActEscalate) {
			return doc.Errorf(at+".acknowledge-hours", "is for escalate only, and must be positive")
		}
		r.source = r.Source()
		if r.when, err = compileExpr(env, doc, at+".when", r.When); err != nil {
			return err
		}
		if r.Action == ActRequire {
			if r.require, err = compileExpr(env, doc, at+".require", r.Require); err != nil {
				return err
			}
		}
	}
	return nil
}

// activation resolves the condition variables from the decision being
// made, computing each only when a condition first reads it and keeping
// the CEL value for the other conditions of the same decision.
type activation struct {
	e     *eval
	cache [len(celVars)]ref.Val
}

// celVars are the variables a condition may read, in declaration order.
var celVars = [...]string{
	"label.classification", "label.rank", "label.descriptor", "label.caveat", "label.scheme",
	"label.source", "label.intelligence", "label.handling", "label.authorisation",
	"label.has_conditions", "label.basis", "label.subjects", "label.purpose", "label.sanitised",
	"label.sanitised_by", "label.originator", "label.reference",
	"manifest.from", "manifest.to", "manifest.risk", "manifest.topic", "manifest.roles",
	"manifest.flags", "manifest.establishments", "manifest.posts", "manifest.post_kinds", "manifest.oversight",
	"sender.agency", "sender.kind", "sender.region", "sender.jurisdiction", "sender.force",
	"self.agency", "self.kind", "direction",
}

var celVarIndex = func() map[string]int {
	m := make(map[string]int, len(celVars))
	for i, v := range celVars {
		m[v] = i
	}
	return m
}()

func newActivation(e *eval) *activation { return &activation{e: e} }

func (a *activation) Parent() interpreter.Activation { return nil }

func (a *activation) ResolveName(name string) (any, bool) {
	i, ok := celVarIndex[name]
	if !ok {
		return nil, false
	}
	if v := a.cache[i]; v != nil {
		return v, true
	}
	v := a.resolve(name)
	a.cache[i] = v
	return v, true
}

func (a *activation) resolve(name string) ref.Val {
	e := a.e
	l := &e.m.Label
	str := func(s string) ref.Val { return types.String(s) }
	list := func(xs []string) ref.Val { return types.NewStringList(types.DefaultTypeAdapter, nonNil(xs)) }
	switch name {
	case "label.classification":
		return str(string(l.Classification))
	case "label.rank":
		return types.Int(l.Classification.Rank())
	case "label.descriptor":
		return str(l.Descriptor)
	case "label.caveat":
		return str(l.Caveat)
	case "label.scheme":
		return str(string(l.Grading.Scheme))
	case "label.source":
		return str(l.Grading.Source)
	case "label.intelligence":
		return str(l.Grading.Intelligence)
	case "label.handling":
		return str(l.Grading.Handling)
	case "label.authorisation":
		return str(l.Authorisation)
	case "label.has_conditions":
		return types.Bool(strings.TrimSpace(l.Conditions) != "")
	case "label.basis":
		return str(string(l.Basis))
	case "label.subjects":
		out := make([]string, len(l.Subjects))
		for i, s := range l.Subjects {
			out[i] = string(s)
		}
		return list(out)
	case "label.purpose":
		return str(string(l.Purpose))
	case "label.sanitised":
		return types.Bool(l.Sanitised)
	case "label.sanitised_by":
		return str(l.SanitisedBy)
	case "label.originator":
		return str(l.Originator)
	case "label.reference":
		return str(l.Reference)
	case "manifest.from":
		return str(e.m.From)
	case "manifest.to":
		return list(e.m.To)
	case "manifest.risk":
		return list(e.m.Risk)
	case "manifest.topic":
		return str(e.m.Topic)
	case "manifest.roles":
		var out []string
		for _, s := range e.m.Subjects {
			out = append(out, string(s.Role))
		}
		return list(out)
	case "manifest.flags":
		var out []string
		for _, s := range e.m.Subjects {
			out = append(out, s.Flags...)
		}
		return list(out)
	case "manifest.establishments":
		// Never the subject's identity: only where the subject is.
		var out []string
		for _, s := range e.m.Subjects {
			if s.Establishment != "" {
				out = append(out, s.Establishment)
			}
		}
		return list(out)
	case "manifest.posts", "manifest.post_kinds":
		// The posts subjects hold and their kinds, as the directory
		// declares them (local agreements route by post, MoU 7.1).
		var out []string
		for _, s := range e.m.Subjects {
			if s.Post == "" {
				continue
			}
			if name == "manifest.posts" {
				out = append(out, s.Post)
			} else if a := e.d.Agency(s.Establishment); a != nil && a.Post(s.Post) != nil {
				out = append(out, string(a.Post(s.Post).Kind))
			}
		}
		return list(out)
	case "manifest.oversight":
		// A subject holds a post with oversight of the intelligence
		// function at its establishment (or is its governing governor).
		for _, s := range e.m.Subjects {
			if s.Establishment != "" && e.governorSubject(s.Establishment) {
				return types.Bool(true)
			}
			if s.Role == "governing-governor" {
				return types.Bool(true)
			}
		}
		return types.Bool(false)
	case "self.agency":
		return str(e.self.ID)
	case "self.kind":
		return str(string(e.self.Kind))
	case "direction":
		if e.dir == inbound {
			return str("inbound")
		}
		return str("outbound")
	}
	s := e.sender
	if s == nil {
		return str("")
	}
	switch name {
	case "sender.agency":
		return str(s.ID)
	case "sender.kind":
		return str(string(s.Kind))
	case "sender.region":
		return str(s.Region)
	case "sender.jurisdiction":
		return str(s.Jurisdiction)
	}
	return str(s.Force)
}

func nonNil(xs []string) []string {
	if xs == nil {
		return []string{}
	}
	return xs
}

// matchAdmin evaluates every administrator condition for this decision's
// direction once. A condition that fails to evaluate holds the package:
// a broken rule must not let a package through that it was written to
// stop.
func (p *Policy) matchAdmin(e *eval) []*AdminRule {
	var matched []*AdminRule
	dir := "outbound"
	if e.dir == inbound {
		dir = "inbound"
	}
	for _, r := range p.admin {
		if r.Direction != "both" && r.Direction != dir {
			continue
		}
		v, err := r.when.eval(e)
		if err != nil {
			e.trace(r, EffectHold, "condition could not be evaluated (%v); held for an administrator", err)
			matched = append(matched, &AdminRule{RuleID: r.RuleID, Action: ActHold, file: r.file, line: r.line,
				Reason: "administrator rule " + r.RuleID + " could not be evaluated", Citation: r.Citation})
			continue
		}
		if b, ok := v.Value().(bool); ok && b {
			matched = append(matched, r)
		}
	}
	return matched
}

// adminGates applies deny, require and package-wide hold; it returns
// whether every destination is to be held.
func (p *Policy) adminGates(e *eval, matched []*AdminRule) bool {
	holdAll := false
	for _, r := range matched {
		switch r.Action {
		case ActDeny:
			if len(r.To) == 0 {
				e.deny(r, "%s", r.reason())
			}
		case ActRequire:
			v, err := r.require.eval(e)
			ok := false
			if err == nil {
				ok, _ = v.Value().(bool)
			}
			if !ok {
				e.deny(r, "requirement not met: %s", r.reason())
			} else {
				e.trace(r, EffectRecord, "requirement met: %s", r.Require)
			}
		case ActHold:
			if len(r.To) == 0 {
				holdAll = true
			}
		}
	}
	return holdAll
}

// adminRewrite applies deliver and redirect before the built-in
// redirections, which therefore have the last word.
func (p *Policy) adminRewrite(e *eval, matched []*AdminRule) {
	for _, r := range matched {
		fn := r.Function
		if fn == "" {
			fn = config.Intake
		}
		switch r.Action {
		case ActDeliver:
			for _, a := range r.to {
				e.addDest(a, fn, r.RuleID, false)
				e.trace(r, EffectDeliver, "%s: %s", a.ID, r.reason())
			}
		case ActRedirect:
			for _, d := range e.live() {
				if len(r.From) == 0 || slices.Contains(r.From, d.agency.ID) {
					e.redirect(d, r.to[0], fn, r, r.reason())
				}
			}
		}
	}
}

// adminAdditions applies copy and escalate.
func (p *Policy) adminAdditions(e *eval, matched []*AdminRule, escalations bool) {
	for _, r := range matched {
		if (r.Action == ActEscalate) != escalations {
			continue
		}
		switch r.Action {
		case ActCopy:
			fn := r.Function
			if fn == "" {
				fn = config.Intake
			}
			for _, a := range r.to {
				if b := p.blockedBy(e, a); b != nil {
					e.trace(r, EffectCopy, "%s: %s", a.ID, r.reason())
					e.trace(b, EffectOverridden, "no copy to %s (%s): the built-in redirection keeps the package from it", a.ID, r.RuleID)
					continue
				}
				e.addDest(a, fn, r.RuleID, true)
				e.step(r, EffectCopy, a.ID+": "+r.reason())
			}
		case ActEscalate:
			hours := r.AcknowledgeHours
			if hours == 0 {
				hours = p.Params.ImminentRisk.AcknowledgeHours
			}
			ire := p.ruleByID("imminent-risk-escalation").(*imminentRiskEscalation)
			escalate(e, r, []string{r.reason()}, hours, ire.contacts)
		}
	}
}

// adminDestGates applies deny and hold naming destinations, and a
// package-wide hold.
func (p *Policy) adminDestGates(e *eval, matched []*AdminRule, d *dest, holdAll bool) {
	for _, r := range matched {
		if r.Action != ActDeny && r.Action != ActHold {
			continue
		}
		named := slices.Contains(r.to, d.agency)
		switch {
		case r.Action == ActDeny && named:
			e.refuse(d, r, r.reason())
		case r.Action == ActHold && (named || (holdAll && len(r.To) == 0)):
			if d.addition {
				e.refuse(d, r, r.reason())
			} else {
				e.hold(d, r, r.reason())
			}
		}
	}
}

// ruleByID finds a built-in or administrator rule.
func (p *Policy) ruleByID(id string) Rule {
	for _, r := range p.rules {
		if r.ID() == id {
			return r
		}
	}
	for _, r := range p.admin {
		if r.ID() == id {
			return r
		}
	}
	return nil
}
