// Package inbound is in charge of the partner side of a gateway: the
// inbound listener (STARTTLS before MAIL, recipients only this agency's
// mailboxes), and what happens to what partners send: the envelope opened
// with every check (envelope.Open), the route's mutual TLS checked
// (tlsroute), the inbound policy applied, the package delivered to the
// agency's mailboxes (delivery) with its receipt recorded (to be sealed
// and queued by the receipt batcher, gateway/receipts) with the delivery
// record, clocks and audit events in one transaction;
// receipts and key-change notices from partners recorded; and whatever
// fails a check quarantined whole, for an administrator to inspect and
// release (released messages are processed again with every check).
package inbound

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/admission"
	"github.com/conduit-gateway/conduit/gateway/keyring"
	"github.com/conduit-gateway/conduit/gateway/qguard"
	"github.com/conduit-gateway/conduit/gateway/smtpserver"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/gateway/tlsroute"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/metrics"
	"github.com/conduit-gateway/conduit/policy"
)

// Keys is the key ring as the receiving side uses it.
type Keys interface {
	Ready(ctx context.Context) error
	Identity() *keys.Identity
	Partners() *keys.Partners
	SealTarget(agency string) (cert *keys.Cert, holdReason string, ok bool)
	Offer(ctx context.Context, c *keys.Cert, agency, pinned, source string) (store.PartnerKey, bool)
	Record(ctx context.Context, c *keys.Cert, k store.PartnerKey) (store.PartnerKey, bool, error)
	Load(ctx context.Context) error
	AlertAdmins(ctx context.Context, subject, text string)
}

// Store is the store as the receiving side uses it.
type Store interface {
	Update(ctx context.Context, f func(store.Tx) error) error
	Delivered(ctx context.Context, originator, packageID string) (bool, error)
	List(ctx context.Context, f store.Filter) ([]store.Item, error)
	ListQuarantine(ctx context.Context, state store.QState) ([]store.QItem, error)
	GetQuarantine(ctx context.Context, id int64) (store.QItem, error)
}

// Auditor is the audit trail as the receiving side writes it.
type Auditor interface {
	Append(ctx context.Context, es ...audit.Event)
	Stage(tx audit.Stager, es ...audit.Event) error
	Kick()
}

// Deliverer hands opened packages to the agency's mailboxes.
type Deliverer interface {
	Deliver(ctx context.Context, mailbox, originator, pkgID string, extraHeader, msg []byte) error
}

// Options are the parts an inbound server works with.
type Options struct {
	Engine  *policy.Engine
	Keys    Keys
	Store   Store
	Audit   Auditor
	Deliver Deliverer
	Metrics *metrics.Metrics
	Log     *slog.Logger
	Now     func() time.Time
	// Queued is told that items and clocks were stored (the relay and the
	// clock keeper wake).
	Queued func()
	// Receipts is told that a receipt was recorded to send (the receipt
	// batcher wakes); nil: nobody.
	Receipts func()
	Hostname string
	TLS      *tls.Config
	// InFlight says whether a queued item is being relayed right now (a
	// receipt for a queued item is taken only then); nil: never.
	InFlight func(id int64) bool
}

// Server is the partner front end of one gateway.
type Server struct {
	cfg      *config.Config
	self     *config.Agency
	engine   *policy.Engine
	keys     Keys
	store    Store
	audit    Auditor
	deliver  Deliverer
	metrics  *metrics.Metrics
	log      *slog.Logger
	now      func() time.Time
	queued   func()
	receipts func()
	hostname string
	tls      *tls.Config
	handlers smtpserver.Handlers
	releases chan struct{}
	inFlight func(id int64) bool
	qguard   *qguard.Guard
	alerts   *qguard.Alerts
	// plainIPs are the addresses of the partners without Conduit
	// (envelope: pgp-mime), which may present no client certificate:
	// their gateways' hosts in the directory, looked up once at start.
	plainIPs atomic.Pointer[map[netip.Addr]string]
}

