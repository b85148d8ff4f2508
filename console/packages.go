package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/policy"
)

// Clock is a deadline the policy started, as people read it.
type Clock struct {
	Kind    string        `json:"kind"`
	Agency  string        `json:"agency"`
	Due     time.Time     `json:"due"`
	Left    time.Duration `json:"-"`
	Overdue bool          `json:"overdue"`
	Package string        `json:"package"`
	Note    string        `json:"note,omitempty"`
}

// SentDest is one destination of a sent package.
type SentDest struct {
	Agency     string   `json:"agency"`
	Name       string   `json:"name"`
	Item       int64    `json:"item"`
	State      string   `json:"state"` // queued, sent, delivered, held, failed, dropped
	Recipients []string `json:"recipients"`
	Attempts   int      `json:"attempts"`
	LastError  string   `json:"last_error,omitempty"`
	Reason     string   `json:"reason,omitempty"`
	Releaser   string   `json:"who_can_release,omitempty"`
	Delivered  []string `json:"delivered_to,omitempty"`
	// NoReceipts: the partner speaks plain PGP/MIME and sends no receipts.
	NoReceipts  bool      `json:"no_receipts,omitempty"`
	DeliveredAt time.Time `json:"delivered_at,omitzero"`
	Updated     time.Time `json:"updated"`
}

// SentPackage is one of the sender's packages.
type SentPackage struct {
	Package string        `json:"package"`
	Marking string        `json:"marking"`
	Created time.Time     `json:"created"`
	Dests   []SentDest    `json:"destinations"`
	Refused []audit.Event `json:"refused,omitempty"`
	Clocks  []Clock       `json:"clocks,omitempty"`
}

func (s *Server) clocks(ctx context.Context) ([]Clock, error) {
	ds, err := s.opt.Store.Deadlines(ctx, s.now(), false)
	if err != nil {
		return nil, err
	}
	now := s.now()
	var out []Clock
	for _, d := range ds {
		if d.Kind == policy.DeadlineRetention {
			continue
		}
		out = append(out, Clock{Kind: d.Kind, Agency: d.Agency, Due: d.Due, Left: d.Due.Sub(now), Overdue: now.After(d.Due), Package: d.PackageID, Note: d.Note})
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Overdue != out[j].Overdue {
			return out[i].Overdue
		}
		return out[i].Due.Before(out[j].Due)
	})
	return out, nil
}

// sentPackages lists the packages this user's mailbox submitted, newest
// first; with pkg set, only that one.
func (s *Server) sentPackages(ctx context.Context, ss *session, pkg string) ([]SentPackage, error) {
	items, err := s.opt.Store.List(ctx, store.Filter{PackageID: pkg, Limit: 1000})
	if err != nil {
		return nil, err
	}
	clocks, err := s.clocks(ctx)
	if err != nil {
		return nil, err
	}
	var out []SentPackage
	idx := map[string]int{}
	for _, it := range items {
		if !strings.EqualFold(it.Submitter, ss.user.Address) {
			continue
		}
		i, ok := idx[it.PackageID]
		if !ok {
			out = append(out, SentPackage{Package: it.PackageID, Marking: it.Marking, Created: it.Created})
			i = len(out) - 1
			idx[it.PackageID] = i
		}
		d := SentDest{Agency: it.Destination, Name: s.agencyName(it.Destination), Item: it.ID, State: string(it.State),
			Recipients: it.Recipients, Attempts: it.Attempts, LastError: it.LastError, Reason: it.Reason, Updated: it.Updated}
		d.NoReceipts = s.cfg.Directory.Agency(it.Destination).PlainPGPMIME()
		if it.State == store.OnHold {
			d.Releaser = "a supervisor or administrator of " + s.agencyName(s.cfg.Agency) + " (console: Held)"
		}
		out[i].Dests = append(out[i].Dests, d)
		if it.Created.Before(out[i].Created) {
			out[i].Created = it.Created
		}
	}
	for i := range out {
		p := &out[i]
		rs, err := s.opt.Store.Receipts(ctx, p.Package)
		if err != nil {
			return nil, err
		}
		for j := range p.Dests {
			for _, r := range rs {
				if r.Agency == p.Dests[j].Agency {
					p.Dests[j].State = "delivered"
					p.Dests[j].Delivered = r.Mailboxes
					p.Dests[j].DeliveredAt = r.Delivered
				}
			}
		}
		sort.Slice(p.Dests, func(a, b int) bool { return p.Dests[a].Agency < p.Dests[b].Agency })
		for _, c := range clocks {
			if c.Package == p.Package {
				p.Clocks = append(p.Clocks, c)
			}
		}
	}
	if pkg != "" && len(out) == 1 {
		evs, err := s.opt.Trail.Query(ctx, audit.Filter{Package: pkg, Kind: audit.Refused, Limit: 100})
		if err != nil {
			return nil, err
		}
		out[0].Refused = evs
	}
	return out, nil
}

