package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
)

// Sign-in throttling: after throttleFree failures in a row for an account
// or from an address, each further attempt must wait twice as long as the
// last (1s, 2s, 4s...); after lockAfter failures the account or address
// is locked for lockFor. A success clears the account's and the address's
// count.
const (
	throttleFree = 3
	lockAfter    = 10
	lockFor      = 15 * time.Minute
)

var (
	errSignIn    = errors.New("the name or the password is wrong")
	errThrottled = errors.New("too many failed sign-ins")
)

// throttledError says how long to wait.
type throttledError struct{ wait time.Duration }

func (e *throttledError) Error() string {
	return fmt.Sprintf("too many failed sign-ins: try again in %s", e.wait.Round(time.Second))
}
func (e *throttledError) Unwrap() error { return errThrottled }

type failures struct {
	n     int
	until time.Time
}

// authenticator checks passwords against the config's bcrypt accounts.
type authenticator struct {
	users map[string]*config.User
	// dummy is compared when the name is unknown, so that an unknown
	// name costs the same bcrypt time as a known one.
	dummy []byte
	now   func() time.Time

	mu    sync.Mutex
	fails map[string]*failures
}

func newAuthenticator(users []config.User, now func() time.Time) (*authenticator, error) {
	a := &authenticator{users: map[string]*config.User{}, now: now, fails: map[string]*failures{}}
	cost := bcrypt.DefaultCost
	for i := range users {
		u := &users[i]
		a.users[u.Name] = u
		if c, err := bcrypt.Cost([]byte(u.PasswordHash)); err == nil && c > 0 {
			cost = c
		}
	}
	var err error
	if a.dummy, err = bcrypt.GenerateFromPassword([]byte(randomToken()), cost); err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	return a, nil
}

// signIn checks a name and password from an address.
func (a *authenticator) signIn(name, password, addr string) (*config.User, error) {
	keys := []string{"user:" + name, "addr:" + addr}
	if err := a.throttled(keys); err != nil {
		return nil, err
	}
	u := a.users[name]
	hash := a.dummy
	if u != nil {
		hash = []byte(u.PasswordHash)
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil || u == nil {
		if len(a.fails) > maxTracked {
			a.prune()
		}
		for _, k := range keys {
			f := a.fails[k]
			if f == nil {
				f = &failures{}
				a.fails[k] = f
			}
			f.n++
			switch {
			case f.n >= lockAfter:
				f.until = a.now().Add(lockFor)
			case f.n >= throttleFree:
				f.until = a.now().Add(time.Duration(math.Pow(2, float64(f.n-throttleFree))) * time.Second)
			}
		}
		return nil, errSignIn
	}
	for _, k := range keys {
		delete(a.fails, k)
	}
	return u, nil
}

// maxTracked bounds the failure records kept: beyond it, records whose
// wait is over are forgotten first.
const maxTracked = 10000

func (a *authenticator) prune() {
	now := a.now()
	for k, f := range a.fails {
		if now.After(f.until) && f.n < lockAfter {
			delete(a.fails, k)
		}
	}
}

func (a *authenticator) throttled(keys []string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	var wait time.Duration
	for _, k := range keys {
		if f := a.fails[k]; f != nil && now.Before(f.until) {
			wait = max(wait, f.until.Sub(now))
		}
	}
	if wait > 0 {
		return &throttledError{wait: wait}
	}
	return nil
}

func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on a supported system
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// session is one signed-in user.
type session struct {
	id   string
	user *config.User
	csrf string
	last time.Time

	mu      sync.Mutex
	uploads map[string]*upload
}

// upload is an attachment uploaded for a draft, held encrypted.
type upload struct {
	ID    string
	Name  string
	Type  string
	Size  int64
	spool *envelope.Spool
}

func (s *session) role() string { return s.user.RoleOr() }

func (s *session) dropUploads() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, u := range s.uploads {
		u.spool.Close()
		delete(s.uploads, id)
	}
}

type sessions struct {
	mu   sync.Mutex
	byID map[string]*session
}

const cookieName = "conduit_session"

// preCookie carries the sign-in form's CSRF token before there is a
// session (double submit).
const preCookie = "conduit_signin"

func (s *Server) newSession(w http.ResponseWriter, u *config.User) *session {
	ss := &session{id: randomToken(), user: u, csrf: randomToken(), last: s.now(), uploads: map[string]*upload{}}
	s.sessions.mu.Lock()
	s.sessions.byID[ss.id] = ss
	s.sessions.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: ss.id, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	return ss
}

func (s *Server) endSession(w http.ResponseWriter, ss *session) {
	s.sessions.mu.Lock()
	delete(s.sessions.byID, ss.id)
	s.sessions.mu.Unlock()
	ss.dropUploads()
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// errIdle: the session existed but was idle too long.
var errIdle = errors.New("signed out after a period without activity")

// session finds the request's session (cookie, or a bearer token for an
// API client) and notes the activity. bearer reports a token given in
// the Authorization header: such a request carries no ambient
// credential, so it needs no CSRF token.
func (s *Server) session(r *http.Request) (ss *session, bearer bool, err error) {
	id := ""
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		id, bearer = strings.TrimPrefix(h, "Bearer "), true
	} else if c, err := r.Cookie(cookieName); err == nil {
		id = c.Value
	}
	if id == "" {
		return nil, false, nil
	}
	s.sessions.mu.Lock()
	ss = s.sessions.byID[id]
	if ss != nil && s.now().Sub(ss.last) > s.idle {
		delete(s.sessions.byID, id)
		s.sessions.mu.Unlock()
		ss.dropUploads()
		return nil, bearer, errIdle
	}
	if ss != nil {
		ss.last = s.now()
	}
	s.sessions.mu.Unlock()
	return ss, bearer, nil
}

// sweep ends idle sessions (and frees their uploads).
func (s *Server) sweep() {
	s.sessions.mu.Lock()
	var idle []*session
	for id, ss := range s.sessions.byID {
		if s.now().Sub(ss.last) > s.idle {
			idle = append(idle, ss)
			delete(s.sessions.byID, id)
		}
	}
	s.sessions.mu.Unlock()
	for _, ss := range idle {
		ss.dropUploads()
	}
}

// endAll ends every session and destroys their uploads (at shutdown).
func (s *Server) endAll() {
	s.sessions.mu.Lock()
	all := s.sessions.byID
	s.sessions.byID = map[string]*session{}
	s.sessions.mu.Unlock()
	for _, ss := range all {
		ss.dropUploads()
	}
}

func csrfOK(want, got string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(want), []byte(got)) == 1
}

// remoteAddr is the client's IP address (the console is reached
// directly, not through a proxy).
func remoteAddr(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

// Capabilities: what each role may do. Checked on the server for every
// page and API call.
type capability int

const (
	capAny      capability = iota // any signed-in user
	capCompose                    // compose, send, follow one's packages
	capReceived                   // what arrived, triage
	capHeld                       // release or drop held packages
	capAdmin                      // policy, directory, queue, quarantine, keys, deadlines, audit, health
)

var roleCaps = map[string][]capability{
	config.RoleSender:        {capAny, capCompose},
	config.RoleReceiver:      {capAny, capReceived},
	config.RoleSupervisor:    {capAny, capReceived, capHeld},
	config.RoleAdministrator: {capAny, capHeld, capAdmin},
}

func allowed(role string, c capability) bool {
	for _, x := range roleCaps[role] {
		if x == c {
			return true
		}
	}
	return false
}
