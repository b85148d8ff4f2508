package envelope

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/goccy/go-yaml"
)

// Role is what a subject of a package is, as far as routing cares. The
// subject's identity is never part of it: identities stay in the body.
type Role string

// Roles lists the subject roles the sharing policy knows.
var Roles = []Code{
	{"governing-governor", "the governing governor of an establishment (MoU 6.1 police, bullet 5)"},
	{"staff", "a member of prison staff, directly employed or contracted (MoU 3.2)"},
	{"hq", "HMPPS headquarters staff (MoU 6.1 police, bullet 5)"},
	{"probation-staff", "a member of probation or CRC staff (MoU 6.1 police, bullet 4)"},
	{"pecs-staff", "a member of staff of a prisoner escort contractor (MoU 4.1, Annex B PECS)"},
	{"prisoner", "a prisoner"},
	{"offender", "an offender under probation supervision"},
	{"other", "anyone else (a visitor, a corruptor, a member of the public)"},
}

// Flags qualify a prisoner subject (Statement of Common Principles, PAS).
var Flags = []Code{
	{"cat-a", "Category A"},
	{"potential-cat-a", "potential Category A"},
	{"e-list", "on the escape list"},
	{"terrorism", "convicted of or charged with a terrorist offence"},
}

// Risks are the risk flags that change how urgently and to whom a package
// goes (MoU 6.1; Wormwood Scrubs report 7.1-7.2).
var Risks = []Code{
	{"escape", "escape planned or likely"},
	{"abscond", "abscond planned or likely"},
	{"threat-to-life", "threat to life"},
	{"firearms", "firearms involved"},
	{"high-profile", "a high-profile prisoner or case"},
}

// Topics say what a package is about.
var Topics = []Code{
	{"corruption", "corruption of staff (MoU 3.1)"},
	{"crime-in-prison", "crime in prison (Crime in Prison Referral Agreement)"},
	{"risk-information", "information about the risk a prisoner poses"},
	{"per", "Person Escort Record information"},
	{"security", "security, good order and discipline"},
	{"other", "anything else"},
}

// Subject is one subject of a package for the purposes of routing.
type Subject struct {
	Role Role `yaml:"role" json:"role"`
	// Establishment is the directory id of the prison, probation division
	// or contractor the subject belongs to, when there is one.
	Establishment string   `yaml:"establishment,omitempty" json:"establishment,omitempty"`
	Region        string   `yaml:"region,omitempty" json:"region,omitempty"`
	Flags         []string `yaml:"flags,omitempty" json:"flags,omitempty"`
	// Post is the post the subject holds at Establishment (lccm,
	// head-of-security, deputy-governor), as the directory declares it;
	// the post, never the person, is what routing sees.
	Post string `yaml:"post,omitempty" json:"post,omitempty"`
	// ID is the subject's identity (a prison number, a name). It travels
	// only inside the envelope and is never logged or audited.
	ID string `yaml:"id,omitempty" json:"id,omitempty"`
}

// Manifest describes one package: who sends it, to whom it is addressed,
// its label, and what the sharing policy needs to know about its content.
// The YAML form is the CLI's package file; the JSON form is a part inside
// the envelope.
type Manifest struct {
	From     string    `yaml:"from" json:"from"`
	To       []string  `yaml:"to" json:"to"`
	Label    Label     `yaml:"label" json:"label"`
	Subjects []Subject `yaml:"subjects,omitempty" json:"subjects,omitempty"`
	Risk     []string  `yaml:"risk,omitempty" json:"risk,omitempty"`
	Topic    string    `yaml:"topic,omitempty" json:"topic,omitempty"`
	// Kind is empty for an intelligence package, "receipt" for a
	// gateway's signed statement that it delivered one, or "notice".
	Kind string `yaml:"-" json:"kind,omitempty"`
	// Body and Attachments are file names relative to the manifest, in the
	// YAML form only; inside the envelope they are MIME parts.
	Body        string   `yaml:"body,omitempty" json:"-"`
	Attachments []string `yaml:"attachments,omitempty" json:"-"`
}

