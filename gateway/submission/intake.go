package submission

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/clocks"
	"github.com/conduit-gateway/conduit/gateway/keyring"
	"github.com/conduit-gateway/conduit/gateway/senderhdr"
	"github.com/conduit-gateway/conduit/gateway/smtpserver"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/marking"
	"github.com/conduit-gateway/conduit/policy"
)

// Headers a submitted message may carry besides Handling-Label, for the
// manifest facts the policy routes on. They are read at intake and travel
// only inside the envelope (in its manifest part).
const (
	hdrRisk    = "Conduit-Risk"    // "escape, firearms"
	hdrTopic   = "Conduit-Topic"   // "corruption"
	hdrSubject = "Conduit-Subject" // "role=governing-governor; establishment=hmp-northgate; flags=cat-a"
	hdrConsent = "Conduit-Originator-Consent"
)

type submission struct {
	user  *config.User
	from  string
	rcpts []string
	msg   *envelope.Spool
}

// headerRoom is what sealing adds to the protected header section: the
// canonical label, the package id, the HP-Outer records and the content
// type (a few KiB; generous).
const headerRoom = 16 << 10

// intake reads a submitted package's marking and manifest facts, asks the
// sharing policy, seals one envelope per destination agency and stores
// them all durably. It returns the SMTP reply: nil only when every envelope
// is stored, so the 250 that follows is a promise.
func (srv *Server) intake(ctx context.Context, sub submission) error {
	if err := srv.keys.Ready(ctx); err != nil {
		// Fail closed: nothing is sealed without the key backend; the
		// sender's system keeps the message and retries.
		srv.log.Warn("submission deferred: key backend unavailable", "from", sub.from)
		return smtpserver.ErrKeysUnavailable
	}
	r, err := sub.msg.Reader()
	if err != nil {
		return smtpserver.ErrTempStore
	}
	hdr, err := textproto.ReadHeader(bufio.NewReader(r))
	if err != nil {
		return smtpserver.Reply(554, smtp.EnhancedCode{5, 6, 0}, "Message refused: its header cannot be read: "+err.Error())
	}
	m, rerr := srv.manifestFromHeader(hdr, sub.rcpts)
	if rerr != nil {
		return rerr
	}
	// Only after the routing facts were read: the header the envelope
	// carries names the author the gateway checked and nothing a gateway
	// alone may write (senderhdr). The author is the MAIL FROM already
	// checked: the account's own address, or, for the agency's mail
	// server's relay account, the agency mailbox it sends for.
	consent := hdr.Get(hdrConsent)
	removed, herr := senderhdr.CheckSubmission(&hdr, senderhdr.Rules{Address: sub.from,
		InDirectory: func(a string) bool { return srv.agencyOfMailbox(a) != nil }})
	if herr != nil {
		srv.metrics.Refused("sender-header")
		srv.log.Info("submission refused: header", "user", sub.user.Name, "err", herr)
		return herr
	}
	if len(removed) > 0 {
		srv.log.Info("gateway header fields removed from a submission", "user", sub.user.Name, "fields", removed)
	}
	var sealedHdr bytes.Buffer
	if err := textproto.WriteHeader(&sealedHdr, hdr); err != nil {
		return smtpserver.Reply(554, smtp.EnhancedCode{5, 6, 0}, "Message refused: its header cannot be written again: "+err.Error())
	}
	// The receiving gateway refuses a protected header section over
	// envelope.MaxHeaderBytes; the envelope adds its own fields (label,
	// HP-Outer records, package id) to what the sender wrote.
	if n := sealedHdr.Len(); n > envelope.MaxHeaderBytes-headerRoom {
		return smtpserver.Reply(552, smtp.EnhancedCode{5, 3, 4}, fmt.Sprintf(
			"Message refused: its header section is %d KiB; partner gateways accept at most %d KiB. Move long text into the body or an attachment",
			n>>10, (envelope.MaxHeaderBytes-headerRoom)>>10))
	}
	// RFC 3463 5.7.1: a package sent through this gateway originates
	// here: it is signed with this agency's key, and a receiver refuses a
	// label whose originator is not the signer.
	if m.Label.Originator != srv.cfg.Agency {
		return smtpserver.Reply(553, smtp.EnhancedCode{5, 7, 1}, fmt.Sprintf(
			"Package refused: the Handling-Label field originator=%q must be %s, this gateway's agency: it signs what it sends. To pass on another agency's package, mark it as yours and give their consent reference in %s",
			m.Label.Originator, srv.cfg.Agency, hdrConsent))
	}
	pkgID := envelope.NewPackageID()
	dec := srv.engine.Decide(ctx, m, policy.Sender{Agency: srv.cfg.Agency, OriginatorConsent: consent})
	// The decision log's record goes with the package's own transaction;
	// a package that is not stored has it written on its own.
	dlog := srv.decided(pkgID, m, dec)
	dlogged := false
	defer func() {
		if !dlogged {
			srv.recordDecision(ctx, dlog)
		}
	}()
	// The events of the intake are written with the envelopes, in the
	// transaction that stores them (stage); a package refused or not
	// stored has its events written straight to the trail.
	events := append([]audit.Event{{Kind: audit.Received, Package: pkgID, Actor: sub.from,
		Detail: fmt.Sprintf("submitted by %s, reference %s, %s, decision %s", sub.user.Name, m.Label.Reference, m.Label.Marking(), dec.Decision)}},
		srv.decisionEvents(pkgID, sub.from, dec)...)
	for i := range events {
		srv.audit.Fill(&events[i]) // stamped now, whenever they are written
	}
	stored := false
	defer func() {
		if !stored {
			srv.audit.Append(ctx, events...)
		}
	}()
	srv.log.Info("intake decision", "user", sub.user.Name, "reference", m.Label.Reference, "decision", dec.Decision,
		"deliveries", len(dec.Deliveries), "refusals", len(dec.Refusals), "holds", len(dec.Holds), "rules", smtpserver.RuleIDs(dec))
	if len(dec.Deliveries) == 0 && len(dec.Holds) == 0 {
		return smtpserver.Refusal(dec)
	}

	// One envelope per destination agency, all under one package id. A
	// held destination is sealed and stored too, held until an
	// administrator releases it (conduit queue release).
	byAgency := map[string][]policy.Delivery{}
	held := map[string]policy.HoldEntry{}
	var order []string
	for _, d := range dec.Deliveries {
		if _, ok := byAgency[d.Agency]; !ok {
			order = append(order, d.Agency)
		}
		byAgency[d.Agency] = append(byAgency[d.Agency], d)
	}
	for _, h := range dec.Holds {
		if _, ok := byAgency[h.Agency]; ok {
			continue // delivered to some mailboxes there already
		}
		a := srv.cfg.Directory.Agency(h.Agency)
		if a == nil || len(a.Mailboxes) == 0 {
			continue
		}
		mb := a.Mailbox("intake")
		if mb == nil {
			mb = &a.Mailboxes[0]
		}
		held[h.Agency] = h
		order = append(order, h.Agency)
		byAgency[h.Agency] = []policy.Delivery{{Agency: h.Agency, Mailbox: mb.Address, Priority: policy.Normal, Rule: h.Rule}}
	}
	var items []store.Item
	srv.keys.Sync(ctx)
	self := srv.keys.Identity()
	if _, err := self.Entity.VerifyPrimaryKey(srv.now(), nil); err != nil {
		// Fail closed: a package this gateway cannot sign is not accepted.
		why := keys.StatusOf(self.Entity, srv.now()).Usable
		srv.log.Error("admin alert: this gateway's own key cannot sign", "err", why)
		return smtpserver.Reply(451, smtp.EnhancedCode{4, 7, 0}, fmt.Sprintf(
			"Package not accepted: this gateway's own key cannot sign (%v); nothing was sent. Your administrator has been alerted and must install a valid key; try again later", why))
	}
	keyHeld := map[string]string{}
	for _, agency := range order {
		cert, keyHold, ok := srv.keys.SealTarget(agency)
		if !ok {
			// Fail closed: no package leaves unencrypted, and none is sealed
			// to a key the directory does not pin.
			return srv.noSealTarget(agency, m, byAgency[agency])
		}
		if keyHold != "" {
			// The partner's key has expired or been revoked: the package
			// is sealed to this gateway's own key and held, and sealed
			// again to the partner's key once a usable one is in force.
			// Never sent to an unusable key, never dropped.
			keyHeld[agency] = keyHold
		}
		body, err := sub.msg.Reader()
		if err != nil {
			return smtpserver.ErrTempStore
		}
		// The header checked above, then the body as submitted.
		bbr := bufio.NewReader(body)
		if _, err := textproto.ReadHeader(bbr); err != nil {
			return smtpserver.ErrTempStore
		}
		sealIn := io.MultiReader(bytes.NewReader(sealedHdr.Bytes()), bbr)
		// The envelope's manifest names this destination among the
		// addressees when this gateway's policy sent it there (a redirect or
		// a copy by a local rule the receiver cannot evaluate): the sending
		// gateway signs its own routing decision, and the receiver's
		// known-recipient check then sees it was meant to come.
		dm := *m
		if !slices.Contains(dm.To, agency) {
			dm.To = append(slices.Clone(dm.To), agency)
		}
		// Room for the armored envelope (a third more than the message,
		// and the MIME and OpenPGP framing) from the start, so that the
		// buffer is not copied as it grows.
		var buf bytes.Buffer
		buf.Grow(int(sub.msg.Size()*4/3) + 16<<10)
		start := time.Now()
		_, err = envelope.Seal(ctx, &buf, sealIn, envelope.SealParams{
			Signer: self, Recipients: []*keys.Cert{cert}, Label: m.Label, Manifest: &dm,
			PackageID: pkgID, Now: srv.now, Profile: keys.ProfileOf(self.Entity),
			// A partner without Conduit gets standard PGP/MIME, no manifest.
			Plain: srv.cfg.Directory.Agency(agency).PlainPGPMIME(),
		})
		srv.metrics.ObserveSeal(time.Since(start))
		if err != nil {
			var le *envelope.LabelError
			if errors.As(err, &le) {
				return smtpserver.Reply(554, smtp.EnhancedCode{5, 6, 0}, "Package refused: "+le.Error())
			}
			if errors.Is(err, keys.ErrUnavailable) || srv.keys.Down(ctx) {
				// Transit refused to sign (go-crypto loses an RSA signer's
				// error, so the gate is asked): nothing goes out unsigned.
				srv.log.Error("seal failed: key backend unavailable", "destination", agency, "err", err)
				return smtpserver.ErrKeysUnavailable
			}
			srv.log.Error("seal failed", "destination", agency, "err", err)
			return smtpserver.Reply(451, smtp.EnhancedCode{4, 7, 0}, "Temporary failure sealing the package; nothing was sent, try again shortly")
		}
		// The partner's gateway refuses an envelope over its size limit
		// (552 5.3.4, final): refuse it here, before any 250.
		if a := srv.cfg.Directory.Agency(agency); a != nil && a.MessageBytes > 0 && int64(buf.Len()) > a.MessageBytes {
			return smtpserver.Reply(552, smtp.EnhancedCode{5, 3, 4}, fmt.Sprintf(
				"Package refused, nothing was sent: sealed for %s it is %.1f MiB, more than %s's gateway accepts (%.1f MiB). Send the attachments in smaller packages",
				agency, float64(buf.Len())/(1<<20), agency, float64(a.MessageBytes)/(1<<20)))
		}
		it := store.Item{
			PackageID: pkgID, Destination: agency, MailFrom: keyring.Address(self), Submitter: sub.from,
			Marking: m.Label.Marking(), Envelope: buf.Bytes(), Priority: store.Normal,
		}
		for _, d := range byAgency[agency] {
			if !slices.Contains(it.Recipients, d.Mailbox) {
				it.Recipients = append(it.Recipients, d.Mailbox)
			}
			if d.Priority == policy.Immediate {
				it.Priority = store.Immediate
			}
		}
		if h, ok := held[agency]; ok {
			it.State, it.Reason = store.OnHold, h.Rule+": "+h.Reason
		} else if why, ok := keyHeld[agency]; ok {
			it.State, it.Reason = store.OnHold, why
		}
		items = append(items, it)
	}
	stagedEvents := slices.Clone(events)
	for _, it := range items {
		detail := "sealed to " + it.Destination + "'s pinned key for " + strings.Join(it.Recipients, ", ")
		if _, ok := keyHeld[it.Destination]; ok {
			detail = "sealed to this gateway's own key, held for " + it.Destination + "'s key, for " + strings.Join(it.Recipients, ", ")
		}
		stagedEvents = append(stagedEvents, audit.Event{Kind: audit.Sealed, Package: pkgID, Destination: it.Destination, Actor: sub.from, Detail: detail})
		detail = "priority " + it.Priority.String()
		if it.State == store.OnHold {
			detail = "held: " + it.Reason
		}
		stagedEvents = append(stagedEvents, audit.Event{Kind: audit.Queued, Package: pkgID, Destination: it.Destination,
			Rule: byAgency[it.Destination][0].Rule, Actor: sub.from, Detail: detail})
	}
	// Security invariant 3: durable before the 250, with its clocks and
	// its audit events, in one transaction.
	now := srv.now()
	if err := srv.store.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.Enqueue(items); err != nil {
			return err
		}
		if err := clocks.Add(tx, clocks.Outbound(now, pkgID, dec, order), clocks.Holds(now, pkgID, dec, held),
			clocks.Retention(now, pkgID, srv.cfg.Agency, dec)); err != nil {
			return err
		}
		// Not part of the promise: a failed record leaves the package's
		// writes as they are (the method undoes only itself) and is
		// tried again on its own.
		inTx := dlog != nil && tx.RecordDecided(*dlog, DecisionsKept) == nil
		if err := srv.audit.Stage(tx, stagedEvents...); err != nil {
			return err
		}
		dlogged = inTx
		return nil
	}); err != nil {
		dlogged = false
		srv.log.Error("enqueue failed", "package", pkgID, "err", err)
		return smtpserver.ErrTempStore
	}
	stored = true
	srv.audit.Kick()
	srv.queued()
	srv.log.Info("package queued", "package", pkgID, "destinations", order, "held", len(held))
	var sendNow []string
	for _, a := range order {
		_, h := held[a]
		_, k := keyHeld[a]
		if !h && !k {
			sendNow = append(sendNow, a)
		}
	}
	srv.notifyOutcome(ctx, sub.from, pkgID, m, dec, keyHeld)
	ok := acceptReply(pkgID, sendNow, byAgency, dec).(*smtp.SMTPError)
	for _, a := range order {
		if _, held := keyHeld[a]; held {
			ok.Message += fmt.Sprintf("; held for %s: its key cannot be used now, so nothing is sent to it until a valid key is in force (your administrator has been alerted)", a)
		}
	}
	return ok
}

