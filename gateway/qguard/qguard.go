// Package qguard is in charge of what the quarantine may be made to keep:
// a byte quota over everything held, a rate per client address, and
// alerts grouped so that a flood raises one alert and a summary, not one
// alert per message.
//
// The quarantine keeps what fails a check (security invariant 6), but
// only for messages that might be a partner's package: whatever a client
// with no partner certificate sends that cannot be an envelope for this
// gateway is refused before this package is asked (as Postfix's
// postscreen refuses before the real SMTP service). What is refused here
// gets a 4xx: the sender keeps it, nothing is lost, and a partner's real
// package is kept once the flood has passed.
package qguard

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"
)

// Config bounds the quarantine.
type Config struct {
	QuotaBytes    int64         // all held messages together
	PerSourceHour int           // messages quarantined per client address per hour
	AlertInterval time.Duration // alerts after the first are grouped over this long
}

// Refusal says why a message was not quarantined.
type Refusal struct {
	Reason string // "quota" or "rate"
	Detail string
}

func (r *Refusal) Error() string { return "quarantine " + r.Reason + ": " + r.Detail }

// Guard admits messages into the quarantine.
type Guard struct {
	cfg Config
	Now func() time.Time

	mu     sync.Mutex
	recent map[netip.Prefix][]time.Time
}

// New returns a guard.
func New(cfg Config) *Guard {
	return &Guard{cfg: cfg, Now: time.Now, recent: map[netip.Prefix][]time.Time{}}
}

func prefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// Admit decides whether a message of size bytes from src may be
// quarantined while held bytes are held already; when it may, it is
// counted against src's rate.
func (g *Guard) Admit(src netip.Addr, size, held int64) error {
	if g.cfg.QuotaBytes > 0 && held+size > g.cfg.QuotaBytes {
		return &Refusal{Reason: "quota", Detail: fmt.Sprintf("%d bytes held, %d more would pass the quota of %d", held, size, g.cfg.QuotaBytes)}
	}
	if g.cfg.PerSourceHour <= 0 || !src.IsValid() {
		return nil
	}
	now := g.Now()
	p := prefix(src)
	g.mu.Lock()
	defer g.mu.Unlock()
	ts := g.recent[p]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= time.Hour {
		i++
	}
	ts = ts[i:]
	if len(ts) >= g.cfg.PerSourceHour {
		g.recent[p] = ts
		return &Refusal{Reason: "rate", Detail: fmt.Sprintf("%s had %d messages quarantined in the last hour", p, len(ts))}
	}
	g.recent[p] = append(ts, now)
	if len(g.recent) > 10000 {
		// Bounded memory under a spread-out flood: forget idle sources.
		for k, v := range g.recent {
			if len(v) == 0 || now.Sub(v[len(v)-1]) >= time.Hour {
				delete(g.recent, k)
			}
		}
	}
	return nil
}

// Alert is one alert to raise: the first of a group (Count 1) or a
// summary of those that followed it.
type Alert struct {
	First   bool
	Count   int
	ByCheck map[string]int // the failed check's name, e.g. "malformed"
	Since   time.Time
}

// Summary is the one-line text of a grouped alert.
func (a Alert) Summary() string {
	keys := make([]string, 0, len(a.ByCheck))
	for k := range a.ByCheck {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, a.ByCheck[k])
	}
	return fmt.Sprintf("%d more since %s: %s", a.Count, a.Since.UTC().Format(time.RFC3339), strings.Join(parts, ", "))
}

// Alerts groups alerts: the first after a quiet interval is raised at
// once; the ones that follow within the interval are counted and raised
// as one summary when it ends.
type Alerts struct {
	interval time.Duration
	raise    func(Alert)

	mu      sync.Mutex
	open    bool // an interval is running
	pending Alert
	timer   *time.Timer
	closed  bool
}

// NewAlerts returns a grouper calling raise (never concurrently with
// itself for the same grouper).
func NewAlerts(interval time.Duration, raise func(Alert)) *Alerts {
	return &Alerts{interval: interval, raise: raise}
}

// Add records one quarantined message's failed check, and reports whether
// it was raised at once (otherwise it is in the next summary).
func (a *Alerts) Add(check string) bool {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return false
	}
	if !a.open || a.interval <= 0 {
		a.open = a.interval > 0
		if a.open {
			a.timer = time.AfterFunc(a.interval, a.flush)
		}
		a.mu.Unlock()
		a.raise(Alert{First: true, Count: 1, ByCheck: map[string]int{check: 1}, Since: time.Now()})
		return true
	}
	if a.pending.Count == 0 {
		a.pending = Alert{ByCheck: map[string]int{}, Since: time.Now()}
	}
	a.pending.Count++
	a.pending.ByCheck[check]++
	a.mu.Unlock()
	return false
}

// flush raises the summary of the interval that ended, if any, and keeps
// the grouping open for one more interval when there was one.
func (a *Alerts) flush() {
	a.mu.Lock()
	p := a.pending
	a.pending = Alert{}
	if p.Count == 0 || a.closed {
		a.open = false
		a.mu.Unlock()
		return
	}
	a.timer = time.AfterFunc(a.interval, a.flush)
	a.mu.Unlock()
	a.raise(p)
}

// Close raises what is pending and stops grouping.
func (a *Alerts) Close() {
	a.mu.Lock()
	if a.timer != nil {
		a.timer.Stop()
	}
	p := a.pending
	a.pending = Alert{}
	a.closed = true
	a.mu.Unlock()
	if p.Count > 0 {
		a.raise(p)
	}
}
