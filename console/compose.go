package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/policy"
)

// Preview is the sharing policy's decision on a draft, for people: where
// it goes and by which rule, what is refused or held and how to fix it,
// and the full trace with each rule's citation.
type Preview struct {
	Problems  []Field           `json:"problems"`
	Outcome   string            `json:"outcome"`
	Goes      []PreviewDest     `json:"goes"`
	Refused   []PreviewStop     `json:"refused"`
	Held      []PreviewStop     `json:"held"`
	Denied    []PreviewStop     `json:"denied"`
	Deadlines []policy.Deadline `json:"deadlines"`
	Trace     []policy.Step     `json:"trace"`
	Decision  policy.Decision   `json:"decision"`
}

// PreviewDest is one agency the package goes to.
type PreviewDest struct {
	Agency    string    `json:"agency"`
	Name      string    `json:"name"`
	Mailboxes []string  `json:"mailboxes"`
	Priority  string    `json:"priority"`
	Rules     []RuleRef `json:"rules"`
}

// RuleRef is a rule and its citation.
type RuleRef struct {
	ID     string `json:"id"`
	Source string `json:"source"`
}

// PreviewStop is an agency (or the whole package) refused or held.
type PreviewStop struct {
	Agency string `json:"agency,omitempty"`
	Name   string `json:"name,omitempty"`
	Rule   string `json:"rule"`
	Source string `json:"source"`
	Reason string `json:"reason"`
	Fix    string `json:"fix,omitempty"`
}

// fixes say, for the rules that refuse or hold, what the sender can do.
var fixes = map[string]string{
	"label-required":           "Complete the label: classification, grading, basis, data subjects and purpose are all needed.",
	"purpose-approved":         "Choose one of the approved purposes.",
	"classification-ceiling":   "SECRET and above cannot go by secure email: use the accredited channel. Otherwise check the classification.",
	"uk-eea-only":              "Remove the recipient outside the UK and EEA.",
	"handling-code":            "Check the handling code: give the authorisation reference for 5x5x5 code 2, the conditions for 3x5x2 C; codes 4 and 5 keep it within your agency or with the originator.",
	"sanitised-to-disseminate": "Sanitise the package (protect source and tactic), then mark it sanitised.",
	"trained-recipients":       "The mailbox has no current data-protection training record: a supervisor releases it once the training is recorded.",
	"no-onward-disclosure":     "Obtain the originator's consent before passing it on.",
	"known-recipient":          "Choose recipients from the directory.",
	"sender-is-from":           "You may send only for your own agency.",
}

func (s *Server) ruleSources() map[string]string {
	out := map[string]string{}
	for _, r := range s.opt.Gateway.Policy().Policy().Rules() {
		out[r.ID()] = r.Source()
	}
	return out
}

func (s *Server) agencyName(id string) string {
	if a := s.cfg.Directory.Agency(id); a != nil {
		return a.Name
	}
	return id
}

// preview decides a draft and explains the decision.
func (s *Server) preview(ctx context.Context, d *Draft) Preview {
	m, probs := d.manifest(s.cfg, s.now())
	dec := s.opt.Gateway.Explain(ctx, m)
	src := s.ruleSources()
	for _, st := range dec.Trace {
		if st.Source != "" {
			src[st.Rule] = st.Source
		}
	}
	p := Preview{Problems: probs, Outcome: string(dec.Decision), Deadlines: dec.Deadlines, Trace: dec.Trace, Decision: dec}
	byAgency := map[string]int{}
	for _, dl := range dec.Deliveries {
		if _, ok := byAgency[dl.Agency]; !ok {
			byAgency[dl.Agency] = len(p.Goes)
			p.Goes = append(p.Goes, PreviewDest{Agency: dl.Agency, Name: s.agencyName(dl.Agency), Priority: string(policy.Normal)})
		}
	}
	for _, dl := range dec.Deliveries {
		pd := &p.Goes[byAgency[dl.Agency]]
		if !slices.Contains(pd.Mailboxes, dl.Mailbox) {
			pd.Mailboxes = append(pd.Mailboxes, dl.Mailbox)
		}
		if dl.Priority == policy.Immediate {
			pd.Priority = string(policy.Immediate)
		}
		if !slices.ContainsFunc(pd.Rules, func(r RuleRef) bool { return r.ID == dl.Rule }) {
			pd.Rules = append(pd.Rules, RuleRef{ID: dl.Rule, Source: src[dl.Rule]})
		}
	}
	for _, r := range dec.Refusals {
		p.Refused = append(p.Refused, PreviewStop{Agency: r.Agency, Name: s.agencyName(r.Agency), Rule: r.Rule, Source: src[r.Rule], Reason: r.Reason, Fix: fixes[r.Rule]})
	}
	for _, h := range dec.Holds {
		p.Held = append(p.Held, PreviewStop{Agency: h.Agency, Name: s.agencyName(h.Agency), Rule: h.Rule, Source: src[h.Rule], Reason: h.Reason, Fix: fixes[h.Rule]})
	}
	for _, st := range dec.Trace {
		if st.Effect == policy.EffectDeny {
			p.Denied = append(p.Denied, PreviewStop{Rule: st.Rule, Source: st.Source, Reason: st.Detail, Fix: fixes[st.Rule]})
		}
	}
	return p
}

