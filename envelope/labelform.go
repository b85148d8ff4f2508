package envelope

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
)

// LabelHeader is the name of the header field that carries the canonical
// label, inside the envelope and on a submitted message.
const LabelHeader = "Handling-Label"

const dateLayout = "2006-01-02"

// labelFields is the canonical field order. Every field of the label has
// exactly one name here, used by the header form, the YAML form and errors.
var labelFields = []string{
	"v", "classification", "descriptor", "caveat", "grading", "source", "intelligence",
	"handling", "authorisation", "conditions", "basis", "subjects", "purpose", "sanitised",
	"sanitised-by", "originator", "reference", "created", "review",
}

// Canonical returns the canonical one-line header form: the fields in the
// fixed order of labelFields, absent optional fields left out, "; " between
// parameters, values as RFC 2045 tokens where they are tokens and as quoted
// strings otherwise. The same label always gives the same bytes, so the form
// can be signed and compared.
func (l *Label) Canonical() string {
	var b strings.Builder
	b.WriteString("v=" + LabelVersion)
	add := func(name, val string) {
		if val == "" {
			return
		}
		b.WriteString("; ")
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(quoteValue(val))
	}
	add("classification", string(l.Classification))
	add("descriptor", l.Descriptor)
	add("caveat", l.Caveat)
	add("grading", string(l.Grading.Scheme))
	add("source", l.Grading.Source)
	add("intelligence", l.Grading.Intelligence)
	add("handling", l.Grading.Handling)
	add("authorisation", l.Authorisation)
	add("conditions", l.Conditions)
	add("basis", string(l.Basis))
	add("subjects", strings.Join(strs(l.Subjects), ","))
	add("purpose", string(l.Purpose))
	if l.Sanitised {
		add("sanitised", "yes")
	} else {
		add("sanitised", "no")
	}
	add("sanitised-by", l.SanitisedBy)
	add("originator", l.Originator)
	add("reference", l.Reference)
	if !l.Created.IsZero() {
		add("created", l.Created.UTC().Format(time.RFC3339))
	}
	if !l.Review.IsZero() {
		add("review", l.Review.Format(dateLayout))
	}
	return b.String()
}

func (l Label) String() string { return l.Canonical() }

// isTokenChar follows RFC 2045 section 5.1: any US-ASCII character except
// SPACE, CTLs and tspecials.
func isTokenChar(c byte) bool {
	return c > 0x20 && c < 0x7f && strings.IndexByte(`()<>@,;:\"/[]?=`, c) < 0
}

