// Package envelope is in charge of the intelligence package as it travels: the
// handling Label (parse, validate, canonical form), the package Manifest, and
// sealing a package into a signed and encrypted PGP/MIME envelope (RFC 3156)
// with protected headers (RFC 9788), and opening one again, releasing no
// plaintext until every check has passed.
package envelope

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Classification is a Government Security Classifications marking.
type Classification string

const (
	Official          Classification = "OFFICIAL"
	OfficialSensitive Classification = "OFFICIAL-SENSITIVE"
	Secret            Classification = "SECRET"
	TopSecret         Classification = "TOP SECRET"
)

// Classifications lists the markings in ascending order of protection, so
// that an index comparison answers "is this above the route's ceiling".
var Classifications = []Classification{Official, OfficialSensitive, Secret, TopSecret}

// Rank orders classifications: a higher rank needs more protection. An
// unknown marking ranks above everything, so that a ceiling check on garbage
// fails closed.
func (c Classification) Rank() int {
	if i := slices.Index(Classifications, c); i >= 0 {
		return i
	}
	return len(Classifications)
}

// Descriptors may qualify OFFICIAL-SENSITIVE only (GSC 2014: descriptors
// identify the kind of sensitive information within OFFICIAL).
var Descriptors = []string{"PERSONAL", "COMMERCIAL", "LOCSEN"}

// Caveats are national caveats.
var Caveats = []string{"UK EYES ONLY"}

// LegacyMarkings maps the pre-2014 Government Protective Marking Scheme to
// the current classifications. The default errs upwards wherever the old
// marking could cover more than one new one (PROTECT and RESTRICTED could
// both hold sensitive personal data; CONFIDENTIAL material normally moved to
// SECRET). An administrator may replace it; a marking that is not in the
// table is refused, never guessed.
type LegacyMarkings map[string]Classification

// DefaultLegacyMarkings is the conservative default table.
var DefaultLegacyMarkings = LegacyMarkings{
	"NOT PROTECTIVELY MARKED": Official,
	"PROTECT":                 OfficialSensitive,
	"RESTRICTED":              OfficialSensitive,
	"CONFIDENTIAL":            Secret,
}

// Map returns the current classification for a marking, which may already
// be a current one. Case and surrounding space are ignored; underscores and
// a missing hyphen ("OFFICIAL SENSITIVE", as mail subjects often write it)
// are accepted.
func (m LegacyMarkings) Map(marking string) (Classification, error) {
	s := NormalizeMarking(marking)
	if slices.Contains(Classifications, Classification(s)) {
		return Classification(s), nil
	}
	if c, ok := m[s]; ok {
		return c, nil
	}
	allowed := make([]string, 0, len(Classifications)+len(m))
	for _, c := range Classifications {
		allowed = append(allowed, string(c))
	}
	for k := range m {
		allowed = append(allowed, k+" (legacy)")
	}
	slices.Sort(allowed[len(Classifications):])
	return "", &LabelError{Field: "classification", Value: marking, Allowed: allowed,
		Reason: "is not a classification or a legacy marking in the mapping table"}
}

// NormalizeMarking is the form a marking is looked up in: upper case,
// surrounding space and underscores dropped, runs of space made one, and
// "OFFICIAL SENSITIVE" (as mail subjects often write it) hyphenated.
func NormalizeMarking(marking string) string {
	s := strings.ToUpper(strings.ReplaceAll(marking, "_", " "))
	s = strings.Join(strings.Fields(s), " ")
	if s == "OFFICIAL SENSITIVE" {
		s = string(OfficialSensitive)
	}
	return s
}

// IsCurrent reports whether a marking, normalised, is a current
// classification rather than a legacy one.
func IsCurrent(marking string) bool {
	return slices.Contains(Classifications, Classification(NormalizeMarking(marking)))
}