// composeData is what the compose page shows.
type composeData struct {
	Form      url.Values
	Problems  map[string]string
	Preview   *Preview
	Agencies  []*config.Agency
	Estabs    []*config.Agency
	Gradings  map[envelope.Scheme]envelope.GradingCodes
	Classes   []envelope.Classification
	Descs     []string
	Purposes  []envelope.Code
	DSubjects []envelope.DataSubject
	Roles     []envelope.Code
	Flags     []envelope.Code
	Risks     []envelope.Code
	Topics    []envelope.Code
	Rows      []int
	Posts     []postChoice
	Uploads   []*upload
	MaxUpload int64
}

// postChoice is a post the directory declares at some establishment.
type postChoice struct{ ID, Name string }

func (s *Server) composeData(f url.Values, ss *session) composeData {
	cd := composeData{Form: f, Problems: map[string]string{}, Gradings: envelope.Gradings, Classes: envelope.Classifications,
		Descs: envelope.Descriptors, Purposes: envelope.Purposes, DSubjects: envelope.DataSubjects, Roles: envelope.Roles,
		Flags: envelope.Flags, Risks: envelope.Risks, Topics: envelope.Topics, MaxUpload: s.cfg.Limits.MessageBytes}
	for i := 0; i < subjectRows; i++ {
		cd.Rows = append(cd.Rows, i)
	}
	for _, a := range s.cfg.Directory.Agencies {
		if a.ID != s.cfg.Agency {
			cd.Agencies = append(cd.Agencies, a)
		}
		if !a.Kind.Police() {
			cd.Estabs = append(cd.Estabs, a)
		}
	}
	seen := map[string]bool{}
	for _, a := range cd.Estabs {
		for _, p := range a.Posts {
			if !seen[p.ID] {
				seen[p.ID] = true
				cd.Posts = append(cd.Posts, postChoice{ID: p.ID, Name: p.Name})
			}
		}
	}
	sort.Slice(cd.Posts, func(i, j int) bool { return cd.Posts[i].Name < cd.Posts[j].Name })
	sort.Slice(cd.Agencies, func(i, j int) bool { return cd.Agencies[i].Name < cd.Agencies[j].Name })
	sort.Slice(cd.Estabs, func(i, j int) bool { return cd.Estabs[i].Name < cd.Estabs[j].Name })
	ss.mu.Lock()
	for _, id := range f["upload"] {
		if u := ss.uploads[id]; u != nil {
			cd.Uploads = append(cd.Uploads, u)
		}
	}
	ss.mu.Unlock()
	return cd
}

func (s *Server) composePage(w http.ResponseWriter, r *http.Request, ss *session) {
	f := url.Values{
		"classification": {string(envelope.OfficialSensitive)}, "grading": {string(envelope.Scheme5x5x5)},
		"basis": {"assessment"}, "sanitised": {"yes"},
		"reference": {strings.ToUpper(s.cfg.Agency) + "-" + s.now().UTC().Format("20060102-150405")},
	}
	s.render(w, r, ss, http.StatusOK, "compose", "Compose a package", s.composeData(f, ss), "", "")
}

// previewFragment returns the decision as an HTML fragment for the live
// preview (compose.js puts it in the page's live region).
func (s *Server) previewFragment(w http.ResponseWriter, r *http.Request, ss *session) {
	p := s.preview(r.Context(), draftFromForm(r.PostForm))
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := s.pages.t["compose"].ExecuteTemplate(w, "preview", &p); err != nil {
		s.log.Error("console: preview not rendered", "err", err)
	}
}