func quoteValue(v string) string {
	token := v != ""
	for i := 0; i < len(v) && token; i++ {
		token = isTokenChar(v[i])
	}
	if token {
		return v
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		if v[i] == '"' || v[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(v[i])
	}
	b.WriteByte('"')
	return b.String()
}

// ParseLabel parses a label in header form and validates it, mapping legacy
// markings with DefaultLegacyMarkings.
func ParseLabel(s string) (Label, error) {
	return ParseLabelWith(s, DefaultLegacyMarkings)
}

// ParseLabelWith parses a label in header form, mapping legacy
// classification markings with the given table, and validates it.
//
// The parser is strict: field names must be known and appear once, v=1 must
// come first, values must be allowed values. It accepts what marking tools
// may reasonably write beyond the canonical form: folded lines (RFC 5322
// section 2.2.3), any amount of white space around ";" and, for the created
// time, an unquoted value with colons.
func ParseLabelWith(s string, legacy LegacyMarkings) (Label, error) {
	if legacy == nil {
		legacy = DefaultLegacyMarkings
	}
	l, err := parseLabelFields(s, legacy)
	if err != nil {
		return l, err
	}
	return l, l.Validate()
}

// ParseLabelPartial parses a label in header form and checks the values
// present, but not that every required field is there: for a label still
// being completed (Seal fills in a missing created time).
func ParseLabelPartial(s string) (Label, error) {
	return ParseLabelPartialWith(s, DefaultLegacyMarkings)
}

// ParseLabelPartialWith is ParseLabelPartial mapping legacy markings with
// the given table (the configured one: intake's Handling-Label header).
func ParseLabelPartialWith(s string, legacy LegacyMarkings) (Label, error) {
	if legacy == nil {
		legacy = DefaultLegacyMarkings
	}
	l, err := parseLabelFields(s, legacy)
	if err != nil {
		return l, err
	}
	return l, l.ValidatePresent()
}

func parseLabelFields(s string, legacy LegacyMarkings) (Label, error) {
	var l Label
	params, err := splitParams(unfold(s))
	if err != nil {
		return l, err
	}
	if len(params) == 0 || params[0].name != "v" {
		return l, fieldErr("v", "", "must come first: the label starts with v="+LabelVersion)
	}
	seen := map[string]bool{}
	for _, p := range params {
		if seen[p.name] {
			return l, fieldErr(p.name, "", "appears twice")
		}
		seen[p.name] = true
		if err := l.set(p.name, p.value, legacy); err != nil {
			return l, err
		}
	}
	return l, nil
}

// set assigns one field from its text form; every form of the label (header,
// YAML, JSON) comes through here so that they accept exactly the same values.
func (l *Label) set(name, v string, legacy LegacyMarkings) error {
	switch name {
	case "v":
		if v != LabelVersion {
			return fieldErr("v", v, "is not a supported label version", LabelVersion)
		}
	case "classification":
		if IsCurrent(v) {
			l.Classification = Classification(NormalizeMarking(v))
			break
		}
		// A legacy marking is read only through the table in force (the
		// administrator's, DESIGN.md "The handling label": "mapped by a
		// configurable table, never guessed"); with no table here (the
		// YAML form) it waits for MapLegacy.
		l.Marked = NormalizeMarking(v)
		if legacy == nil {
			break
		}
		c, err := legacy.Map(v)
		if err != nil {
			return err
		}
		l.Classification = c
	case "descriptor":
		l.Descriptor = strings.ToUpper(v)
	case "caveat":
		l.Caveat = strings.ToUpper(v)
	case "grading":
		l.Grading.Scheme = Scheme(v)
	case "source":
		l.Grading.Source = strings.ToUpper(v)
	case "intelligence":
		l.Grading.Intelligence = strings.ToUpper(v)
	case "handling":
		l.Grading.Handling = strings.ToUpper(v)
	case "authorisation":
		l.Authorisation = v
	case "conditions":
		l.Conditions = v
	case "basis":
		l.Basis = Basis(v)
	case "subjects":
		l.Subjects = l.Subjects[:0]
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				return fieldErr("subjects", v, "has an empty entry", strs(DataSubjects)...)
			}
			ds := DataSubject(s)
			if !slices.Contains(DataSubjects, ds) {
				return fieldErr("subjects", s, "is not a data-subject category", strs(DataSubjects)...)
			}
			if slices.Contains(l.Subjects, ds) {
				return fieldErr("subjects", s, "is listed twice")
			}
			l.Subjects = append(l.Subjects, ds)
		}
		// Canonical order, so that "witness,suspected" and
		// "suspected,witness" are the same label.
		slices.SortFunc(l.Subjects, func(a, b DataSubject) int {
			return slices.Index(DataSubjects, a) - slices.Index(DataSubjects, b)
		})
	case "purpose":
		l.Purpose = Purpose(v)
	case "sanitised":
		switch strings.ToLower(v) {
		case "yes", "true":
			l.Sanitised = true
		case "no", "false":
			l.Sanitised = false
		default:
			return fieldErr("sanitised", v, "must say whether source and tactic are protected", "yes", "no")
		}
	case "sanitised-by":
		l.SanitisedBy = v
	case "originator":
		l.Originator = v
	case "reference":
		l.Reference = v
	case "created":
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return fieldErr("created", v, "is not an RFC 3339 time such as 2026-11-23T10:00:00Z")
		}
		if t.Nanosecond() != 0 {
			return fieldErr("created", v, "has fractions of a second; the label carries whole seconds")
		}
		l.Created = t.UTC()
	case "review":
		t, err := time.Parse(dateLayout, v)
		if err != nil {
			return fieldErr("review", v, "is not a date such as 2027-05-23")
		}
		l.Review = t
	default:
		return fieldErr(name, "", "is not a label field", labelFields...)
	}
	return nil
}

type param struct{ name, value string }

// unfold removes the CRLF (or LF) before folding white space.
func unfold(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return unfolder.Replace(s)
}

// unfolder is built once: building a Replacer costs more than using it,
// and Open unfolds a dozen header values.
var unfolder = strings.NewReplacer("\n ", " ", "\n\t", " ")

func isWSP(c byte) bool { return c == ' ' || c == '\t' }