func (s *Server) sentPage(w http.ResponseWriter, r *http.Request, ss *session) {
	ps, err := s.sentPackages(r.Context(), ss, "")
	if err != nil {
		s.fail(w, r, ss, err)
		return
	}
	s.render(w, r, ss, http.StatusOK, "sent", "Sent packages", ps, "", "")
}

func (s *Server) sentPackagePage(w http.ResponseWriter, r *http.Request, ss *session) {
	ps, err := s.sentPackages(r.Context(), ss, r.PathValue("pkg"))
	if err != nil {
		s.fail(w, r, ss, err)
		return
	}
	if len(ps) != 1 {
		s.errorPage(w, r, ss, http.StatusNotFound, "No such package", "You have sent no package with this id.")
		return
	}
	notice := r.URL.Query().Get("done")
	if r.URL.Query().Get("sent") != "" {
		notice = "Package " + ps[0].Package + " accepted: it is stored and will be delivered as shown below."
	}
	s.render(w, r, ss, http.StatusOK, "package", "Package "+ps[0].Package, ps[0], notice, "")
}

func (s *Server) apiPackages(w http.ResponseWriter, r *http.Request, ss *session) {
	ps, err := s.sentPackages(r.Context(), ss, "")
	if err != nil {
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"packages": nonNil(ps)})
}

func (s *Server) apiPackage(w http.ResponseWriter, r *http.Request, ss *session) {
	ps, err := s.sentPackages(r.Context(), ss, r.PathValue("pkg"))
	if err != nil {
		s.apiFail(w, err)
		return
	}
	if len(ps) != 1 {
		writeError(w, http.StatusNotFound, "you have sent no package with this id")
		return
	}
	writeJSON(w, http.StatusOK, ps[0])
}

func nonNil[T any](xs []T) []T {
	if xs == nil {
		return []T{}
	}
	return xs
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, ss *session, err error) {
	s.log.Error("console: request failed", "path", r.URL.Path, "err", err)
	s.errorPage(w, r, ss, http.StatusInternalServerError, "Not available", "The gateway could not answer just now; nothing was changed. Try again shortly.")
}

func (s *Server) apiFail(w http.ResponseWriter, err error) {
	s.log.Error("console API: request failed", "err", err)
	writeError(w, http.StatusInternalServerError, "the gateway could not answer just now; nothing was changed")
}

// rectify sends a rectification of one of the user's own packages.
func (s *Server) rectify(ctx context.Context, ss *session, pkg, text string) (string, int, error) {
	if strings.TrimSpace(text) == "" {
		return "", http.StatusBadRequest, errors.New("write the rectification: what was wrong and what is right")
	}
	ps, err := s.sentPackages(ctx, ss, pkg)
	if err != nil {
		return "", http.StatusInternalServerError, err
	}
	if len(ps) != 1 {
		return "", http.StatusNotFound, errors.New("you have sent no package with this id")
	}
	id, dests, err := s.opt.Gateway.Rectify(ctx, ss.user, pkg, strings.NewReader(text))
	if err != nil {
		return "", http.StatusUnprocessableEntity, err
	}
	s.log.Info("console: rectification sent", "user", ss.user.Name, "package", pkg, "notice", id)
	return fmt.Sprintf("Rectification %s of package %s queued for %s.", id, pkg, strings.Join(dests, ", ")), http.StatusOK, nil
}

func (s *Server) rectifyForm(w http.ResponseWriter, r *http.Request, ss *session) {
	pkg := r.PathValue("pkg")
	msg, code, err := s.rectify(r.Context(), ss, pkg, r.PostFormValue("text"))
	if err != nil {
		ps, _ := s.sentPackages(r.Context(), ss, pkg)
		if len(ps) != 1 {
			s.errorPage(w, r, ss, code, "Not sent", err.Error())
			return
		}
		s.render(w, r, ss, code, "package", "Package "+pkg, ps[0], "", err.Error())
		return
	}
	http.Redirect(w, r, "/sent/"+url.PathEscape(pkg)+"?done="+url.QueryEscape(msg), http.StatusSeeOther)
}

func (s *Server) apiRectify(w http.ResponseWriter, r *http.Request, ss *session) {
	var req struct {
		Text string `json:"text"`
	}
	if err := jsonDecoder(w, r, 1<<20).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "give {\"text\": ...}: "+err.Error())
		return
	}
	msg, code, err := s.rectify(r.Context(), ss, r.PathValue("pkg"), req.Text)
	if err != nil {
		writeError(w, code, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"result": msg})
}