// MapLegacy maps a legacy marking left unmapped by a parser that had no
// table (the YAML form: Label.UnmarshalYAML) with the table in force. A
// marking outside the table is refused with an error naming it.
func (l *Label) MapLegacy(table LegacyMarkings) error {
	if l.Marked == "" || l.Classification != "" {
		return nil
	}
	if table == nil {
		table = DefaultLegacyMarkings
	}
	c, err := table.Map(l.Marked)
	if err != nil {
		return err
	}
	l.Classification = c
	return nil
}

// Scheme is an intelligence grading scheme. The scheme is always explicit
// because letters and numbers swap roles between 5x5x5 and 3x5x2.
type Scheme string

const (
	Scheme5x5x5 Scheme = "5x5x5"
	Scheme3x5x2 Scheme = "3x5x2"
)

// Code is one value of a grading axis with its meaning.
type Code struct {
	Code    string
	Meaning string
}

// GradingCodes holds the three axes of one scheme.
type GradingCodes struct {
	Source, Intelligence, Handling []Code
}

// Gradings lists every code of both schemes with its meaning (NIM 5x5x5;
// the 3x5x2 APP intelligence grading that replaced it).
var Gradings = map[Scheme]GradingCodes{
	Scheme5x5x5: {
		Source: []Code{
			{"A", "always reliable"},
			{"B", "mostly reliable"},
			{"C", "sometimes reliable"},
			{"D", "unreliable"},
			{"E", "untested source"},
		},
		Intelligence: []Code{
			{"1", "known to be true without reservation"},
			{"2", "known personally to the source but not to the officer"},
			{"3", "not personally known to the source but corroborated"},
			{"4", "cannot be judged"},
			{"5", "suspected to be false or malicious"},
		},
		Handling: []Code{
			{"1", "may be disseminated to law enforcement and prosecuting agencies, including EEA"},
			{"2", "may be disseminated to UK non-prosecuting parties (authorisation and record needed)"},
			{"3", "may be disseminated to non-EEA law enforcement (special conditions)"},
			{"4", "originating agency only"},
			{"5", "no further dissemination: refer to the originator"},
		},
	},
	Scheme3x5x2: {
		Source: []Code{
			{"1", "reliable"},
			{"2", "untested"},
			{"3", "not reliable"},
		},
		Intelligence: []Code{
			{"A", "known directly to the source"},
			{"B", "known indirectly to the source but corroborated"},
			{"C", "known indirectly to the source"},
			{"D", "not known"},
			{"E", "suspected to be false"},
		},
		Handling: []Code{
			{"P", "lawful sharing permitted"},
			{"C", "lawful sharing permitted subject to conditions"},
		},
	},
}

// Meaning returns the meaning of a code on one axis ("source",
// "intelligence" or "handling"), or "" if the code is not in the scheme.
func (s Scheme) Meaning(axis, code string) string {
	for _, c := range s.axis(axis) {
		if c.Code == code {
			return c.Meaning
		}
	}
	return ""
}

func (s Scheme) axis(axis string) []Code {
	g := Gradings[s]
	switch axis {
	case "source":
		return g.Source
	case "intelligence":
		return g.Intelligence
	case "handling":
		return g.Handling
	}
	return nil
}

func (s Scheme) allowed(axis string) []string {
	var out []string
	for _, c := range s.axis(axis) {
		out = append(out, c.Code+" ("+c.Meaning+")")
	}
	return out
}

// Grading is a graded assessment under an explicit scheme.
type Grading struct {
	Scheme       Scheme
	Source       string
	Intelligence string
	Handling     string
}

// Basis distinguishes facts from personal assessments (MoU Annex A,
// "Accuracy").
type Basis string

const (
	BasisFact       Basis = "fact"
	BasisAssessment Basis = "assessment"
)

// Bases lists the allowed bases.
var Bases = []Basis{BasisFact, BasisAssessment}

// DataSubject is a category of data subject under DPA 2018 Part 3, s.38(3)
// as the MoU Annex A ("Data handling") requires it to be recorded.
type DataSubject string

// DataSubjects lists the categories in canonical order.
var DataSubjects = []DataSubject{"suspected", "convicted", "victim", "witness", "other"}

