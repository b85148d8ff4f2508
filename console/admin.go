package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
)

func urlQuery(s string) string { return url.QueryEscape(s) }

// Directory page: agencies, mailboxes, posts, training records (those
// expiring within expirySoon marked), partner keys and their state.

const expirySoon = 30 * 24 * time.Hour

// MailboxView is a mailbox with its training record's standing.
type MailboxView struct {
	Address  string    `json:"address"`
	Function string    `json:"function"`
	Holder   string    `json:"holder"`
	Trained  string    `json:"trained"`
	Expires  time.Time `json:"expires,omitzero"`
	Standing string    `json:"standing"` // current, expiring soon, expired, no record
}

// AgencyView is one agency of the directory.
type AgencyView struct {
	ID          string        `json:"id"`
	Name        string        `json:"name"`
	Kind        string        `json:"kind"`
	Region      string        `json:"region,omitempty"`
	Gateway     string        `json:"gateway"`
	Fingerprint string        `json:"fingerprint"`
	KeyState    string        `json:"key_state"`
	Mailboxes   []MailboxView `json:"mailboxes"`
	Posts       []string      `json:"posts,omitempty"`
}

func (s *Server) directory(ctx context.Context) ([]AgencyView, error) {
	days := s.opt.Gateway.Policy().Policy().Params.TrainedRecipients.ValidDays
	pks, err := s.opt.Store.ListPartnerKeys(ctx, "", "")
	if err != nil {
		return nil, err
	}
	now := s.now()
	var out []AgencyView
	for _, a := range s.cfg.Directory.Agencies {
		v := AgencyView{ID: a.ID, Name: a.Name, Kind: string(a.Kind), Region: a.Region, Gateway: a.Gateway, Fingerprint: a.Fingerprint, KeyState: "pinned"}
		if a.ID == s.cfg.Agency {
			v.KeyState = "this gateway"
		}
		for _, k := range pks {
			if k.Agency == a.ID && k.State == store.KeyPending {
				v.KeyState = "pinned; a change is pending"
				break
			}
		}
		for _, p := range a.Posts {
			x := p.Name + " (" + p.ID + ", " + string(p.Kind)
			if p.Oversight {
				x += ", oversight"
			}
			v.Posts = append(v.Posts, x+")")
		}
		for _, list := range [][]config.Mailbox{a.Mailboxes, a.Escalation} {
			for _, m := range list {
				mv := MailboxView{Address: m.Address, Function: string(m.Function), Holder: m.Holder, Trained: m.Trained, Standing: "no record"}
				if m.Function == "" {
					mv.Function = "intake"
				}
				if t, err := time.Parse("2006-01-02", m.Trained); err == nil {
					mv.Standing = "current"
					if days > 0 {
						mv.Expires = t.AddDate(0, 0, days)
						switch {
						case now.After(mv.Expires):
							mv.Standing = "expired"
						case mv.Expires.Sub(now) < expirySoon:
							mv.Standing = "expiring soon"
						}
					}
				}
				v.Mailboxes = append(v.Mailboxes, mv)
			}
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (s *Server) directoryPage(w http.ResponseWriter, r *http.Request, ss *session) {
	d, err := s.directory(r.Context())
	if err != nil {
		s.fail(w, r, ss, err)
		return
	}
	s.render(w, r, ss, http.StatusOK, "directory", "Directory", d, "", "")
}

func (s *Server) queuePage(w http.ResponseWriter, r *http.Request, ss *session) {
	items, err := s.opt.Store.List(r.Context(), store.Filter{Limit: 300})
	if err != nil {
		s.fail(w, r, ss, err)
		return
	}
	s.render(w, r, ss, http.StatusOK, "queue", "Queue", items, "", "")
}

func (s *Server) apiQueue(w http.ResponseWriter, r *http.Request, ss *session) {
	items, err := s.opt.Store.List(r.Context(), store.Filter{State: store.State(r.URL.Query().Get("state")), Limit: 1000})
	if err != nil {
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": nonNil(items)})
}

func (s *Server) quarantinePage(w http.ResponseWriter, r *http.Request, ss *session) {
	qs, err := s.opt.Store.ListQuarantine(r.Context(), "")
	if err != nil {
		s.fail(w, r, ss, err)
		return
	}
	s.render(w, r, ss, http.StatusOK, "quarantine", "Quarantine", qs, "", "")
}

func (s *Server) apiQuarantine(w http.ResponseWriter, r *http.Request, ss *session) {
	qs, err := s.opt.Store.ListQuarantine(r.Context(), store.QState(r.URL.Query().Get("state")))
	if err != nil {
		s.apiFail(w, err)
		return
	}
	for i := range qs {
		qs[i].Raw = nil // headers and reason only
	}
	writeJSON(w, http.StatusOK, map[string]any{"quarantine": nonNil(qs)})
}

// KeyView is a partner key record, with the fingerprint it would replace.
type KeyView struct {
	Agency    string    `json:"agency"`
	Name      string    `json:"name"`
	Old       string    `json:"old_fingerprint"`
	New       string    `json:"new_fingerprint"`
	State     string    `json:"state"`
	Source    string    `json:"source"`
	Seen      time.Time `json:"seen"`
	Decided   time.Time `json:"decided,omitzero"`
	DecidedBy string    `json:"decided_by,omitempty"`
	Reason    string    `json:"reason,omitempty"`
}

func (s *Server) keyViews(ctx context.Context) ([]KeyView, error) {
	ks, err := s.opt.Store.ListPartnerKeys(ctx, "", "")
	if err != nil {
		return nil, err
	}
	var out []KeyView
	for _, k := range ks {
		out = append(out, KeyView{Agency: k.Agency, Name: s.agencyName(k.Agency), Old: k.Replaces, New: k.Fingerprint, State: string(k.State),
			Source: k.Source, Seen: k.Seen, Decided: k.Decided, DecidedBy: k.DecidedBy, Reason: k.Reason})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].State == "pending" && out[j].State != "pending" })
	return out, nil
}

func (s *Server) keysPage(w http.ResponseWriter, r *http.Request, ss *session) {
	ks, err := s.keyViews(r.Context())
	if err != nil {
		s.fail(w, r, ss, err)
		return
	}
	s.render(w, r, ss, http.StatusOK, "keys", "Partner key changes", ks, r.URL.Query().Get("done"), "")
}

// decideKey approves or rejects a pending partner key; the decision and
// its audit event are one transaction.
func (s *Server) decideKey(ctx context.Context, ss *session, agency, fp, op, reason string) (string, int, error) {
	state := map[string]store.KeyState{"approve": store.KeyApproved, "reject": store.KeyRejected}[op]
	if state == "" {
		return "", http.StatusNotFound, fmt.Errorf("%q: the actions are approve and reject", op)
	}
	reason = oneLine(reason)
	if reason == "" {
		return "", http.StatusBadRequest, fmt.Errorf("give a reason: how the fingerprint was checked with the partner")
	}
	fp = keys.NormalizeFingerprint(fp)
	e := audit.Event{Kind: audit.KeyChange, Destination: agency, Rule: op, Detail: fmt.Sprintf("key %s of %s %s in the console: %s", fp, agency, map[string]string{"approve": "approved", "reject": "rejected"}[op], reason)}
	s.fill(ss, &e)
	err := s.opt.Store.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.DecidePartnerKey(agency, fp, state, actor(ss.user), reason); err != nil {
			return err
		}
		return tx.Audit(e)
	})
	if err != nil {
		if errors.Is(err, store.ErrKeyNotPending) {
			return "", http.StatusConflict, fmt.Errorf("%s has no pending key %s", agency, fp)
		}
		return "", http.StatusInternalServerError, err
	}
	s.log.Info("console: partner key "+op, "user", ss.user.Name, "partner", agency, "fingerprint", fp)
	past := map[string]string{"approve": "approved: the gateway takes it within seconds", "reject": "rejected: it is never used"}[op]
	return fmt.Sprintf("Key %s of %s %s.", fp, agency, past), http.StatusOK, nil
}