// Received is a package delivered here, as metadata only.
type Received struct {
	Package    string    `json:"package"`
	Originator string    `json:"originator"`
	Name       string    `json:"originator_name"`
	Marking    string    `json:"marking"`
	Reference  string    `json:"reference"`
	When       time.Time `json:"when"`
	Mailboxes  []string  `json:"mailboxes"`
	Triage     *Clock    `json:"triage,omitempty"`
	Triaged    bool      `json:"triaged"`
}

// receivedWindow is how far back the Received page looks (the audit
// trail holds years).
const receivedWindow = 90 * 24 * time.Hour

var verifiedRE = regexp.MustCompile(`^verified: signed by \S+, (.+), reference (.+)$`)

func (s *Server) received(ctx context.Context) ([]Received, error) {
	since := s.now().Add(-receivedWindow)
	evs, err := s.opt.Trail.Query(ctx, audit.Filter{Kind: audit.Received, Since: since})
	if err != nil {
		return nil, err
	}
	var out []Received
	idx := map[string]int{}
	for i := len(evs) - 1; i >= 0 && len(out) < 500; i-- {
		e := evs[i]
		m := verifiedRE.FindStringSubmatch(e.Detail)
		if m == nil {
			continue // a submission by this agency's staff
		}
		idx[e.Package] = len(out)
		out = append(out, Received{Package: e.Package, Originator: e.Destination, Name: s.agencyName(e.Destination), Marking: m[1], Reference: m[2], When: e.Time})
	}
	dels, err := s.opt.Trail.Query(ctx, audit.Filter{Kind: audit.Delivered, Since: since})
	if err != nil {
		return nil, err
	}
	for _, e := range dels {
		if i, ok := idx[e.Package]; ok {
			mb := strings.TrimPrefix(e.Detail, "to ")
			if !slices.Contains(out[i].Mailboxes, mb) {
				out[i].Mailboxes = append(out[i].Mailboxes, mb)
			}
		}
	}
	triaged, err := s.opt.Trail.Query(ctx, audit.Filter{Kind: audit.Triaged, Since: since})
	if err != nil {
		return nil, err
	}
	for _, e := range triaged {
		if i, ok := idx[e.Package]; ok {
			out[i].Triaged = true
		}
	}
	clocks, err := s.clocks(ctx)
	if err != nil {
		return nil, err
	}
	for _, c := range clocks {
		if i, ok := idx[c.Package]; ok && c.Kind == policy.DeadlineTriage {
			c := c
			out[i].Triage = &c
		}
	}
	return out, nil
}

func (s *Server) receivedPage(w http.ResponseWriter, r *http.Request, ss *session) {
	rs, err := s.received(r.Context())
	if err != nil {
		s.fail(w, r, ss, err)
		return
	}
	notice := ""
	if p := r.URL.Query().Get("triaged"); p != "" {
		notice = "Triage of " + p + " recorded; its clock is stopped."
	}
	s.render(w, r, ss, http.StatusOK, "received", "Received packages", rs, notice, "")
}

func (s *Server) apiReceived(w http.ResponseWriter, r *http.Request, ss *session) {
	rs, err := s.received(r.Context())
	if err != nil {
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"received": nonNil(rs)})
}

// triage stops a received package's 72-hour triage clock (MoU 6.1).
func (s *Server) triage(ctx context.Context, ss *session, pkg, note string) error {
	e := audit.Event{Kind: audit.Triaged, Package: pkg, Rule: "triage-72h", Detail: "triage done in the console"}
	if note = oneLine(note); note != "" {
		e.Detail += ": " + note
	}
	s.fill(ss, &e)
	return s.opt.Store.Update(ctx, func(tx store.Tx) error {
		n, err := tx.CompleteDeadlines(pkg, policy.DeadlineTriage, "", s.now(), actor(ss.user)+": triaged")
		if err != nil {
			return err
		}
		if n == 0 {
			return errNoClock // nothing done, nothing audited
		}
		return tx.Audit(e)
	})
}

var errNoClock = errors.New("this package has no open triage clock")

func (s *Server) triageForm(w http.ResponseWriter, r *http.Request, ss *session) {
	pkg := r.PathValue("pkg")
	if err := s.triage(r.Context(), ss, pkg, r.PostFormValue("note")); err != nil {
		if errors.Is(err, errNoClock) {
			rs, _ := s.received(r.Context())
			s.render(w, r, ss, http.StatusConflict, "received", "Received packages", rs, "", pkg+": "+err.Error()+".")
			return
		}
		s.fail(w, r, ss, err)
		return
	}
	http.Redirect(w, r, "/received?triaged="+url.QueryEscape(pkg), http.StatusSeeOther)
}