func (s *Server) sendForm(w http.ResponseWriter, r *http.Request, ss *session) {
	d := draftFromForm(r.PostForm)
	if r.PostFormValue("op") == "preview" {
		p := s.preview(r.Context(), d)
		cd := s.composeData(r.PostForm, ss)
		cd.Preview = &p
		s.render(w, r, ss, http.StatusOK, "compose", "Compose a package", cd, "", "")
		return
	}
	pkg, reply, probs, err := s.send(r.Context(), ss, d)
	if err != nil || len(probs) > 0 {
		p := s.preview(r.Context(), d)
		cd := s.composeData(r.PostForm, ss)
		cd.Preview = &p
		if len(probs) == 0 {
			// Refused by the gateway: show every field problem too.
			_, probs = d.manifest(s.cfg, s.now())
		}
		for _, f := range probs {
			if _, dup := cd.Problems[f.Field]; !dup {
				cd.Problems[f.Field] = f.Message
			}
		}
		msg := "The package was not sent. "
		if err != nil {
			msg += err.Error()
		} else {
			msg += "Correct the fields marked below."
		}
		s.render(w, r, ss, http.StatusUnprocessableEntity, "compose", "Compose a package", cd, "", msg)
		return
	}
	_ = reply
	http.Redirect(w, r, "/sent/"+url.PathEscape(pkg)+"?sent=1", http.StatusSeeOther)
}

// send submits a draft through the gateway's intake. Problems with the
// draft's fields come back as fields, nothing submitted; the gateway's
// refusal comes back as the error.
func (s *Server) send(ctx context.Context, ss *session, d *Draft) (pkg, reply string, probs []Field, err error) {
	m, probs := d.manifest(s.cfg, s.now())
	// An incomplete label is the gateway's to refuse under label-required
	// (with the rule's citation); a value that cannot be written is not.
	hard := probs[:0:0]
	for _, p := range probs {
		if p.Field != "label" && !strings.Contains(p.Message, "is missing") {
			hard = append(hard, p)
		}
	}
	if len(hard) > 0 {
		return "", "", hard, nil
	}
	var ups []*upload
	ss.mu.Lock()
	for _, id := range d.Uploads {
		u := ss.uploads[id]
		if u == nil {
			ss.mu.Unlock()
			return "", "", []Field{{"attach", "an attachment is no longer held (the session was renewed?): upload it again"}}, nil
		}
		ups = append(ups, u)
	}
	ss.mu.Unlock()
	rcpts := d.recipients(s.cfg.Directory)
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeMessage(pw, d, m, ss.user.Address, rcpts, ups, s.now(), s.cfg.Agency+".conduit"))
	}()
	pkg, reply, err = s.opt.Gateway.Submit(ctx, ss.user, rcpts, pr)
	pr.CloseWithError(errors.New("submission ended"))
	if err != nil {
		var re replyError
		if errors.As(err, &re) {
			code, enh := re.Reply()
			return "", "", nil, fmt.Errorf("%s (%d %s)", re.Error(), code, enh)
		}
		s.log.Error("console: submission failed", "user", ss.user.Name, "err", err)
		return "", "", nil, errors.New("the gateway could not take the package now; nothing was sent, try again shortly")
	}
	ss.mu.Lock()
	for _, id := range d.Uploads {
		if u := ss.uploads[id]; u != nil {
			u.spool.Close()
			delete(ss.uploads, id)
		}
	}
	ss.mu.Unlock()
	s.log.Info("console: package submitted", "user", ss.user.Name, "package", pkg, "attachments", len(ups))
	return pkg, reply, nil, nil
}

// replyError is the gateway's refusal of a submission, with its SMTP
// reply code.
type replyError interface {
	error
	Reply() (code int, enhanced string)
}

// maxUploads bounds the attachments a session holds at once.
const maxUploads = 20

// apiUpload streams one attachment (the raw request body) into an
// encrypted spool held with the session; nothing reaches the disk in
// clear.
func (s *Server) apiUpload(w http.ResponseWriter, r *http.Request, ss *session) {
	name := r.Header.Get("X-Filename")
	if n, err := url.PathUnescape(name); err == nil {
		name = n
	}
	name = filepath.Base(strings.TrimSpace(name))
	if name == "" || name == "." || name == "/" || strings.ContainsAny(name, "\r\n\"") || len(name) > 200 {
		writeError(w, http.StatusBadRequest, "give the file's name in the X-Filename header (URL-encoded, up to 200 characters)")
		return
	}
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || strings.HasPrefix(mt, "multipart/") {
		ct = "application/octet-stream"
	}
	ss.mu.Lock()
	n := len(ss.uploads)
	ss.mu.Unlock()
	if n >= maxUploads {
		writeError(w, http.StatusConflict, fmt.Sprintf("at most %d attachments per package", maxUploads))
		return
	}
	limit := s.cfg.Limits.MessageBytes
	sp, err := envelope.NewSpool(s.spoolDir(), limit)
	if err != nil {
		s.log.Error("console: spool", "err", err)
		writeError(w, http.StatusServiceUnavailable, "the gateway cannot hold an upload now; try again shortly")
		return
	}
	if _, err := io.Copy(sp, r.Body); err != nil {
		sp.Close()
		if errors.Is(err, envelope.ErrTooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the attachment is larger than this gateway accepts (%d bytes)", limit))
			return
		}
		writeError(w, http.StatusBadRequest, "the upload was cut short: "+err.Error())
		return
	}
	if err := sp.Finish(); err != nil {
		sp.Close()
		writeError(w, http.StatusServiceUnavailable, "the upload could not be kept; try again")
		return
	}
	u := &upload{ID: randomToken()[:16], Name: name, Type: ct, Size: sp.Size(), spool: sp}
	ss.mu.Lock()
	ss.uploads[u.ID] = u
	ss.mu.Unlock()
	s.log.Info("console: attachment uploaded", "user", ss.user.Name, "bytes", u.Size)
	writeJSON(w, http.StatusCreated, map[string]any{"id": u.ID, "name": u.Name, "size": u.Size, "type": u.Type})
}