// manifestFromHeader builds the package manifest from a submitted message.
func (srv *Server) manifestFromHeader(h textproto.Header, rcpts []string) (*envelope.Manifest, error) {
	m := &envelope.Manifest{From: srv.cfg.Agency}
	for _, rc := range rcpts {
		if a := srv.agencyOfMailbox(rc); a != nil && !slices.Contains(m.To, a.ID) {
			m.To = append(m.To, a.ID)
		}
	}
	// The marking: a Handling-Label header, a Purview sensitivity label or
	// a subject marking, read through the configured tables.
	mmsg := marking.Message{Label: h.Get(envelope.LabelHeader), Purview: h.Get(marking.PurviewHeader), Subject: h.Get("Subject")}
	l, markedBy, err := marking.FromMessage(mmsg, srv.cfg.Legacy(), srv.cfg.Purview())
	if err != nil {
		return nil, smtpserver.Reply(554, smtp.EnhancedCode{5, 6, 0}, "Package refused: "+err.Error())
	}
	m.Label = l
	if m.Label.Created.IsZero() {
		m.Label.Created = srv.now().UTC().Truncate(1e9)
	}
	if m.Label.Originator == "" {
		m.Label.Originator = srv.cfg.Agency
	}
	for _, v := range splitList(h.Get(hdrRisk)) {
		m.Risk = append(m.Risk, strings.ToLower(v))
	}
	m.Topic = strings.ToLower(strings.TrimSpace(h.Get(hdrTopic)))
	for _, v := range h.Values(hdrSubject) {
		s, err := parseSubjectHeader(v)
		if err != nil {
			return nil, smtpserver.Reply(554, smtp.EnhancedCode{5, 6, 0}, "Package refused: the "+hdrSubject+" header is wrong: "+err.Error())
		}
		m.Subjects = append(m.Subjects, s)
	}
	if err := m.ValidateFacts(); err != nil {
		return nil, smtpserver.Reply(554, smtp.EnhancedCode{5, 6, 0}, "Package refused: "+err.Error())
	}
	if markedBy != nil && m.Label.Validate() != nil {
		// A Purview label or a subject marking says how sensitive the
		// package is, nothing else: ask for the rest, field by field.
		return nil, smtpserver.Reply(554, smtp.EnhancedCode{5, 6, 0}, marking.Refusal(*markedBy, m.Label, mmsg.SanitisedSaid()))
	}
	return m, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseSubjectHeader reads "role=...; establishment=...; region=...; flags=a,b".
func parseSubjectHeader(v string) (envelope.Subject, error) {
	var s envelope.Subject
	for _, part := range strings.Split(v, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, val, ok := strings.Cut(part, "=")
		if !ok {
			return s, fmt.Errorf("%q is not name=value", part)
		}
		val = strings.Trim(strings.TrimSpace(val), `"`)
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "role":
			s.Role = envelope.Role(val)
		case "establishment":
			s.Establishment = val
		case "region":
			s.Region = val
		case "post":
			s.Post = val
		case "flags":
			s.Flags = splitList(val)
		case "id":
			// The subject's identity: it travels only inside the envelope
			// and is never logged or audited.
			s.ID = val
		default:
			return s, fmt.Errorf("unknown field %q; allowed: role, post, establishment, region, flags, id", k)
		}
	}
	if s.Role == "" && s.Post == "" {
		return s, errors.New("role is missing")
	}
	return s, nil
}