// Purpose is an approved purpose for sharing (MoU Annex A "Purpose";
// Statement of Common Principles, the purposes for which prison information
// may be passed to law enforcement).
type Purpose string

// Purposes lists the approved purposes with their meaning.
var Purposes = []Code{
	{"crime", "prevention, detection, investigation or prosecution of crime"},
	{"national-security", "national security or public safety"},
	{"prison-security", "prison security, good order and discipline"},
	{"service-threats", "threats to the safety, security and stability of prison and probation services"},
	{"corruption-prison", "corruption offences and related criminality in prison"},
	{"corruption-probation", "corruption offences and related criminality in probation and the community"},
	{"risk-management", "assessing and managing the risk a prisoner poses"},
}

// Label is the handling label of a package. Its canonical form (Canonical)
// is what is signed inside the envelope and compared byte for byte.
type Label struct {
	Classification Classification
	Descriptor     string // optional, OFFICIAL-SENSITIVE only
	Caveat         string // optional
	Grading        Grading
	// Authorisation is the reference of the authorisation that 5x5x5
	// handling code 2 requires (recorded with the dissemination).
	Authorisation string
	// Conditions is the text that 3x5x2 handling code C requires; it
	// travels inside the envelope with the package.
	Conditions  string
	Basis       Basis
	Subjects    []DataSubject // data-subject categories, canonical order
	Purpose     Purpose
	Sanitised   bool
	SanitisedBy string // optional: who protected source and tactic (MoU 6.1)
	Originator  string // agency id
	Reference   string // the originator's package reference
	// Marked is the legacy marking the package was marked with when a
	// legacy-marking table read it as Classification ("RESTRICTED");
	// empty for a current marking. It is not part of the canonical form:
	// the sending gateway records the mapping (policy trace, audit) and
	// signs the classification it was read as.
	Marked  string
	Created time.Time
	Review  time.Time // optional review or expiry date (zero if none)
}

// LabelVersion is the only version of the canonical form so far.
const LabelVersion = "1"

// LabelError says which label field is wrong, what it held and what would
// have been accepted.
type LabelError struct {
	Field   string
	Value   string
	Reason  string
	Allowed []string
}

func (e *LabelError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "label field %q", e.Field)
	if e.Value != "" {
		fmt.Fprintf(&b, " (%q)", e.Value)
	}
	b.WriteString(" ")
	b.WriteString(e.Reason)
	if len(e.Allowed) > 0 {
		b.WriteString("; allowed: ")
		b.WriteString(strings.Join(e.Allowed, ", "))
	}
	return b.String()
}

func fieldErr(field, value, reason string, allowed ...string) *LabelError {
	return &LabelError{Field: field, Value: value, Reason: reason, Allowed: allowed}
}

func strs[T ~string](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = string(x)
	}
	return out
}

func codeList(cs []Code) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Code + " (" + c.Meaning + ")"
	}
	return out
}

// Validate checks that the label is complete and consistent: the fields the
// MoU Annex A requires of every shared record are present (classification,
// grading, basis, data subjects, purpose), every value is one of the allowed
// values, and fields that belong to another scheme or classification are
// absent. Whether a handling code permits a given dissemination is the
// policy's business, not the label's.
func (l *Label) Validate() error { return l.validate(true) }

// ValidatePresent checks only the fields that are set, for a label that is
// still being completed (a manifest whose created time the sending tool
// fills in).
func (l *Label) ValidatePresent() error { return l.validate(false) }

