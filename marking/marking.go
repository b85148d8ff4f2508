// Package marking is in charge of reading the markings that the tools
// agencies already use put on a message: a Microsoft Purview sensitivity
// label (the msip_labels header Outlook writes), read through the
// administrator's table of label GUIDs, and the classification marking
// staff type in a subject line ("[OFFICIAL-SENSITIVE PERSONAL] ...",
// "OFFICIAL-SENSITIVE: ...", "... - OFFICIAL"). Such a marking says how
// sensitive a message is and nothing else; Questions says, field by field
// and in words a sender understands, what the handling label still needs.
//
// Every reader is a pure function of its input and a table.
package marking

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/conduit-gateway/conduit/envelope"
)

// Marking is what a Purview label or a subject marking says.
type Marking struct {
	Classification envelope.Classification
	// Marked is the legacy marking as written, when the legacy-marking
	// table read it as Classification.
	Marked     string
	Descriptor string
	Caveat     string
	// Source says where it was read, for replies and the trace: "the
	// subject line", "the sensitivity label OFFICIAL-SENSITIVE PERSONAL".
	Source string
}

// String is the marking as people write it.
func (m Marking) String() string {
	s := string(m.Classification)
	if m.Marked != "" {
		s = m.Marked + " (read as " + s + ")"
	}
	if m.Descriptor != "" {
		s += " " + m.Descriptor
	}
	if m.Caveat != "" {
		s += " " + m.Caveat
	}
	return s
}

// Error is a marking that cannot be read; the message is for the sender.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

// ErrConflict is wrapped when two markings on one message disagree.
var ErrConflict = errors.New("the message carries two different markings")

// Apply puts the marking into a label. A field the label already has must
// agree: a message marked one way in its Handling-Label header and another
// in its subject is refused, never reconciled by guessing.
func (m Marking) Apply(l *envelope.Label) error {
	set := func(field string, dst *string, v string) error {
		if v == "" {
			return nil
		}
		if *dst != "" && *dst != v {
			return fmt.Errorf("%w: the %s is %s in one place and %s in %s; send it again with one marking", ErrConflict, field, *dst, v, m.Source)
		}
		*dst = v
		return nil
	}
	c := string(l.Classification)
	if err := set("classification", &c, string(m.Classification)); err != nil {
		return err
	}
	l.Classification = envelope.Classification(c)
	if m.Marked != "" && l.Marked == "" {
		l.Marked = m.Marked
	}
	if err := set("descriptor", &l.Descriptor, m.Descriptor); err != nil {
		return err
	}
	return set("caveat", &l.Caveat, m.Caveat)
}

// question is one thing a marking cannot carry, in a sender's words.
type question struct {
	field string
	ask   string
}

// questions are asked in the label's field order (README, The handling
// label), each in the words of the agreements.
var questions = []question{
	{"classification", "how sensitive it is (classification): OFFICIAL or OFFICIAL-SENSITIVE"},
	{"grading", "the intelligence grading: which scheme (5x5x5 or 3x5x2), how reliable the source is, how the information is known, and the handling code (who it may go to)"},
	{"basis", "whether it is fact or an assessment (basis=fact or basis=assessment; MoU Annex A asks that facts be told apart from personal assessments)"},
	{"subjects", "who the people in it are, as data subjects: suspected, convicted, victim, witness or other (MoU Annex A)"},
	{"purpose", "why it is shared (purpose): crime, national-security, prison-security, service-threats, corruption-prison, corruption-probation or risk-management"},
	{"sanitised", "whether the source and the tactic used to gather it are protected (sanitised=yes or sanitised=no; MoU 6.1)"},
	{"authorisation", "the authorisation reference that handling code 2 needs (authorisation=...)"},
	{"conditions", "the conditions that 3x5x2 handling code C needs (conditions=\"...\")"},
	{"reference", "your reference for the package (reference=...)"},
}

// Questions lists, in a sender's words, what the label still lacks. The
// created time and the originator are left out: the gateway fills them in.
func Questions(l envelope.Label) []string {
	var out []string
	for _, q := range questions {
		missing := false
		switch q.field {
		case "classification":
			missing = l.Classification == ""
		case "grading":
			g := l.Grading
			missing = g.Scheme == "" || g.Source == "" || g.Intelligence == "" || g.Handling == ""
		case "basis":
			missing = l.Basis == ""
		case "subjects":
			missing = len(l.Subjects) == 0
		case "purpose":
			missing = l.Purpose == ""
		case "sanitised":
			// A label read from a marking has no sanitised field at all;
			// false is indistinguishable from "not said" here, so it is
			// asked whenever the label came from a marking (Refusal).
			missing = false
		case "authorisation":
			missing = l.Grading.Scheme == envelope.Scheme5x5x5 && l.Grading.Handling == "2" && l.Authorisation == ""
		case "conditions":
			missing = l.Grading.Scheme == envelope.Scheme3x5x2 && l.Grading.Handling == "C" && strings.TrimSpace(l.Conditions) == ""
		case "reference":
			missing = l.Reference == ""
		}
		if missing {
			out = append(out, q.ask)
		}
	}
	return out
}

