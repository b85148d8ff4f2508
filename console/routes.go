package console

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"net/url"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
)

type handler func(w http.ResponseWriter, r *http.Request, ss *session)

func (s *Server) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(files, "static")
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /signin", s.signInPage)
	m.HandleFunc("POST /signin", s.signInForm)
	m.Handle("POST /signout", s.page(capAny, s.signOut))
	m.Handle("GET /{$}", s.page(capAny, s.home))

	m.Handle("GET /compose", s.page(capCompose, s.composePage))
	m.Handle("POST /compose/preview", s.page(capCompose, s.previewFragment))
	m.Handle("POST /compose/send", s.page(capCompose, s.sendForm))
	m.Handle("GET /sent", s.page(capCompose, s.sentPage))
	m.Handle("GET /sent/{pkg}", s.page(capCompose, s.sentPackagePage))
	m.Handle("POST /sent/{pkg}/rectify", s.page(capCompose, s.rectifyForm))
	m.Handle("GET /received", s.page(capReceived, s.receivedPage))
	m.Handle("POST /received/{pkg}/triage", s.page(capReceived, s.triageForm))
	m.Handle("GET /held", s.page(capHeld, s.heldPage))
	m.Handle("POST /held/{id}/{op}", s.page(capHeld, s.heldForm))

	m.Handle("GET /admin/policy", s.page(capAdmin, s.policyPage))
	m.Handle("POST /admin/policy", s.page(capAdmin, s.policyForm))
	m.Handle("POST /admin/policy/restore", s.page(capAdmin, s.restoreForm))
	m.Handle("GET /admin/directory", s.page(capAdmin, s.directoryPage))
	m.Handle("GET /admin/queue", s.page(capAdmin, s.queuePage))
	m.Handle("GET /admin/quarantine", s.page(capAdmin, s.quarantinePage))
	m.Handle("GET /admin/keys", s.page(capAdmin, s.keysPage))
	m.Handle("POST /admin/keys", s.page(capAdmin, s.keysForm))
	m.Handle("GET /admin/deadlines", s.page(capAdmin, s.deadlinesPage))
	m.Handle("GET /admin/audit", s.page(capAdmin, s.auditPage))
	m.Handle("POST /admin/audit/verify", s.page(capAdmin, s.auditVerifyForm))
	m.Handle("GET /admin/health", s.page(capAdmin, s.healthPage))

	// The JSON API (docs/openapi.yaml).
	m.HandleFunc("POST /api/v1/session", s.apiSignIn)
	m.Handle("DELETE /api/v1/session", s.api(capAny, s.apiSignOut))
	m.Handle("GET /api/v1/me", s.api(capAny, s.apiMe))
	m.Handle("GET /api/v1/directory", s.api(capAny, s.apiDirectory))
	m.Handle("POST /api/v1/explain", s.api(capCompose, s.apiExplain))
	m.Handle("POST /api/v1/uploads", s.api(capCompose, s.apiUpload))
	m.Handle("DELETE /api/v1/uploads/{id}", s.api(capCompose, s.apiDeleteUpload))
	m.Handle("POST /api/v1/packages", s.api(capCompose, s.apiSend))
	m.Handle("GET /api/v1/packages", s.api(capCompose, s.apiPackages))
	m.Handle("GET /api/v1/packages/{pkg}", s.api(capCompose, s.apiPackage))
	m.Handle("POST /api/v1/packages/{pkg}/rectify", s.api(capCompose, s.apiRectify))
	m.Handle("GET /api/v1/received", s.api(capReceived, s.apiReceived))
	m.Handle("POST /api/v1/received/{pkg}/triage", s.api(capReceived, s.apiTriage))
	m.Handle("GET /api/v1/held", s.api(capHeld, s.apiHeld))
	m.Handle("POST /api/v1/held/{id}/{op}", s.api(capHeld, s.apiHeldAction))
	m.Handle("GET /api/v1/policy", s.api(capAdmin, s.apiPolicy))
	m.Handle("POST /api/v1/policy/check", s.api(capAdmin, s.apiPolicyCheck))
	m.Handle("POST /api/v1/policy/dry-run", s.api(capAdmin, s.apiPolicyDryRun))
	m.Handle("POST /api/v1/policy/apply", s.api(capAdmin, s.apiPolicyApply))
	m.Handle("GET /api/v1/policy/versions", s.api(capAdmin, s.apiPolicyVersions))
	m.Handle("POST /api/v1/policy/restore", s.api(capAdmin, s.apiPolicyRestore))
	m.Handle("GET /api/v1/keys", s.api(capAdmin, s.apiKeys))
	m.Handle("POST /api/v1/keys/{agency}/{fingerprint}/{op}", s.api(capAdmin, s.apiKeyDecide))
	m.Handle("GET /api/v1/queue", s.api(capAdmin, s.apiQueue))
	m.Handle("GET /api/v1/quarantine", s.api(capAdmin, s.apiQuarantine))
	m.Handle("GET /api/v1/deadlines", s.api(capAdmin, s.apiDeadlines))
	m.Handle("GET /api/v1/audit", s.api(capAdmin, s.apiAudit))
	m.Handle("POST /api/v1/audit/verify", s.api(capAdmin, s.apiAuditVerify))
	m.Handle("GET /api/v1/audit/export", s.api(capAdmin, s.apiAuditExport))
	m.Handle("GET /api/v1/health", s.api(capAdmin, s.apiHealth))
	s.mux = m
}