// acceptReply is the 250 text: where the package goes, and what the policy
// changed, so the sender is never surprised.
func acceptReply(pkgID string, dests []string, by map[string][]policy.Delivery, d policy.Decision) error {
	var to []string
	for _, a := range dests {
		var rules []string
		for _, dl := range by[a] {
			if !slices.Contains(rules, dl.Rule) {
				rules = append(rules, dl.Rule)
			}
			if dl.Priority == policy.Immediate && !slices.Contains(rules, "immediate") {
				rules = append(rules, "immediate")
			}
		}
		to = append(to, a+" ("+strings.Join(rules, ", ")+")")
	}
	msg := "Package " + pkgID
	if len(to) > 0 {
		msg += " queued for " + strings.Join(to, ", ")
	} else {
		msg += " accepted and held; nothing is sent until an administrator releases it"
	}
	for _, r := range d.Refusals {
		msg += fmt.Sprintf("; not for %s: %s (%s)", r.Agency, r.Reason, r.Rule)
	}
	for _, h := range d.Holds {
		msg += fmt.Sprintf("; held for %s: %s (%s), kept sealed until released", h.Agency, h.Reason, h.Rule)
	}
	return smtpserver.Reply(250, smtp.EnhancedCode{2, 0, 0}, msg)
}

// decisionEvents are what the policy did to an outbound package: each
// redirection and each refusal, with its rule.
func (srv *Server) decisionEvents(pkgID, actor string, d policy.Decision) []audit.Event {
	var es []audit.Event
	for _, s := range d.Trace {
		switch s.Effect {
		case policy.EffectRedirect:
			es = append(es, audit.Event{Kind: audit.Redirected, Package: pkgID, Rule: s.Rule, Actor: actor, Detail: s.Detail})
		case policy.EffectRecord:
			if s.Rule == policy.RuleLegacyMarking {
				es = append(es, audit.Event{Kind: audit.Marking, Package: pkgID, Rule: s.Rule, Actor: actor, Detail: s.Detail})
			}
		case policy.EffectDeny:
			srv.metrics.Refused(s.Rule)
			es = append(es, audit.Event{Kind: audit.Refused, Package: pkgID, Rule: s.Rule, Actor: actor, Detail: s.Detail})
		}
	}
	for _, r := range d.Refusals {
		srv.metrics.Refused(r.Rule)
		es = append(es, audit.Event{Kind: audit.Refused, Package: pkgID, Destination: r.Agency, Rule: r.Rule, Actor: actor, Detail: r.Reason})
	}
	return es
}