// Refusal is the reply to a message whose marking came from a Purview
// label or its subject line and whose label is not complete: what was
// read, what is still needed field by field, and the header to send next
// time, with this message's marking already in it. The text is several
// lines (an SMTP multi-line reply) and holds no content of the message.
func Refusal(m Marking, l envelope.Label, sanitisedSaid bool) string {
	qs := Questions(l)
	if !sanitisedSaid {
		qs = append(qs, questions[5].ask)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Package refused, nothing was sent: %s marks it %s, which says how sensitive it is but not how it may be shared.\n", m.Source, m.String())
	b.WriteString("Please send it again saying also:\n")
	for i, q := range qs {
		fmt.Fprintf(&b, "  %d. %s\n", i+1, q)
	}
	b.WriteString("For example, add this header to the message (change the values to fit it):\n")
	b.WriteString("  " + example(l, m) + "\n")
	b.WriteString("and, for each person it is about, Conduit-Subject: role=staff; establishment=hmp-northgate (or post=lccm)")
	return b.String()
}

// example is a complete Handling-Label header carrying the marking read
// and whatever the label already has, with placeholders for the rest.
func example(l envelope.Label, m Marking) string {
	parts := []string{"v=1", "classification=" + quote(string(l.Classification))}
	if l.Classification == "" {
		parts[1] = "classification=OFFICIAL-SENSITIVE"
	}
	if l.Descriptor != "" {
		parts = append(parts, "descriptor="+l.Descriptor)
	}
	if l.Caveat != "" {
		parts = append(parts, "caveat="+quote(l.Caveat))
	}
	or := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	g := l.Grading
	parts = append(parts, "grading="+or(string(g.Scheme), "5x5x5"), "source="+or(g.Source, "B"),
		"intelligence="+or(g.Intelligence, "2"), "handling="+or(g.Handling, "1"))
	if l.Authorisation != "" {
		parts = append(parts, "authorisation="+l.Authorisation)
	}
	subjects := "suspected"
	if len(l.Subjects) > 0 {
		var ss []string
		for _, s := range l.Subjects {
			ss = append(ss, string(s))
		}
		subjects = quote(strings.Join(ss, ","))
	}
	parts = append(parts, "basis="+or(string(l.Basis), "assessment"), "subjects="+subjects,
		"purpose="+or(string(l.Purpose), "corruption-prison"), "sanitised=yes", "reference="+or(l.Reference, "YOUR-REF-0001"))
	return envelope.LabelHeader + ": " + strings.Join(parts, "; ")
}

func quote(s string) string {
	if strings.ContainsAny(s, " ,;\"") {
		return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
	}
	return s
}

// candidates are the markings a reader looks for, longest first: every
// current classification, every legacy marking of the table in force and
// of the built-in table (so that one outside the table in force is found
// and refused by name, never taken for something else).
func candidates(legacy envelope.LegacyMarkings) []string {
	var out []string
	for _, c := range envelope.Classifications {
		out = append(out, string(c))
	}
	out = append(out, "OFFICIAL SENSITIVE")
	for _, t := range []envelope.LegacyMarkings{legacy, envelope.DefaultLegacyMarkings} {
		for k := range t {
			if !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// classify maps a marking found in a message through the legacy table.
func classify(found string, legacy envelope.LegacyMarkings, source string) (Marking, error) {
	if legacy == nil {
		legacy = envelope.DefaultLegacyMarkings
	}
	c, err := legacy.Map(found)
	if err != nil {
		return Marking{}, &Error{Msg: fmt.Sprintf("%s is marked %s, which is not a classification nor a legacy marking in this gateway's legacy-marking table; use OFFICIAL or OFFICIAL-SENSITIVE", source, envelope.NormalizeMarking(found))}
	}
	m := Marking{Classification: c, Source: source}
	if !envelope.IsCurrent(found) {
		m.Marked = envelope.NormalizeMarking(found)
	}
	return m, nil
}

// Message is what intake reads a submitted message's marking from: the
// raw values of its Handling-Label, msip_labels and Subject headers.
type Message struct {
	Label, Purview, Subject string
}

// SanitisedSaid reports whether the Handling-Label header says whether
// the package is sanitised (a label read from a marking alone never does).
func (msg Message) SanitisedSaid() bool {
	return strings.Contains(strings.ToLower(msg.Label), "sanitised=")
}

// FromMessage reads a submitted message's marking: the Handling-Label
// header (complete, or partial, e.g. without its classification), the
// Purview sensitivity label and the subject marking, all through the
// tables in force. Every marking present must agree with the others; a
// field one of them gives and the header lacks is taken from it. from is
// the marking the classification was read from when the header did not
// give one (nil when it did, or when there is no classification at all).
func FromMessage(msg Message, legacy envelope.LegacyMarkings, purview PurviewTable) (l envelope.Label, from *Marking, err error) {
	if strings.TrimSpace(msg.Label) != "" {
		if l, err = envelope.ParseLabelPartialWith(msg.Label, legacy); err != nil {
			return l, nil, fmt.Errorf("the %s header is wrong: %w", envelope.LabelHeader, err)
		}
	}
	headerGave := l.Classification != ""
	pv, pvFound, err := FromPurview(msg.Purview, purview)
	if err != nil {
		return l, nil, err
	}
	sj, sjFound, err := FromSubject(msg.Subject, legacy)
	if err != nil {
		return l, nil, err
	}
	for _, mk := range []struct {
		m     Marking
		found bool
	}{{pv, pvFound}, {sj, sjFound}} {
		if !mk.found {
			continue
		}
		if err := mk.m.Apply(&l); err != nil {
			return l, nil, err
		}
		if !headerGave && from == nil {
			m := mk.m
			from = &m
		}
	}
	return l, from, nil
}