// splitParams reads "name=value; name=value". It is a parser of outside
// input (submitted mail headers, CLI arguments): every malformation is an
// error that says where.
func splitParams(s string) ([]param, error) {
	var out []param
	i := 0
	syntax := func(why string) error {
		return fieldErr("label", "", fmt.Sprintf("is malformed at byte %d: %s", i, why))
	}
	for {
		for i < len(s) && isWSP(s[i]) {
			i++
		}
		if i == len(s) {
			if len(out) > 0 {
				// A trailing ";" was consumed; allow it, as MIME does.
				return out, nil
			}
			return nil, fieldErr("label", "", "is empty")
		}
		start := i
		for i < len(s) && (s[i] >= 'a' && s[i] <= 'z' || s[i] >= '0' && s[i] <= '9' || s[i] == '-') {
			i++
		}
		if i == start {
			return nil, syntax("expected a lower-case field name")
		}
		name := s[start:i]
		if i == len(s) || s[i] != '=' {
			return nil, syntax(fmt.Sprintf("expected '=' after %q", name))
		}
		i++
		var val string
		if i < len(s) && s[i] == '"' {
			i++
			var b strings.Builder
			closed := false
			for i < len(s) {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					b.WriteByte(s[i+1])
					i += 2
					continue
				}
				if c == '"' {
					closed = true
					i++
					break
				}
				if c < 0x20 || c == 0x7f {
					return nil, syntax("control character in quoted value")
				}
				b.WriteByte(c)
				i++
			}
			if !closed {
				return nil, syntax(fmt.Sprintf("unterminated quoted value for %q", name))
			}
			val = b.String()
		} else {
			start := i
			for i < len(s) && (isTokenChar(s[i]) || s[i] == ':') {
				i++
			}
			if i == start {
				return nil, syntax(fmt.Sprintf("empty value for %q", name))
			}
			val = s[start:i]
		}
		out = append(out, param{name, val})
		for i < len(s) && isWSP(s[i]) {
			i++
		}
		if i == len(s) {
			return out, nil
		}
		if s[i] != ';' {
			why := fmt.Sprintf("expected ';' after the value of %q", name)
			switch {
			case s[i] == ',' || s[i] == ' ':
				// subjects=suspected,witness: a list is one value, so
				// it must be quoted.
				whole := val + s[i:]
				if j := strings.IndexByte(whole, ';'); j >= 0 {
					whole = whole[:j]
				}
				whole = strings.TrimSpace(whole)
				why += fmt.Sprintf(` (found %q: a value holding commas or spaces, such as a list of data subjects, must be quoted: %s=%q)`, s[i], name, whole)
			default:
				why += fmt.Sprintf(" (found %q: a value holding anything but letters, digits and - . _ must be quoted)", s[i])
			}
			return nil, syntax(why)
		}
		i++
	}
}

// MarshalJSON writes the label as its canonical header form, so that the
// JSON manifest inside the envelope carries exactly the signed bytes.
func (l Label) MarshalJSON() ([]byte, error) { return json.Marshal(l.Canonical()) }

// UnmarshalJSON reads the canonical header form and validates it.
func (l *Label) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("label: %w", err)
	}
	parsed, err := ParseLabel(s)
	if err != nil {
		return err
	}
	*l = parsed
	return nil
}

// yamlLabel is the YAML manifest form of the label (docs/design.md, "The
// package manifest"): the same field names as the header form, with
// subjects as a list and sanitised as a boolean. Grading codes may be
// written as YAML numbers.
type yamlLabel map[string]any

// UnmarshalYAML reads the YAML form. It does not require every field
// (a manifest usually leaves created to the sending tool); callers
// Validate before use.
func (l *Label) UnmarshalYAML(unmarshal func(any) error) error {
	var m yamlLabel
	if err := unmarshal(&m); err != nil {
		return err
	}
	var parsed Label
	for _, name := range labelFields {
		raw, ok := m[name]
		if !ok {
			continue
		}
		delete(m, name)
		v, err := yamlScalar(name, raw)
		if err != nil {
			return err
		}
		// nil: a legacy marking is mapped by the caller's table
		// (ParseManifestWith), never by a built-in one here.
		if err := parsed.set(name, v, nil); err != nil {
			return err
		}
	}
	for name := range m {
		return fieldErr(name, "", "is not a label field", labelFields...)
	}
	*l = parsed
	return nil
}

func yamlScalar(name string, raw any) (string, error) {
	switch v := raw.(type) {
	case string:
		return v, nil
	case bool:
		if v {
			return "yes", nil
		}
		return "no", nil
	case int, int64, uint64, float64:
		return fmt.Sprint(v), nil
	case time.Time:
		if name == "review" {
			return v.Format(dateLayout), nil
		}
		return v.UTC().Format(time.RFC3339), nil
	case []any:
		if name != "subjects" {
			break
		}
		parts := make([]string, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return "", fieldErr(name, fmt.Sprint(e), "entries must be words", strs(DataSubjects)...)
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	}
	return "", fieldErr(name, fmt.Sprint(raw), "has the wrong YAML type")
}

// MarshalYAML writes the YAML form in canonical field order.
func (l Label) MarshalYAML() (any, error) {
	out := yaml.MapSlice{}
	add := func(k string, v any) {
		if s, ok := v.(string); ok && s == "" {
			return
		}
		out = append(out, yaml.MapItem{Key: k, Value: v})
	}
	add("classification", string(l.Classification))
	add("descriptor", l.Descriptor)
	add("caveat", l.Caveat)
	add("grading", string(l.Grading.Scheme))
	add("source", l.Grading.Source)
	add("intelligence", l.Grading.Intelligence)
	add("handling", l.Grading.Handling)
	add("authorisation", l.Authorisation)
	add("conditions", l.Conditions)
	add("basis", string(l.Basis))
	add("subjects", strs(l.Subjects))
	add("purpose", string(l.Purpose))
	add("sanitised", l.Sanitised)
	add("sanitised-by", l.SanitisedBy)
	add("originator", l.Originator)
	add("reference", l.Reference)
	if !l.Created.IsZero() {
		add("created", l.Created.UTC().Format(time.RFC3339))
	}
	if !l.Review.IsZero() {
		add("review", l.Review.Format(dateLayout))
	}
	return out, nil
}
