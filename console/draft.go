package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
)

// Draft is a package as the compose form and the JSON API give it: the
// label field by field, the subjects, risk and topic, the addressed
// agencies, the body and the uploaded attachments.
type Draft struct {
	Title    string         `json:"title"`
	To       []string       `json:"to"`
	Label    DraftLabel     `json:"label"`
	Subjects []DraftSubject `json:"subjects,omitempty"`
	Risk     []string       `json:"risk,omitempty"`
	Topic    string         `json:"topic,omitempty"`
	Body     string         `json:"body,omitempty"`
	// Uploads are ids returned by POST /api/v1/uploads.
	Uploads []string `json:"uploads,omitempty"`
}

// DraftLabel is the handling label, one field per form field.
type DraftLabel struct {
	Classification string   `json:"classification"`
	Descriptor     string   `json:"descriptor,omitempty"`
	Caveat         string   `json:"caveat,omitempty"`
	Grading        string   `json:"grading"`
	Source         string   `json:"source"`
	Intelligence   string   `json:"intelligence"`
	Handling       string   `json:"handling"`
	Authorisation  string   `json:"authorisation,omitempty"`
	Conditions     string   `json:"conditions,omitempty"`
	Basis          string   `json:"basis"`
	Subjects       []string `json:"subjects"`
	Purpose        string   `json:"purpose"`
	Sanitised      bool     `json:"sanitised"`
	SanitisedBy    string   `json:"sanitised_by,omitempty"`
	Reference      string   `json:"reference"`
	Review         string   `json:"review,omitempty"`
}

// DraftSubject is one subject of the package, for routing; ID is the
// subject's identity, which travels only inside the envelope.
type DraftSubject struct {
	Role          string   `json:"role"`
	Establishment string   `json:"establishment,omitempty"`
	Region        string   `json:"region,omitempty"`
	Flags         []string `json:"flags,omitempty"`
	// Post is the post the subject holds at the establishment (lccm,
	// head-of-security), as the directory declares it.
	Post string `json:"post,omitempty"`
	ID   string `json:"id,omitempty"`
}

// Field is a problem with one field of a draft, for the form to show next
// to it (and the API to return).
type Field struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// maxDraft bounds a draft's JSON (the body travels in it; attachments are
// uploaded separately).
const maxDraft = 4 << 20

// DecodeDraft reads a draft's JSON strictly: an unknown field, a wrong
// type, trailing data or an oversized request is an error that says so.
func DecodeDraft(r io.Reader) (*Draft, error) {
	dec := json.NewDecoder(io.LimitReader(r, maxDraft+1))
	dec.DisallowUnknownFields()
	var d Draft
	if err := dec.Decode(&d); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return nil, fmt.Errorf("the request is not valid JSON (at byte %d): %v", se.Offset, err)
		case errors.As(err, &te):
			return nil, fmt.Errorf("field %q must be %s, not %s", te.Field, te.Type, te.Value)
		case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
			return nil, errors.New("the request is empty or cut short (or larger than 4 MiB)")
		}
		return nil, fmt.Errorf("the request is wrong: %v", err)
	}
	if dec.More() {
		return nil, errors.New("the request has data after its JSON object")
	}
	return &d, nil
}

// draftFromForm reads the compose form.
func draftFromForm(f url.Values) *Draft {
	d := &Draft{
		Title: f.Get("title"), To: f["to"], Risk: f["risk"], Topic: f.Get("topic"), Body: f.Get("body"), Uploads: f["upload"],
		Label: DraftLabel{
			Classification: f.Get("classification"), Descriptor: f.Get("descriptor"), Caveat: f.Get("caveat"),
			Grading: f.Get("grading"), Authorisation: f.Get("authorisation"), Conditions: f.Get("conditions"),
			Basis: f.Get("basis"), Subjects: f["datasubjects"], Purpose: f.Get("purpose"),
			Sanitised: f.Get("sanitised") == "yes", SanitisedBy: f.Get("sanitised_by"),
			Reference: f.Get("reference"), Review: f.Get("review"),
		},
	}
	suffix := "5"
	if d.Label.Grading == string(envelope.Scheme3x5x2) {
		suffix = "3"
	}
	d.Label.Source, d.Label.Intelligence, d.Label.Handling = f.Get("source"+suffix), f.Get("intelligence"+suffix), f.Get("handling"+suffix)
	for i := 0; i < subjectRows; i++ {
		n := fmt.Sprint(i)
		if role := f.Get("subject_role_" + n); role != "" {
			d.Subjects = append(d.Subjects, DraftSubject{Role: role, Establishment: f.Get("subject_est_" + n), Post: f.Get("subject_post_" + n), Flags: f["subject_flags_"+n]})
		}
	}
	return d
}

// subjectRows is how many subjects the form offers.
const subjectRows = 3

// labelFieldOf maps a label field to the form field that sets it.
var labelFieldOf = map[string]string{"subjects": "datasubjects", "sanitised-by": "sanitised_by"}