func (s *Server) apiTriage(w http.ResponseWriter, r *http.Request, ss *session) {
	var req struct {
		Note string `json:"note"`
	}
	if r.ContentLength != 0 {
		if err := jsonDecoder(w, r, 64<<10).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	if err := s.triage(r.Context(), ss, r.PathValue("pkg"), req.Note); err != nil {
		if errors.Is(err, errNoClock) {
			writeError(w, http.StatusConflict, err.Error())
			return
		}
		s.apiFail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Held packages: release or drop, with a reason.

func (s *Server) held(ctx context.Context) ([]store.Item, error) {
	return s.opt.Store.List(ctx, store.Filter{State: store.OnHold, Limit: 500})
}

func (s *Server) heldPage(w http.ResponseWriter, r *http.Request, ss *session) {
	items, err := s.held(r.Context())
	if err != nil {
		s.fail(w, r, ss, err)
		return
	}
	s.render(w, r, ss, http.StatusOK, "held", "Held packages", items, r.URL.Query().Get("done"), "")
}

func (s *Server) apiHeld(w http.ResponseWriter, r *http.Request, ss *session) {
	items, err := s.held(r.Context())
	if err != nil {
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"held": nonNil(items)})
}

// heldAction releases or drops a held item; the reason is required and
// kept with the record and in the audit trail.
func (s *Server) heldAction(ctx context.Context, ss *session, idText, op, reason string) (string, int, error) {
	id, err := strconv.ParseInt(idText, 10, 64)
	if err != nil || id <= 0 {
		return "", http.StatusBadRequest, fmt.Errorf("%q is not an item id", idText)
	}
	reason = oneLine(reason)
	if reason == "" {
		return "", http.StatusBadRequest, fmt.Errorf("give a reason: what makes it lawful to send, or why it is dropped")
	}
	items, err := s.opt.Store.List(ctx, store.Filter{State: store.OnHold, Limit: 1000})
	if err != nil {
		return "", http.StatusInternalServerError, err
	}
	i := slices.IndexFunc(items, func(it store.Item) bool { return it.ID == id })
	if i < 0 {
		return "", http.StatusNotFound, fmt.Errorf("item %d is not held (released or dropped already?)", id)
	}
	it := items[i]
	note := actor(ss.user) + ": " + reason
	e := audit.Event{Package: it.PackageID, Destination: it.Destination, Rule: "hold", Detail: reason}
	s.fill(ss, &e)
	var do func(tx store.Tx) error
	switch op {
	case "release":
		e.Kind = audit.Released
		do = func(tx store.Tx) error { return tx.Release(id, note) }
	case "drop":
		e.Kind = audit.Dropped
		do = func(tx store.Tx) error { return tx.Drop(id, note) }
	default:
		return "", http.StatusNotFound, fmt.Errorf("%q: the actions are release and drop", op)
	}
	// The action, the hold clock it stops and its audit event: one
	// transaction.
	err = s.opt.Store.Update(ctx, func(tx store.Tx) error {
		if err := do(tx); err != nil {
			return err
		}
		if _, err := tx.CompleteDeadlines(it.PackageID, policy.DeadlineHold, it.Destination, s.now(), note); err != nil {
			return err
		}
		return tx.Audit(e)
	})
	if err != nil {
		return "", http.StatusConflict, fmt.Errorf("item %d: %w", id, err)
	}
	s.log.Info("console: held item "+op, "user", ss.user.Name, "item", id, "package", it.PackageID)
	verb := map[string]string{"release": "released: the gateway sends it on its next pass", "drop": "dropped: it will not be sent"}[op]
	return fmt.Sprintf("Item %d (package %s to %s) %s.", id, it.PackageID, it.Destination, verb), http.StatusOK, nil
}

func (s *Server) heldForm(w http.ResponseWriter, r *http.Request, ss *session) {
	msg, code, err := s.heldAction(r.Context(), ss, r.PathValue("id"), r.PathValue("op"), r.PostFormValue("reason"))
	if err != nil {
		items, _ := s.held(r.Context())
		s.render(w, r, ss, code, "held", "Held packages", items, "", err.Error())
		return
	}
	http.Redirect(w, r, "/held?done="+url.QueryEscape(msg), http.StatusSeeOther)
}

func (s *Server) apiHeldAction(w http.ResponseWriter, r *http.Request, ss *session) {
	var req struct {
		Reason string `json:"reason"`
	}
	if err := jsonDecoder(w, r, 64<<10).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "give {\"reason\": ...}: "+err.Error())
		return
	}
	msg, code, err := s.heldAction(r.Context(), ss, r.PathValue("id"), r.PathValue("op"), req.Reason)
	if err != nil {
		writeError(w, code, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"result": msg})
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