func (l *Label) validate(complete bool) error {
	if l.Classification == "" {
		if !complete {
			goto descriptor
		}
		return fieldErr("classification", "", "is required", strs(Classifications)...)
	}
	if !slices.Contains(Classifications, l.Classification) {
		return fieldErr("classification", string(l.Classification), "is not a classification", strs(Classifications)...)
	}
descriptor:
	if l.Descriptor != "" {
		if !slices.Contains(Descriptors, l.Descriptor) {
			return fieldErr("descriptor", l.Descriptor, "is not a descriptor", Descriptors...)
		}
		if l.Classification != OfficialSensitive && (complete || l.Classification != "") {
			return fieldErr("descriptor", l.Descriptor, "may only qualify OFFICIAL-SENSITIVE")
		}
	}
	if l.Caveat != "" && !slices.Contains(Caveats, l.Caveat) {
		return fieldErr("caveat", l.Caveat, "is not a national caveat", Caveats...)
	}
	if err := l.Grading.validate(complete); err != nil {
		return err
	}
	if l.Authorisation != "" {
		if l.Grading.Scheme != Scheme5x5x5 {
			return fieldErr("authorisation", l.Authorisation, "belongs to the 5x5x5 scheme (handling code 2); 3x5x2 uses conditions")
		}
		if !isRef(l.Authorisation) {
			return fieldErr("authorisation", l.Authorisation, "must be 1 to 64 letters, digits or - _ . /")
		}
	}
	if l.Conditions != "" {
		if l.Grading.Scheme != Scheme3x5x2 || l.Grading.Handling != "C" {
			return fieldErr("conditions", "", "belongs to 3x5x2 handling code C only")
		}
		if err := checkText("conditions", l.Conditions, 2000); err != nil {
			return err
		}
	}
	if l.Basis == "" && complete {
		return fieldErr("basis", "", "is required (MoU Annex A: distinguish facts from personal assessments)", strs(Bases)...)
	}
	if l.Basis != "" && !slices.Contains(Bases, l.Basis) {
		return fieldErr("basis", string(l.Basis), "is not a basis", strs(Bases)...)
	}
	if len(l.Subjects) == 0 && complete {
		return fieldErr("subjects", "", "is required: at least one category of data subject", strs(DataSubjects)...)
	}
	for i, s := range l.Subjects {
		if !slices.Contains(DataSubjects, s) {
			return fieldErr("subjects", string(s), "is not a data-subject category", strs(DataSubjects)...)
		}
		if slices.Contains(l.Subjects[:i], s) {
			return fieldErr("subjects", string(s), "is listed twice")
		}
	}
	if l.Purpose == "" && complete {
		return fieldErr("purpose", "", "is required", codeList(Purposes)...)
	}
	if l.Purpose != "" && !isPurpose(l.Purpose) {
		return fieldErr("purpose", string(l.Purpose), "is not an approved purpose", codeList(Purposes)...)
	}
	if l.SanitisedBy != "" {
		if !l.Sanitised {
			return fieldErr("sanitised-by", l.SanitisedBy, "is set but sanitised is no")
		}
		if !isRef(l.SanitisedBy) {
			return fieldErr("sanitised-by", l.SanitisedBy, "must be 1 to 64 letters, digits or - _ . /")
		}
	}
	if l.Originator == "" && complete {
		return fieldErr("originator", "", "is required: the id of the originating agency")
	}
	if l.Originator != "" && !isAgencyID(l.Originator) {
		return fieldErr("originator", l.Originator, "must be an agency id: 1 to 64 lower-case letters, digits and hyphens")
	}
	if l.Reference == "" && complete {
		return fieldErr("reference", "", "is required: the originator's package reference")
	}
	if l.Reference != "" && !isRef(l.Reference) {
		return fieldErr("reference", l.Reference, "must be 1 to 64 letters, digits or - _ . /")
	}
	if l.Created.IsZero() && complete {
		return fieldErr("created", "", "is required: an RFC 3339 UTC time such as 2026-11-23T10:00:00Z")
	}
	if !l.Review.IsZero() && !l.Created.IsZero() && !l.Review.After(l.Created) {
		return fieldErr("review", l.Review.Format(dateLayout), "must be after the created date")
	}
	return nil
}

