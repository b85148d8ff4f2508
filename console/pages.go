package console

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/conduit-gateway/conduit/config"
)

type pages struct {
	t map[string]*template.Template
}

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"join": strings.Join,
	"inc":  func(i int) int { return i + 1 },
	"has": func(xs []string, x string) bool {
		for _, v := range xs {
			if v == x {
				return true
			}
		}
		return false
	},
	"bytes": func(n int64) string {
		switch {
		case n >= 1<<20:
			return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
		case n >= 1<<10:
			return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
		}
		return fmt.Sprintf("%d bytes", n)
	},
	"dur": func(d time.Duration) string {
		neg := d < 0
		if neg {
			d = -d
		}
		h := int(d.Hours())
		s := fmt.Sprintf("%dh %02dm", h, int(d.Minutes())%60)
		if neg {
			return "overdue by " + s
		}
		return s + " left"
	},
}

func loadPages() (*pages, error) {
	names, err := fs.Glob(files, "templates/*.html")
	if err != nil {
		return nil, err
	}
	p := &pages{t: map[string]*template.Template{}}
	for _, n := range names {
		base := strings.TrimSuffix(path.Base(n), ".html")
		if base == "layout" || base == "preview" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/preview.html", n)
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", n, err)
		}
		p.t[base] = t
	}
	return p, nil
}

type navItem struct {
	Href, Label string
	Current     bool
}

// view is what every page template gets.
type view struct {
	Title   string
	User    *config.User
	Role    string
	CSRF    string
	Agency  string
	Nav     []navItem
	Notice  string // a confirmation, shown in a status region
	Problem string // an error, shown in an alert region
	Data    any
}

var navByCap = []struct {
	c           capability
	href, label string
}{
	{capCompose, "/compose", "Compose"},
	{capCompose, "/sent", "Sent"},
	{capReceived, "/received", "Received"},
	{capHeld, "/held", "Held"},
	{capAdmin, "/admin/policy", "Routing policy"},
	{capAdmin, "/admin/directory", "Directory"},
	{capAdmin, "/admin/queue", "Queue"},
	{capAdmin, "/admin/quarantine", "Quarantine"},
	{capAdmin, "/admin/keys", "Partner keys"},
	{capAdmin, "/admin/deadlines", "Deadlines"},
	{capAdmin, "/admin/audit", "Audit"},
	{capAdmin, "/admin/health", "Health"},
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, ss *session, code int, name, title string, data any, notice, problem string) {
	v := view{Title: title, Agency: s.cfg.Agency, Data: data, Notice: notice, Problem: problem}
	if ss != nil {
		v.User, v.Role, v.CSRF = ss.user, ss.role(), ss.csrf
		for _, n := range navByCap {
			if allowed(v.Role, n.c) {
				v.Nav = append(v.Nav, navItem{Href: n.href, Label: n.label, Current: strings.HasPrefix(r.URL.Path, n.href)})
			}
		}
	}
	t := s.pages.t[name]
	if t == nil {
		http.Error(w, "no such page", http.StatusInternalServerError)
		return
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, "layout", v); err != nil {
		s.log.Error("console: page not rendered", "page", name, "err", err)
		http.Error(w, "the page could not be shown", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(b.Bytes())
}

func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, ss *session, code int, title, msg string) {
	s.render(w, r, ss, code, "error", title, msg, "", "")
}

// signInPage shows the sign-in form with a fresh double-submit token.
func (s *Server) signInPage(w http.ResponseWriter, r *http.Request) {
	if ss, _, _ := s.session(r); ss != nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.showSignIn(w, r, http.StatusOK, "")
}

type signInData struct {
	Next    string
	Expired bool
	Token   string
}

func (s *Server) showSignIn(w http.ResponseWriter, r *http.Request, code int, problem string) {
	tok := randomToken()
	http.SetCookie(w, &http.Cookie{Name: preCookie, Value: tok, Path: "/signin", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	next := safeNext(r.FormValue("next"))
	s.render(w, r, nil, code, "signin", "Sign in", signInData{Next: next, Expired: r.FormValue("expired") != "", Token: tok}, "", problem)
}

func (s *Server) signInForm(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	c, err := r.Cookie(preCookie)
	if err != nil || !csrfOK(c.Value, r.PostFormValue("csrf")) {
		s.showSignIn(w, r, http.StatusForbidden, "The sign-in form had expired. Please sign in again.")
		return
	}
	name := strings.TrimSpace(r.PostFormValue("name"))
	u, err := s.auth.signIn(name, r.PostFormValue("password"), remoteAddr(r))
	if err != nil {
		s.log.Warn("console sign-in failed", "user", name, "remote", remoteAddr(r), "err", err)
		code := http.StatusUnauthorized
		if errors.Is(err, errThrottled) {
			code = http.StatusTooManyRequests
		}
		s.showSignIn(w, r, code, err.Error()+".")
		return
	}
	s.sweep()
	s.newSession(w, u)
	s.log.Info("console sign-in", "user", u.Name, "role", u.RoleOr(), "remote", remoteAddr(r))
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

// safeNext keeps a redirect after sign-in on this console: a path, never
// another site ("//host", "/\\host") or the sign-in page itself.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") || strings.HasPrefix(next, "/signin") {
		return "/"
	}
	return next
}

func (s *Server) signOut(w http.ResponseWriter, r *http.Request, ss *session) {
	s.endSession(w, ss)
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

// home sends each role to its first page.
func (s *Server) home(w http.ResponseWriter, r *http.Request, ss *session) {
	for _, n := range navByCap {
		if allowed(ss.role(), n.c) {
			http.Redirect(w, r, n.href, http.StatusSeeOther)
			return
		}
	}
	s.errorPage(w, r, ss, http.StatusForbidden, "No pages", "Your role has no pages.")
}