// New returns an inbound server for cfg's agency.
func New(cfg *config.Config, o Options) *Server {
	q := o.Queued
	if q == nil {
		q = func() {}
	}
	r := o.Receipts
	if r == nil {
		r = func() {}
	}
	srv := &Server{cfg: cfg, self: cfg.Self(), engine: o.Engine, keys: o.Keys, store: o.Store, audit: o.Audit,
		deliver: o.Deliver, metrics: o.Metrics, log: o.Log, now: o.Now, queued: q, receipts: r, hostname: o.Hostname, tls: o.TLS,
		releases: make(chan struct{}, 1), inFlight: o.InFlight}
	if srv.inFlight == nil {
		srv.inFlight = func(int64) bool { return false }
	}
	go srv.resolvePlainPartners()
	qc := cfg.Quarantine
	srv.qguard = qguard.New(qguard.Config{QuotaBytes: qc.QuotaBytes, PerSourceHour: qc.PerSourceHour})
	srv.alerts = qguard.NewAlerts(time.Duration(qc.AlertInterval), func(a qguard.Alert) {
		if a.First {
			return // raised by quarantine itself, with the message's details
		}
		srv.log.Error("admin alert: more packages quarantined", "count", a.Count, "summary", a.Summary())
	})
	return srv
}

// Close raises the quarantine alerts still grouped.
func (srv *Server) Close() { srv.alerts.Close() }

// Stop cuts the message handlers still running (their context is
// cancelled: they answer 4xx) and waits for every one to return.
func (srv *Server) Stop() {
	srv.handlers.Cut()
	srv.handlers.Wait()
}

// SMTP builds the inbound listener's SMTP server.
func (srv *Server) SMTP() *smtp.Server {
	return smtpserver.New(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		// go-smtp makes a new session at each EHLO, so after STARTTLS
		// too: a partner gateway's verified client certificate moves the
		// connection into the slots kept for partners, out of reach of
		// the pre-auth deadlines and of eviction.
		s := &inSession{srv: srv, conn: c}
		if st, ok := c.TLSConnectionState(); ok {
			if a := tlsroute.PartnerOf(srv.cfg.Directory, srv.cfg.Agency, st); a != nil {
				s.partner = a.ID
			} else if id := srv.plainPartnerAt(c.Conn().RemoteAddr()); id != "" {
				s.partner = id
			}
			if s.partner != "" {
				admission.Promote(c.Conn())
			}
		}
		return s, nil
	}), smtpserver.Options{Hostname: srv.hostname, TLS: srv.tls, Limits: srv.cfg.Limits, Log: srv.log})
}

// openParams are the envelope checks' parameters for this gateway.
func (srv *Server) openParams(replay envelope.ReplayChecker) envelope.OpenParams {
	return envelope.OpenParams{
		Identity: srv.keys.Identity(), Partners: srv.keys.Partners(), Replay: replay, Now: srv.now,
		Legacy: srv.cfg.Legacy(), MaxSize: srv.cfg.Limits.MessageBytes * 2,
	}
}

// hdrTriage, on a delivered copy with a triage clock, names the triage
// address (the gateway's own, where staff reply to record the triage)
// and the package.
const hdrTriage = "Conduit-Triage"

// triageHeader is the header line a delivered copy with a triage clock
// carries.
func (srv *Server) triageHeader(pkgID string, dec policy.Decision) string {
	hours, ok := dec.Deadline(policy.DeadlineTriage)
	if !ok {
		return ""
	}
	return fmt.Sprintf("%s: reply to <%s> when triaged (package %s, within %d hours)\r\n", hdrTriage, keyring.Address(srv.keys.Identity()), pkgID, hours)
}

// resolvePlainPartners looks up the gateway hosts of the partners without
// Conduit, once, with a short timeout (an IP literal needs no lookup).
func (srv *Server) resolvePlainPartners() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips := map[netip.Addr]string{}
	for _, a := range srv.cfg.Directory.Agencies {
		if !a.PlainPGPMIME() || a.ID == srv.cfg.Agency {
			continue
		}
		for _, g := range a.GatewayHosts() {
			host, _ := config.HostPort(g)
			if ip, err := netip.ParseAddr(host); err == nil {
				ips[ip.Unmap()] = a.ID
				continue
			}
			found, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
			if err != nil {
				srv.log.Warn("a plain PGP/MIME partner's gateway host was not resolved; its connections are treated as strangers' until a restart", "agency", a.ID, "host", host, "err", err)
				continue
			}
			for _, ip := range found {
				ips[ip.Unmap()] = a.ID
			}
		}
	}
	srv.plainIPs.Store(&ips)
}

// plainPartnerAt returns the partner without Conduit whose gateway host
// has this address, or "".
func (srv *Server) plainPartnerAt(a net.Addr) string {
	m := srv.plainIPs.Load()
	if m == nil {
		return ""
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return ""
	}
	return (*m)[ap.Addr().Unmap()]
}