// ParseManifest reads the YAML form strictly: an unknown field is an error
// with its line. The label is checked value by value but not for
// completeness; call Validate for that (the policy reports an incomplete
// label under its label-required rule).
//
// Legacy markings are mapped with DefaultLegacyMarkings; a caller with a
// configuration uses ParseManifestWith and the configured table.
func ParseManifest(r io.Reader) (*Manifest, error) {
	return ParseManifestWith(r, DefaultLegacyMarkings)
}

// ParseManifestWith is ParseManifest mapping a legacy marking with the
// given table (config.Config.Legacy): a marking outside it is refused.
func ParseManifestWith(r io.Reader, legacy LegacyMarkings) (*Manifest, error) {
	// A manifest is a few hundred bytes; the limit keeps a hostile one from
	// exhausting memory, and holding it lets errors quote the line.
	src, err := io.ReadAll(io.LimitReader(r, maxManifest+1))
	if err != nil {
		return nil, fmt.Errorf("package manifest: %w", err)
	}
	if len(src) > maxManifest {
		return nil, fmt.Errorf("package manifest: larger than %d bytes", maxManifest)
	}
	var m Manifest
	if err := decodeYAML(src, &m); err != nil {
		return nil, fmt.Errorf("package manifest: %s", yaml.FormatError(err, false, true))
	}
	if err := m.Label.MapLegacy(legacy); err != nil {
		return nil, &ManifestSourceError{Err: err, Source: annotate(src, err)}
	}
	if err := m.check(); err != nil {
		return nil, &ManifestSourceError{Err: err, Source: annotate(src, err)}
	}
	return &m, nil
}

const maxManifest = 1 << 20

// decodeYAML decodes strictly. goccy/go-yaml v1.19.2 panics on some
// malformed input (a tag with no value, found by FuzzParseManifest); a
// sender's bad file must be an error, never a crashed gateway.
func decodeYAML(src []byte, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed YAML (the parser failed: %v)", r)
		}
	}()
	return yaml.UnmarshalWithOptions(src, v, yaml.DisallowUnknownField())
}

// ManifestSourceError is a manifest that parsed as YAML but holds a wrong
// value; Source quotes the offending line when it can be found.
type ManifestSourceError struct {
	Err    error
	Source string
}

func (e *ManifestSourceError) Error() string {
	if e.Source == "" {
		return "package manifest: " + e.Err.Error()
	}
	return "package manifest: " + e.Err.Error() + "\n" + e.Source
}

func (e *ManifestSourceError) Unwrap() error { return e.Err }

// annotate finds the YAML node an error names and quotes it with its line.
func annotate(src []byte, err error) string {
	var field string
	var le *LabelError
	var me *ManifestError
	switch {
	case errors.As(err, &le):
		field = "label." + le.Field
	case errors.As(err, &me):
		field = me.Field
	default:
		return ""
	}
	p, perr := yaml.PathString("$." + field)
	if perr != nil {
		return ""
	}
	out, aerr := p.AnnotateSource(src, false)
	if aerr != nil {
		return ""
	}
	return string(out)
}

// ManifestError names the manifest field that is wrong.
type ManifestError struct {
	Field, Value, Reason string
	Allowed              []string
}

func (e *ManifestError) Error() string {
	s := fmt.Sprintf("field %q", e.Field)
	if e.Value != "" {
		s += fmt.Sprintf(" (%q)", e.Value)
	}
	s += " " + e.Reason
	if len(e.Allowed) > 0 {
		s += "; allowed: " + joinComma(e.Allowed)
	}
	return s
}

func joinComma(xs []string) string {
	var b bytes.Buffer
	for i, x := range xs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(x)
	}
	return b.String()
}

func codes(cs []Code) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Code
	}
	return out
}