// noSealTarget is the refusal of a package for a destination it cannot be
// sealed to: an agency not on Conduit (no gateway in the directory), or
// one whose pinned key this gateway lacks; it says when the policy, not
// the sender, sent it there.
func (srv *Server) noSealTarget(agency string, m *envelope.Manifest, ds []policy.Delivery) error {
	why := "this gateway has no pinned key for " + agency + ", so it cannot be sealed to them"
	if a := srv.cfg.Directory.Agency(agency); a != nil && a.Gateway == "" {
		why = agency + " is not on Conduit (the directory gives it no gateway), so it cannot be sent there"
	} else {
		srv.log.Error("admin alert: no pinned certificate for a destination", "destination", agency)
		why += " (your administrator has been alerted)"
	}
	if !slices.Contains(m.To, agency) {
		var rules []string
		for _, d := range ds {
			if !slices.Contains(rules, d.Rule) {
				rules = append(rules, d.Rule)
			}
		}
		why = fmt.Sprintf("you addressed %s; the sharing policy sent it to %s instead or as well (%s), and %s",
			strings.Join(m.To, ", "), agency, strings.Join(rules, ", "), why)
	}
	return smtpserver.Reply(550, smtp.EnhancedCode{5, 7, 0}, "Package refused, nothing was sent: "+why)
}