// page wraps an HTML handler: a signed-in user with the capability, and
// on a POST the session's CSRF token in the form.
func (s *Server) page(c capability, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ss, _, err := s.session(r)
		if ss == nil {
			q := url.Values{"next": {r.URL.Path}}
			if errors.Is(err, errIdle) {
				q.Set("expired", "1")
				http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
			}
			http.Redirect(w, r, "/signin?"+q.Encode(), http.StatusSeeOther)
			return
		}
		if !allowed(ss.role(), c) {
			s.log.Warn("console: refused, role", "user", ss.user.Name, "role", ss.role(), "path", r.URL.Path)
			s.errorPage(w, r, ss, http.StatusForbidden, "Not for your role", "Your role ("+ss.role()+") does not allow this page. Ask an administrator if you need it.")
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 4<<20)
			if !csrfOK(ss.csrf, r.PostFormValue("csrf")) {
				s.log.Warn("console: refused, CSRF token", "user", ss.user.Name, "path", r.URL.Path)
				s.errorPage(w, r, ss, http.StatusForbidden, "Form refused", "This form did not carry its security token (it may be from an old page). Nothing was done. Open the page again and resubmit.")
				return
			}
		}
		h(w, r, ss)
	})
}

// api wraps a JSON handler: 401 without a session, 403 without the
// capability, and on a change a CSRF token (X-CSRF-Token) unless the
// caller authenticated with a bearer token.
func (s *Server) api(c capability, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ss, bearer, err := s.session(r)
		if ss == nil {
			msg := "sign in first (POST /api/v1/session)"
			if errors.Is(err, errIdle) {
				msg = err.Error() + "; sign in again"
			}
			writeError(w, http.StatusUnauthorized, msg)
			return
		}
		if !allowed(ss.role(), c) {
			s.log.Warn("console: refused, role", "user", ss.user.Name, "role", ss.role(), "path", r.URL.Path)
			writeError(w, http.StatusForbidden, "your role ("+ss.role()+") does not allow this")
			return
		}
		if r.Method != http.MethodGet && !bearer && !csrfOK(ss.csrf, r.Header.Get("X-CSRF-Token")) {
			s.log.Warn("console: refused, CSRF token", "user", ss.user.Name, "path", r.URL.Path)
			writeError(w, http.StatusForbidden, "missing or wrong X-CSRF-Token header; nothing was done")
			return
		}
		h(w, r, ss)
	})
}

type apiError struct {
	Error  string  `json:"error"`
	Fields []Field `json:"fields,omitempty"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, apiError{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// audit writes an event with the signed-in user as actor.
func (s *Server) audit(r *http.Request, ss *session, e audit.Event) {
	s.fill(ss, &e)
	if _, err := s.opt.Trail.Append(r.Context(), e); err != nil {
		s.log.Error("admin alert: audit trail not written", "kind", e.Kind, "err", err)
	}
}

func (s *Server) fill(ss *session, e *audit.Event) {
	e.Agency = s.cfg.Agency
	e.Actor = actor(ss.user)
	e.Time = s.now().UTC()
}

// actor names a console user in the audit trail.
func actor(u *config.User) string { return u.Name + " (console)" }

// jsonDecoder reads a bounded JSON request body strictly.
func jsonDecoder(w http.ResponseWriter, r *http.Request, max int64) *json.Decoder {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, max))
	dec.DisallowUnknownFields()
	return dec
}