func (s *Server) apiDeleteUpload(w http.ResponseWriter, r *http.Request, ss *session) {
	ss.mu.Lock()
	u := ss.uploads[r.PathValue("id")]
	delete(ss.uploads, r.PathValue("id"))
	ss.mu.Unlock()
	if u == nil {
		writeError(w, http.StatusNotFound, "no such upload")
		return
	}
	u.spool.Close()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) apiExplain(w http.ResponseWriter, r *http.Request, ss *session) {
	d, err := DecodeDraft(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, s.preview(r.Context(), d))
}

func (s *Server) apiSend(w http.ResponseWriter, r *http.Request, ss *session) {
	d, err := DecodeDraft(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	pkg, reply, probs, err := s.send(r.Context(), ss, d)
	switch {
	case len(probs) > 0:
		writeJSON(w, http.StatusUnprocessableEntity, apiError{Error: "the draft has problems; nothing was sent", Fields: probs})
	case err != nil:
		writeError(w, http.StatusUnprocessableEntity, err.Error())
	default:
		writeJSON(w, http.StatusCreated, map[string]any{"package": pkg, "reply": reply, "decision": s.preview(r.Context(), d)})
	}
}

func (s *Server) apiSignIn(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name     string `json:"name"`
		Password string `json:"password"`
	}
	dec := jsonDecoder(w, r, 64<<10)
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "give {\"name\": ..., \"password\": ...}: "+err.Error())
		return
	}
	u, err := s.auth.signIn(req.Name, req.Password, remoteAddr(r))
	if err != nil {
		code := http.StatusUnauthorized
		if errors.Is(err, errThrottled) {
			code = http.StatusTooManyRequests
		}
		s.log.Warn("console API sign-in failed", "user", req.Name, "remote", remoteAddr(r))
		writeError(w, code, err.Error())
		return
	}
	s.sweep()
	ss := s.newSession(w, u)
	writeJSON(w, http.StatusCreated, map[string]any{"token": ss.id, "csrf": ss.csrf, "role": u.RoleOr(), "idle_timeout_seconds": int(s.idle / time.Second)})
}

func (s *Server) apiSignOut(w http.ResponseWriter, r *http.Request, ss *session) {
	s.endSession(w, ss)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) apiMe(w http.ResponseWriter, r *http.Request, ss *session) {
	writeJSON(w, http.StatusOK, map[string]any{"name": ss.user.Name, "address": ss.user.Address, "role": ss.role(), "agency": s.cfg.Agency, "csrf": ss.csrf})
}

func (s *Server) apiDirectory(w http.ResponseWriter, r *http.Request, ss *session) {
	type mb struct {
		Address  string `json:"address"`
		Function string `json:"function"`
		Holder   string `json:"holder,omitempty"`
	}
	type ag struct {
		ID        string `json:"id"`
		Name      string `json:"name"`
		Kind      string `json:"kind"`
		Region    string `json:"region,omitempty"`
		Mailboxes []mb   `json:"mailboxes"`
	}
	var out []ag
	for _, a := range s.cfg.Directory.Agencies {
		x := ag{ID: a.ID, Name: a.Name, Kind: string(a.Kind), Region: a.Region}
		for _, m := range a.Mailboxes {
			x.Mailboxes = append(x.Mailboxes, mb{m.Address, string(m.Function), m.Holder})
		}
		out = append(out, x)
	}
	writeJSON(w, http.StatusOK, map[string]any{"agencies": out, "roles": envelope.Roles, "flags": envelope.Flags, "risks": envelope.Risks, "topics": envelope.Topics, "purposes": envelope.Purposes, "gradings": envelope.Gradings})
}