func (g Grading) validate(complete bool) error {
	if g.Scheme == "" && !complete {
		return nil
	}
	if g.Scheme == "" {
		return fieldErr("grading", "", "is required: the grading scheme", string(Scheme5x5x5), string(Scheme3x5x2))
	}
	if _, ok := Gradings[g.Scheme]; !ok {
		return fieldErr("grading", string(g.Scheme), "is not a grading scheme", string(Scheme5x5x5), string(Scheme3x5x2))
	}
	for _, ax := range []struct{ name, val string }{
		{"source", g.Source}, {"intelligence", g.Intelligence}, {"handling", g.Handling},
	} {
		if ax.val == "" && !complete {
			continue
		}
		if ax.val == "" {
			return fieldErr(ax.name, "", "is required by the "+string(g.Scheme)+" grading", g.Scheme.allowed(ax.name)...)
		}
		if g.Scheme.Meaning(ax.name, ax.val) == "" {
			return fieldErr(ax.name, ax.val, "is not a "+string(g.Scheme)+" "+ax.name+" code", g.Scheme.allowed(ax.name)...)
		}
	}
	return nil
}

func isPurpose(p Purpose) bool {
	for _, c := range Purposes {
		if c.Code == string(p) {
			return true
		}
	}
	return false
}

// isAgencyID reports whether s is a directory id: lower-case letters,
// digits and inner hyphens, at most 64 bytes.
func isAgencyID(s string) bool {
	if s == "" || len(s) > 64 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// IsAgencyID reports whether s is well-formed as an agency id.
func IsAgencyID(s string) bool { return isAgencyID(s) }

func isRef(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_./", c) >= 0) {
			return false
		}
	}
	return true
}

// checkText accepts printable text without control characters, so that it
// can travel as a quoted string in a header.
func checkText(field, s string, max int) error {
	if len(s) > max {
		return fieldErr(field, "", fmt.Sprintf("is longer than %d bytes", max))
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return fieldErr(field, "", "contains a control character or invalid UTF-8")
		}
	}
	return nil
}

// Describe returns a few human lines explaining the label, for the CLI and
// the receiving side's delivered message.
func (l *Label) Describe() []string {
	g := l.Grading
	cls := string(l.Classification)
	if l.Descriptor != "" {
		cls += " " + l.Descriptor
	}
	if l.Caveat != "" {
		cls += " " + l.Caveat
	}
	lines := []string{
		"classification: " + cls,
		fmt.Sprintf("grading: %s source %s (%s), intelligence %s (%s), handling %s (%s)",
			g.Scheme, g.Source, g.Scheme.Meaning("source", g.Source),
			g.Intelligence, g.Scheme.Meaning("intelligence", g.Intelligence),
			g.Handling, g.Scheme.Meaning("handling", g.Handling)),
	}
	if l.Authorisation != "" {
		lines = append(lines, "authorisation: "+l.Authorisation)
	}
	if l.Conditions != "" {
		lines = append(lines, "conditions: "+l.Conditions)
	}
	lines = append(lines,
		"basis: "+string(l.Basis),
		"data subjects: "+strings.Join(strs(l.Subjects), ", "),
		"purpose: "+string(l.Purpose),
	)
	san := "no"
	if l.Sanitised {
		san = "yes"
		if l.SanitisedBy != "" {
			san += " (by " + l.SanitisedBy + ")"
		}
	}
	lines = append(lines, "sanitised: "+san,
		"originator: "+l.Originator+", reference "+l.Reference,
		"created: "+l.Created.UTC().Format(time.RFC3339))
	if !l.Review.IsZero() {
		lines = append(lines, "review by: "+l.Review.Format(dateLayout))
	}
	return lines
}

// Equal reports whether two labels have the same canonical form.
func (l *Label) Equal(o *Label) bool { return l.Canonical() == o.Canonical() }

// SubjectPrefix is the marking that goes at the start of a mail subject,
// as UK government mail carries it: "OFFICIAL-SENSITIVE PERSONAL".
func (c Classification) SubjectPrefix(descriptor string) string {
	s := string(c)
	if descriptor != "" {
		s += " " + descriptor
	}
	return "[" + s + "]"
}