func hasCode(cs []Code, s string) bool { return slices.Contains(codes(cs), s) }

// Message kinds besides an intelligence package.
const (
	KindReceipt = "receipt"
	// KindNotice is a notice about a package already exchanged:
	// rectification, breach, subject-access consultation (MoU Annex A).
	KindNotice = "notice"
	// KindKeyChange carries the sender's public certificate after a
	// rotation, a new expiry or a revocation; it is signed by the key
	// the receiver has pinned.
	KindKeyChange = "key-change"
)

// check validates everything but label completeness.
func (m *Manifest) check() error {
	if m.Kind != "" && m.Kind != KindReceipt && m.Kind != KindNotice && m.Kind != KindKeyChange {
		return &ManifestError{Field: "kind", Value: m.Kind, Reason: "is not a message kind", Allowed: []string{KindReceipt, KindNotice, KindKeyChange}}
	}
	if !isAgencyID(m.From) {
		return &ManifestError{Field: "from", Value: m.From, Reason: "must be the sending agency's directory id"}
	}
	if len(m.To) == 0 {
		return &ManifestError{Field: "to", Reason: "must name at least one agency"}
	}
	for _, to := range m.To {
		if !isAgencyID(to) {
			return &ManifestError{Field: "to", Value: to, Reason: "must be a directory agency id"}
		}
	}
	if err := m.Label.ValidatePresent(); err != nil {
		return err
	}
	for i := range m.Subjects {
		s := &m.Subjects[i]
		f := fmt.Sprintf("subjects[%d]", i)
		// A post named where the role goes ("role: lccm") is a post held
		// by a member of staff at the establishment; the directory says
		// whether the establishment has it (the policy checks).
		if s.Post == "" && s.Establishment != "" && !hasCode(Roles, string(s.Role)) && isAgencyID(string(s.Role)) {
			s.Post, s.Role = string(s.Role), "staff"
		}
		if s.Post != "" {
			if !isAgencyID(s.Post) {
				return &ManifestError{Field: f + ".post", Value: s.Post, Reason: "is not a post id (lower-case letters, digits, hyphens, such as lccm or head-of-security)"}
			}
			if s.Role == "" {
				s.Role = "staff"
			}
		}
		if !hasCode(Roles, string(s.Role)) {
			return &ManifestError{Field: f + ".role", Value: string(s.Role), Reason: "is not a subject role (for a post at an establishment, such as lccm, give post: and establishment:)", Allowed: codes(Roles)}
		}
		if s.Establishment != "" && !isAgencyID(s.Establishment) {
			return &ManifestError{Field: f + ".establishment", Value: s.Establishment, Reason: "must be a directory agency id"}
		}
		for _, fl := range s.Flags {
			if !hasCode(Flags, fl) {
				return &ManifestError{Field: f + ".flags", Value: fl, Reason: "is not a subject flag", Allowed: codes(Flags)}
			}
		}
	}
	for _, r := range m.Risk {
		if !hasCode(Risks, r) {
			return &ManifestError{Field: "risk", Value: r, Reason: "is not a risk flag", Allowed: codes(Risks)}
		}
	}
	if m.Topic != "" && !hasCode(Topics, m.Topic) {
		return &ManifestError{Field: "topic", Value: m.Topic, Reason: "is not a topic", Allowed: codes(Topics)}
	}
	return nil
}

// ValidateFacts checks everything but the label's completeness, which the
// sharing policy judges under its label-required rule.
func (m *Manifest) ValidateFacts() error { return m.check() }

// Validate checks the whole manifest, the label's completeness included.
func (m *Manifest) Validate() error {
	if err := m.check(); err != nil {
		return err
	}
	// An originator other than the sender is a package passed on, which the
	// policy's no-onward-disclosure rule judges; it is not malformed.
	return m.Label.Validate()
}

// HasRisk reports whether the manifest carries the risk flag.
func (m *Manifest) HasRisk(r string) bool { return slices.Contains(m.Risk, r) }
