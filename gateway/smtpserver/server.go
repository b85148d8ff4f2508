package smtpserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/policy"
)

// Options are what a front end's server is built with.
type Options struct {
	Hostname string      // the name in the greeting
	TLS      *tls.Config // STARTTLS (and implicit TLS)
	Limits   config.Limits
	Log      *slog.Logger
}

// New builds a go-smtp server for a front end with the gateway's limits.
func New(be smtp.Backend, o Options) *smtp.Server {
	s := smtp.NewServer(be)
	s.Domain = o.Hostname
	s.TLSConfig = o.TLS
	s.MaxMessageBytes = o.Limits.MessageBytes
	s.MaxRecipients = o.Limits.Recipients
	s.MaxLineLength = 4000
	s.AllowInsecureAuth = false // invariant 4: no AUTH without TLS
	s.ReadTimeout = 5 * time.Minute
	s.WriteTimeout = 5 * time.Minute
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	s.ErrorLog = slogPrintf{log}
	return s
}

// Hostname is the name a gateway gives in its greeting and HELO: the
// host of its directory entry.
func Hostname(self *config.Agency, agency string) string {
	if self != nil {
		if h, _, ok := strings.Cut(self.Gateway, ":"); ok && h != "" {
			return h
		}
	}
	return agency + ".conduit.invalid"
}

type slogPrintf struct {
	l interface{ Warn(string, ...any) }
}

func (s slogPrintf) Printf(format string, v ...any) {
	s.l.Warn("smtp", "detail", fmt.Sprintf(format, v...))
}
func (s slogPrintf) Println(v ...any) { s.l.Warn("smtp", "detail", fmt.Sprintln(v...)) }

// ErrKeysUnavailable answers a submission or a partner while the key
// backend is unavailable (RFC 3463 4.3.0: a temporary system failure).
var ErrKeysUnavailable = Reply(451, smtp.EnhancedCode{4, 3, 0},
	"Temporary failure: this gateway cannot reach its key store, so it can neither seal nor open packages. "+
		"Nothing was accepted; your system keeps the message and tries again")

// RuleIDs are the rules a decision's trace names, each once, in order.
func RuleIDs(d policy.Decision) []string {
	var out []string
	for _, s := range d.Trace {
		if !slices.Contains(out, s.Rule) {
			out = append(out, s.Rule)
		}
	}
	return out
}

// Refusal explains a decision that sends nothing: each refusal and hold
// with its rule.
func Refusal(d policy.Decision) *smtp.SMTPError {
	var why []string
	for _, r := range d.Refusals {
		why = append(why, fmt.Sprintf("%s (%s)", r.Reason, r.Rule))
	}
	for _, h := range d.Holds {
		why = append(why, fmt.Sprintf("held for %s: %s (%s)", h.Agency, h.Reason, h.Rule))
	}
	if len(why) == 0 {
		for _, s := range d.Trace {
			if s.Effect == policy.EffectDeny {
				why = append(why, fmt.Sprintf("%s (%s)", s.Detail, s.Rule))
			}
		}
	}
	if len(why) == 0 {
		why = []string{"no destination remains after the sharing policy"}
	}
	return Reply(550, smtp.EnhancedCode{5, 7, 1}, "Package refused, nothing was sent: "+strings.Join(why, "; "))
}

// Handlers tracks a front end's message handlers (what runs between the
// end of DATA and the reply: intake, opening, delivery), so that a stop
// can wait for them, and gives them a context that the stop cancels when
// its time runs out: a handler cut that way answers 4xx and has promised
// nothing, and none is left running once the store is closed.
type Handlers struct {
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Begin starts a handler; call done when it has answered.
func (h *Handlers) Begin() (ctx context.Context, done func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ctx == nil {
		h.ctx, h.cancel = context.WithCancel(context.Background())
	}
	h.wg.Add(1)
	return h.ctx, h.wg.Done
}

// Cut cancels the context of the handlers still running.
func (h *Handlers) Cut() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cancel != nil {
		h.cancel()
	}
}

// Wait returns when every handler begun has answered.
func (h *Handlers) Wait() { h.wg.Wait() }