func (s *Server) keysForm(w http.ResponseWriter, r *http.Request, ss *session) {
	msg, code, err := s.decideKey(r.Context(), ss, r.PostFormValue("agency"), r.PostFormValue("fingerprint"), r.PostFormValue("op"), r.PostFormValue("reason"))
	if err != nil {
		ks, _ := s.keyViews(r.Context())
		s.render(w, r, ss, code, "keys", "Partner key changes", ks, "", err.Error())
		return
	}
	http.Redirect(w, r, "/admin/keys?done="+urlQuery(msg), http.StatusSeeOther)
}

func (s *Server) apiKeys(w http.ResponseWriter, r *http.Request, ss *session) {
	ks, err := s.keyViews(r.Context())
	if err != nil {
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": nonNil(ks)})
}

func (s *Server) apiKeyDecide(w http.ResponseWriter, r *http.Request, ss *session) {
	var req struct {
		Reason string `json:"reason"`
	}
	if err := jsonDecoder(w, r, 64<<10).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "give {\"reason\": ...}: "+err.Error())
		return
	}
	msg, code, err := s.decideKey(r.Context(), ss, r.PathValue("agency"), r.PathValue("fingerprint"), r.PathValue("op"), req.Reason)
	if err != nil {
		writeError(w, code, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"result": msg})
}