// quoteParam writes a label value as an RFC 2045 token or quoted string.
func quoteParam(v string) string {
	tok := v != ""
	for _, r := range v {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?=`, r) {
			tok = false
			break
		}
	}
	if tok {
		return v
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
}

// label builds the handling label: the label's own parser checks each
// value, so the form accepts exactly what the header form accepts.
func (d *Draft) label(originator string, now time.Time) (envelope.Label, []Field) {
	dl := d.Label
	var parts []string
	add := func(name, v string) {
		if v = strings.TrimSpace(v); v != "" {
			parts = append(parts, name+"="+quoteParam(v))
		}
	}
	add("v", envelope.LabelVersion)
	add("classification", dl.Classification)
	add("descriptor", dl.Descriptor)
	add("caveat", dl.Caveat)
	add("grading", dl.Grading)
	add("source", dl.Source)
	add("intelligence", dl.Intelligence)
	add("handling", dl.Handling)
	add("authorisation", dl.Authorisation)
	add("conditions", dl.Conditions)
	add("basis", dl.Basis)
	add("subjects", strings.Join(dl.Subjects, ","))
	add("purpose", dl.Purpose)
	if dl.Sanitised {
		add("sanitised", "yes")
		add("sanitised-by", dl.SanitisedBy)
	} else {
		add("sanitised", "no")
	}
	add("originator", originator)
	add("reference", dl.Reference)
	add("created", now.UTC().Truncate(time.Second).Format(time.RFC3339))
	add("review", dl.Review)
	raw := strings.Join(parts, "; ")
	l, err := envelope.ParseLabelPartial(raw)
	var probs []Field
	if err != nil {
		probs = append(probs, labelProblem(err, dl.Grading))
		return l, probs
	}
	if err := l.Validate(); err != nil {
		probs = append(probs, labelProblem(err, dl.Grading))
	}
	return l, probs
}

// labelProblem names the form field of a label error: the grading codes
// have a field per scheme (source5, source3...).
func labelProblem(err error, scheme string) Field {
	var le *envelope.LabelError
	if errors.As(err, &le) {
		f := le.Field
		switch f {
		case "source", "intelligence", "handling":
			sfx := "5"
			if scheme == string(envelope.Scheme3x5x2) {
				sfx = "3"
			}
			f += sfx
		default:
			if m, ok := labelFieldOf[f]; ok {
				f = m
			}
		}
		return Field{Field: f, Message: le.Error()}
	}
	return Field{Field: "label", Message: err.Error()}
}

// manifest builds the routing manifest of a draft and lists what is
// wrong with it, field by field.
func (d *Draft) manifest(cfg *config.Config, now time.Time) (*envelope.Manifest, []Field) {
	l, probs := d.label(cfg.Agency, now)
	m := &envelope.Manifest{From: cfg.Agency, Label: l, Topic: strings.TrimSpace(d.Topic)}
	for _, to := range d.To {
		a := cfg.Directory.Agency(to)
		switch {
		case a == nil:
			probs = append(probs, Field{"to", fmt.Sprintf("%q is not an agency in the directory", to)})
		case a.ID == cfg.Agency:
			probs = append(probs, Field{"to", "your own agency is not a recipient: use your internal mail"})
		case !slices.Contains(m.To, to):
			m.To = append(m.To, to)
		}
	}
	if len(d.To) == 0 {
		probs = append(probs, Field{"to", "choose at least one recipient agency"})
	}
	for _, r := range d.Risk {
		m.Risk = append(m.Risk, strings.TrimSpace(r))
	}
	for i, s := range d.Subjects {
		if strings.ContainsAny(s.Role+s.Establishment+s.Region+s.Post+strings.Join(s.Flags, "")+s.ID, ";\r\n\"") {
			probs = append(probs, Field{fmt.Sprintf("subject_role_%d", i), "a subject's fields must not contain ; \" or line breaks"})
			continue
		}
		est := cfg.Directory.Agency(s.Establishment)
		if s.Establishment != "" && est == nil {
			probs = append(probs, Field{fmt.Sprintf("subject_est_%d", i), fmt.Sprintf("%q is not an establishment in the directory", s.Establishment)})
		}
		if s.Post != "" {
			switch {
			case est == nil:
				probs = append(probs, Field{fmt.Sprintf("subject_post_%d", i), "a post is held at an establishment: choose the establishment too"})
			case est.Post(s.Post) == nil:
				probs = append(probs, Field{fmt.Sprintf("subject_post_%d", i), fmt.Sprintf("%s has no post %q; its posts: %s", est.Name, s.Post, strings.Join(est.PostIDs(), ", "))})
			}
		}
		m.Subjects = append(m.Subjects, envelope.Subject{Role: envelope.Role(s.Role), Establishment: s.Establishment, Region: s.Region, Flags: s.Flags, Post: s.Post, ID: s.ID})
	}
	if err := m.ValidateFacts(); err != nil && !(len(m.To) == 0 && strings.Contains(err.Error(), `"to"`)) {
		probs = append(probs, Field{"facts", err.Error()})
	}
	if strings.ContainsAny(d.Title, "\r\n") {
		probs = append(probs, Field{"title", "the title must be one line"})
	}
	return m, probs
}

// recipients are the intake mailboxes of the addressed agencies.
func (d *Draft) recipients(dir *config.Directory) []string {
	var out []string
	for _, id := range d.To {
		a := dir.Agency(id)
		if a == nil || len(a.Mailboxes) == 0 {
			continue
		}
		mb := a.Mailbox("intake")
		if mb == nil {
			mb = &a.Mailboxes[0]
		}
		out = append(out, mb.Address)
	}
	return out
}