func (s *Server) deadlinesPage(w http.ResponseWriter, r *http.Request, ss *session) {
	cs, err := s.clocks(r.Context())
	if err != nil {
		s.fail(w, r, ss, err)
		return
	}
	s.render(w, r, ss, http.StatusOK, "deadlines", "Deadlines", cs, "", "")
}

func (s *Server) apiDeadlines(w http.ResponseWriter, r *http.Request, ss *session) {
	cs, err := s.clocks(r.Context())
	if err != nil {
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deadlines": nonNil(cs)})
}

// auditFilter reads package, kind, rule, since and limit.
func (s *Server) auditFilter(q url.Values) (audit.Filter, error) {
	f := audit.Filter{Package: strings.TrimSpace(q.Get("package")), Rule: strings.TrimSpace(q.Get("rule")), Kind: audit.Kind(q.Get("kind")), Limit: 200}
	if f.Kind != "" && !f.Kind.Valid() {
		return f, fmt.Errorf("%q is not an event kind", f.Kind)
	}
	if v := strings.TrimSpace(q.Get("since")); v != "" {
		t, err := audit.ParseSince(v, s.now())
		if err != nil {
			return f, fmt.Errorf("since: %w", err)
		}
		f.Since = t
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return f, fmt.Errorf("limit must be a number from 1 to 10000")
		}
		f.Limit = n
	}
	return f, nil
}

type auditData struct {
	Query  url.Values
	Kinds  []audit.Kind
	Events []audit.Event
	Verify *audit.VerifyResult
}

// newestFirst returns the last n events of a query, newest first.
func (s *Server) newestFirst(ctx context.Context, f audit.Filter) ([]audit.Event, error) {
	n := f.Limit
	f.Limit = 0
	evs, err := s.opt.Trail.Query(ctx, f)
	if err != nil {
		return nil, err
	}
	if len(evs) > n {
		evs = evs[len(evs)-n:]
	}
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	return evs, nil
}

func (s *Server) auditPage(w http.ResponseWriter, r *http.Request, ss *session) {
	ad := auditData{Query: r.URL.Query(), Kinds: audit.Kinds}
	f, err := s.auditFilter(r.URL.Query())
	if err != nil {
		s.render(w, r, ss, http.StatusBadRequest, "audit", "Audit trail", ad, "", err.Error())
		return
	}
	if ad.Events, err = s.newestFirst(r.Context(), f); err != nil {
		s.fail(w, r, ss, err)
		return
	}
	s.render(w, r, ss, http.StatusOK, "audit", "Audit trail", ad, "", "")
}

func (s *Server) auditVerifyForm(w http.ResponseWriter, r *http.Request, ss *session) {
	res, err := s.opt.Trail.Verify(r.Context())
	if err != nil {
		s.fail(w, r, ss, err)
		return
	}
	ad := auditData{Query: url.Values{}, Kinds: audit.Kinds, Verify: &res}
	ad.Events, _ = s.newestFirst(r.Context(), audit.Filter{Limit: 50})
	s.render(w, r, ss, http.StatusOK, "audit", "Audit trail", ad, "", "")
}

func (s *Server) apiAudit(w http.ResponseWriter, r *http.Request, ss *session) {
	f, err := s.auditFilter(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	evs, err := s.newestFirst(r.Context(), f)
	if err != nil {
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": nonNil(evs)})
}

func (s *Server) apiAuditVerify(w http.ResponseWriter, r *http.Request, ss *session) {
	res, err := s.opt.Trail.Verify(r.Context())
	if err != nil {
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": res.OK, "result": res.String()})
}

// apiAuditExport streams the selected events as JSON lines.
func (s *Server) apiAuditExport(w http.ResponseWriter, r *http.Request, ss *session) {
	f, err := s.auditFilter(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if r.URL.Query().Get("limit") == "" {
		f.Limit = 0
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Content-Disposition", `attachment; filename="audit-`+s.cfg.Agency+`.jsonl"`)
	if _, err := s.opt.Trail.Export(r.Context(), w, f); err != nil {
		s.log.Error("console: audit export cut short", "err", err)
	}
}

// Health is the gateway's state at a glance.
type Health struct {
	Listeners   map[string]string `json:"listeners"`
	Keys        string            `json:"keys"`
	Store       string            `json:"store"`
	QueueDepth  int               `json:"queue_depth"`
	Held        int               `json:"held"`
	Quarantined int               `json:"quarantined"`
	Overdue     int               `json:"overdue_deadlines"`
	PendingKeys int               `json:"pending_keys"`
	Rules       int               `json:"rules_in_force"`
	OK          bool              `json:"ok"`
}

func (s *Server) health(ctx context.Context) Health {
	l := s.cfg.Listen
	h := Health{Listeners: map[string]string{}, Keys: "ready", Store: "answering", OK: true}
	for name, addr := range map[string]string{"submission": l.Submission, "submission-tls": l.SubmissionTLS, "inbound": l.Inbound, "admin": l.Admin, "console": l.Console} {
		if addr != "" {
			h.Listeners[name] = addr
		}
	}
	if err := s.opt.Gateway.KeysReady(ctx); err != nil {
		h.Keys, h.OK = "not ready: "+err.Error(), false
	}
	depth, err := s.opt.Store.Depth(ctx)
	if err != nil {
		h.Store, h.OK = "not answering", false
	}
	for _, n := range depth {
		h.QueueDepth += n
	}
	if items, err := s.opt.Store.List(ctx, store.Filter{State: store.OnHold, Limit: 10000}); err == nil {
		h.Held = len(items)
	}
	if qs, err := s.opt.Store.ListQuarantine(ctx, store.Held); err == nil {
		h.Quarantined = len(qs)
	}
	if cs, err := s.clocks(ctx); err == nil {
		for _, c := range cs {
			if c.Overdue {
				h.Overdue++
			}
		}
	}
	if ks, err := s.opt.Store.ListPartnerKeys(ctx, "", store.KeyPending); err == nil {
		h.PendingKeys = len(ks)
	}
	h.Rules = len(s.opt.Gateway.Policy().Policy().Rules())
	return h
}

func (s *Server) healthPage(w http.ResponseWriter, r *http.Request, ss *session) {
	s.render(w, r, ss, http.StatusOK, "health", "Health", s.health(r.Context()), "", "")
}

func (s *Server) apiHealth(w http.ResponseWriter, r *http.Request, ss *session) {
	writeJSON(w, http.StatusOK, s.health(r.Context()))
}
