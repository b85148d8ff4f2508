package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
)

// Partner keys are pinned by fingerprint (security invariant: a changed
// key is never used silently). A certificate with another fingerprint, from
// the directory's certificate folder or in a key-change notice, waits as a
// pending change until an administrator approves it (conduit keys
// approve); an update the pinned key signed itself (a new encryption
// subkey, a new expiry, a revocation) is taken at once. Deliveries to a
// partner whose key has expired or been revoked are held with the reason:
// not sent, not dropped.

// holdKeyPrefix starts the reason of an item held for its partner's key,
// so that the hold is lifted when a usable key is in force.
const holdKeyPrefix = "partner-key: "

// keyWatch is what the key watcher remembers between rounds.
type keyWatch struct {
	mu      sync.Mutex
	version int64
	warned  map[string]string // fingerprint -> day of the last expiry warning
}

// loadPartners builds the partner certificates in force: for each
// directory agency, the key an administrator approved (or an update the
// pinned key signed) when it follows from the directory's pin, else the
// certificate file when its fingerprint is the pin. A certificate file
// with another fingerprint is recorded as a pending change and not used.
func (g *Gateway) loadPartners(ctx context.Context) error {
	version, err := g.store.PartnerKeysVersion(ctx)
	if err != nil {
		return err
	}
	recs, err := g.store.ListPartnerKeys(ctx, "", store.KeyApproved)
	if err != nil {
		return err
	}
	approved := map[string]store.PartnerKey{}
	for _, r := range recs {
		if _, ok := approved[r.Agency]; !ok { // newest first
			approved[r.Agency] = r
		}
	}
	ps := keys.NewPartners()
	for _, a := range g.cfg.Directory.Agencies {
		if a.ID == g.cfg.Agency {
			continue
		}
		pin := keys.NormalizeFingerprint(a.Fingerprint)
		if r, ok := approved[a.ID]; ok && pin != "" && (r.Fingerprint == pin || r.Replaces == pin) {
			c, err := keys.ReadCert(bytes.NewReader(r.Cert))
			if err == nil {
				err = ps.Add(c, a.ID, r.Fingerprint)
			}
			if err == nil {
				if r.Fingerprint != pin {
					g.log.Warn("the directory still pins a partner's previous key; an approved change is in force: update the directory",
						"partner", a.ID, "pinned", pin, "in_force", r.Fingerprint, "approved_by", r.DecidedBy)
				}
				continue
			}
			g.log.Error("approved partner key not usable; falling back to the directory's", "partner", a.ID, "err", err)
		}
		path := filepath.Join(g.cfg.Keys.Partners, a.ID+".pub.asc")
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("partner certificate: %w", err)
		}
		c, err := keys.ReadCert(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("partner certificate %s: %w", path, err)
		}
		if pin == "" {
			g.log.Warn("partner certificate not used: the directory pins no fingerprint", "partner", a.ID)
			continue
		}
		if c.Fingerprint() != pin {
			// Never used silently: recorded for an administrator.
			g.offerPartnerKey(ctx, c, a.ID, pin, "directory certificate file "+path)
			continue
		}
		if err := ps.Add(c, a.ID, pin); err != nil {
			g.log.Error("partner certificate not used", "partner", a.ID, "err", err)
		}
	}
	g.partnerSet.Store(ps)
	g.keyWatch.mu.Lock()
	g.keyWatch.version = version
	g.keyWatch.mu.Unlock()
	return nil
}

// offerPartnerKey records a certificate with a fingerprint other than the
// pinned one as a pending change, and alerts the administrators the first
// time it is seen.
func (g *Gateway) offerPartnerKey(ctx context.Context, c *keys.Cert, agency, pinned, source string) (store.PartnerKey, bool) {
	rec, isNew, err := g.recordKey(ctx, c, store.PartnerKey{Agency: agency, Replaces: pinned, State: store.KeyPending, Source: source})
	if err != nil {
		g.log.Error("partner key change not recorded", "partner", agency, "err", err)
		return rec, false
	}
	if !isNew {
		return rec, false
	}
	what := fmt.Sprintf("%s presented key %s, but %s is pinned; it is not used until an administrator approves it (conduit keys pending)",
		agency, c.Fingerprint(), orNone(pinned))
	g.log.Error("admin alert: partner key change pending", "partner", agency, "offered", c.Fingerprint(), "pinned", pinned, "source", source)
	g.audit(ctx, audit.Event{Kind: audit.KeyChange, Destination: agency, Rule: "pending", Detail: what + "; source: " + source})
	g.alertAdmins(ctx, "partner key change pending for "+agency, what+"\r\nSource: "+source+
		"\r\n\r\nCheck the new fingerprint with "+agency+" by a trusted channel, then:\r\n  conduit keys approve "+agency+" "+c.Fingerprint()+
		" --reason \"...\"\r\nor\r\n  conduit keys reject "+agency+" "+c.Fingerprint()+" --reason \"...\"\r\n")
	return rec, true
}

// recordKey stores a partner certificate offered for k.Agency (k says
// in what state, from where, replacing what).
func (g *Gateway) recordKey(ctx context.Context, c *keys.Cert, k store.PartnerKey) (store.PartnerKey, bool, error) {
	var pub bytes.Buffer
	if err := keys.WritePublic(&pub, c.Entity); err != nil {
		return store.PartnerKey{}, false, err
	}
	k.Fingerprint, k.Cert, k.Seen = c.Fingerprint(), pub.Bytes(), g.Now()
	var rec store.PartnerKey
	var isNew bool
	err := g.store.Update(ctx, func(tx store.Tx) error {
		var err error
		rec, isNew, err = tx.OfferPartnerKey(k)
		return err
	})
	return rec, isNew, err
}

func orNone(s string) string {
	if s == "" {
		return "no key"
	}
	return s
}

// alertAdmins mails the configured administrators. The text is metadata
// only: agencies, fingerprints, dates; never package content.
func (g *Gateway) alertAdmins(ctx context.Context, subject, text string) {
	if len(g.cfg.Alerts.Administrators) == 0 {
		return
	}
	now := g.Now()
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Conduit gateway <%s>\r\nSubject: [Conduit] %s\r\nDate: %s\r\n", emailOfIdentity(g.identity()), subject, now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Auto-Submitted: auto-generated\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n", text)
	sum := sha256.Sum256([]byte(subject + "\x00" + now.Format(time.RFC3339Nano)))
	for _, a := range g.cfg.Alerts.Administrators {
		if err := g.deliver(ctx, a, g.cfg.Agency, "alert-"+hex.EncodeToString(sum[:8]), nil, b.Bytes()); err != nil {
			g.log.Error("administrator alert not delivered", "to", a, "err", err)
		}
	}
}

// runKeyWatch reloads the partner keys when an administrator decides a
// change (the CLI writes the store; the running gateway sees the version
// move), lifts key holds once a usable key is in force, and warns ahead of
// key expiry.
func (g *Gateway) runKeyWatch(ctx context.Context) {
	t := time.NewTicker(deadlinePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.syncPartners(ctx)
		g.liftKeyHolds(ctx)
		g.warnExpiry(ctx)
	}
}

// syncPartners reloads the partner keys when the store's record of them
// changed (an administrator's decision made with the CLI). It is called
// before sealing and before relaying, so that nothing is sealed or sent
// with a key decision already superseded.
func (g *Gateway) syncPartners(ctx context.Context) {
	v, err := g.store.PartnerKeysVersion(ctx)
	if err != nil {
		return
	}
	g.keyWatch.mu.Lock()
	changed := v != g.keyWatch.version
	g.keyWatch.mu.Unlock()
	if !changed {
		return
	}
	if err := g.loadPartners(ctx); err != nil {
		g.log.Error("partner keys not reloaded; the keys in force stay", "err", err)
		return
	}
	g.log.Info("partner keys reloaded")
}

// liftKeyHolds queues again the items held for a partner key once that
// partner's key in force is usable; the relay seals them again to it
// first when they were sealed to this gateway's own key.
func (g *Gateway) liftKeyHolds(ctx context.Context) {
	held, err := g.store.List(ctx, store.Filter{State: store.OnHold})
	if err != nil {
		return
	}
	now := g.Now()
	for _, it := range held {
		if !strings.HasPrefix(it.Reason, holdKeyPrefix) {
			continue
		}
		cert, ok := g.partners().Get(it.Destination)
		if !ok || cert.Usable(now) != nil {
			continue
		}
		note := fmt.Sprintf("%s's key %s is usable again", it.Destination, cert.Fingerprint())
		if err := g.store.Update(ctx, func(tx store.Tx) error {
			if err := tx.Release(it.ID, note); err != nil {
				return err
			}
			return g.stage(tx, audit.Event{Kind: audit.Released, Package: it.PackageID, Destination: it.Destination, Actor: "key watch", Detail: note})
		}); err != nil {
			g.log.Error("key hold not lifted", "item", it.ID, "err", err)
			continue
		}
		g.kickAudit()
		g.log.Info("key hold lifted", "package", it.PackageID, "destination", it.Destination, "key", cert.Fingerprint())
		g.nudge()
	}
}

// warnExpiry warns, once a day per key, of keys that expire within the
// configured warning period: this agency's own and each partner's.
func (g *Gateway) warnExpiry(ctx context.Context) {
	now := g.Now()
	window := time.Duration(g.cfg.Keys.ExpiryWarning)
	day := now.UTC().Format("2006-01-02")
	type k struct {
		agency string
		st     keys.Status
	}
	all := []k{{g.cfg.Agency, keys.StatusOf(g.identity().Entity, now)}}
	for _, a := range g.cfg.Directory.Agencies {
		if c, ok := g.partners().Get(a.ID); ok {
			all = append(all, k{a.ID, keys.StatusOf(c.Entity, now)})
		}
	}
	for _, x := range all {
		exp := x.st.Expires
		if exp.IsZero() {
			continue
		}
		g.metrics.KeyExpiry(x.agency, exp.Sub(now))
		if exp.Sub(now) > window {
			continue
		}
		g.keyWatch.mu.Lock()
		if g.keyWatch.warned == nil {
			g.keyWatch.warned = map[string]string{}
		}
		done := g.keyWatch.warned[x.st.Fingerprint] == day
		g.keyWatch.warned[x.st.Fingerprint] = day
		g.keyWatch.mu.Unlock()
		if done {
			continue
		}
		var what string
		if exp.After(now) {
			what = fmt.Sprintf("the key %s of %s expires on %s (in %d days)", x.st.Fingerprint, x.agency,
				exp.UTC().Format("2006-01-02 15:04 MST"), int(exp.Sub(now).Hours()/24))
		} else {
			what = fmt.Sprintf("the key %s of %s expired on %s", x.st.Fingerprint, x.agency, exp.UTC().Format("2006-01-02 15:04 MST"))
		}
		advice := "Packages to " + x.agency + " are held from then until it sends an updated key."
		if x.agency == g.cfg.Agency {
			advice = "Partners stop sending to this gateway then: run conduit keys rotate (or extend the key) before it does."
		}
		g.log.Warn("admin alert: key expiry", "agency", x.agency, "fingerprint", x.st.Fingerprint, "expires", exp.UTC().Format(time.RFC3339))
		g.audit(ctx, audit.Event{Kind: audit.Alert, Destination: x.agency, Rule: "key-expiry", Detail: what})
		g.alertAdmins(ctx, "key expiry: "+x.agency, what+".\r\n"+advice)
	}
}

// keyHoldReason is the reason of an item held because its destination's
// key cannot be used.
func (g *Gateway) keyHoldReason(agency string, err error) string {
	return holdKeyPrefix + fmt.Sprintf("%s's key cannot be used (%v); held until a usable key is in force (conduit keys list, conduit keys pending)", agency, err)
}

// checkSealedTo is the relay's last look before sending: the item must be
// sealed to a key the partner can read now. An item sealed to this
// gateway's own key (held for a key at intake) is sealed again to the
// partner's key in force; one sealed to a key that is no longer valid, or
// for a partner whose key expired or was revoked, is held with the reason.
// It returns the item to send, or ok false when it must not be sent now.
func (g *Gateway) checkSealedTo(ctx context.Context, it store.Item) (store.Item, bool) {
	log := g.log.With("package", it.PackageID, "destination", it.Destination)
	g.syncPartners(ctx)
	now := g.Now()
	cert, ok := g.partners().Get(it.Destination)
	hold := func(reason string) (store.Item, bool) {
		if err := g.store.Update(ctx, func(tx store.Tx) error {
			if err := tx.HoldItem(it.ID, reason); err != nil {
				return err
			}
			return g.stage(tx, audit.Event{Kind: audit.Queued, Package: it.PackageID, Destination: it.Destination, Rule: "partner-key", Detail: "held: " + reason})
		}); err != nil {
			log.Error("key hold not recorded", "err", err)
			return it, false
		}
		g.kickAudit()
		log.Error("admin alert: delivery held for the partner's key", "reason", reason)
		g.alertAdmins(ctx, "delivery to "+it.Destination+" held", "Package "+it.PackageID+": "+reason)
		return it, false
	}
	if !ok {
		return hold(holdKeyPrefix + it.Destination + " has no pinned key in force")
	}
	if err := cert.Usable(now); err != nil {
		return hold(g.keyHoldReason(it.Destination, err))
	}
	ids, err := envelope.RecipientKeyIDs(ctx, bytes.NewReader(it.Envelope))
	if err != nil {
		return hold(holdKeyPrefix + "the queued envelope cannot be read: " + err.Error())
	}
	if slices.ContainsFunc(ids, func(id uint64) bool { return cert.HasValidSubkey(id, now) }) {
		return it, true
	}
	self := g.identity()
	if !slices.ContainsFunc(ids, func(id uint64) bool { return keys.HasKeyID(self.Entity, id) }) {
		return hold(holdKeyPrefix + fmt.Sprintf("sealed to a key of %s that is no longer valid; %s's key in force is %s. "+
			"It cannot be sealed again here: drop it (conduit queue drop) and ask the sender to send it again", it.Destination, it.Destination, cert.Fingerprint()))
	}
	env, err := g.reseal(ctx, it, cert)
	if err != nil {
		return hold(holdKeyPrefix + "sealing again to " + cert.Fingerprint() + " failed: " + err.Error())
	}
	note := "sealed again to " + it.Destination + "'s key " + cert.Fingerprint()
	if err := g.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.ResealItem(it.ID, env, note); err != nil {
			return err
		}
		return g.stage(tx, audit.Event{Kind: audit.Sealed, Package: it.PackageID, Destination: it.Destination, Rule: "partner-key", Detail: note})
	}); err != nil {
		log.Error("resealed envelope not stored", "err", err)
		return it, false
	}
	g.kickAudit()
	it.Envelope, it.Size = env, int64(len(env))
	return it, true
}

// reseal opens an envelope this gateway sealed to itself, with every
// check, and seals its content to the partner's certificate under the
// same package id, label and manifest.
func (g *Gateway) reseal(ctx context.Context, it store.Item, to *keys.Cert) ([]byte, error) {
	self := g.identity()
	pub, err := self.Public()
	if err != nil {
		return nil, err
	}
	mine := keys.NewPartners()
	if err := mine.Add(pub, g.cfg.Agency, ""); err != nil {
		return nil, err
	}
	max := g.cfg.Limits.MessageBytes * 2
	sp, err := envelope.NewSpool(os.TempDir(), max)
	if err != nil {
		return nil, err
	}
	defer sp.Close()
	o, err := envelope.Open(ctx, sp, bytes.NewReader(it.Envelope), envelope.OpenParams{
		Identity: self, Partners: mine, Now: g.Now, MaxAge: 365 * 24 * time.Hour, MaxSize: max,
	})
	if err != nil {
		return nil, fmt.Errorf("open the held envelope: %w", err)
	}
	if err := sp.Finish(); err != nil {
		return nil, err
	}
	body, err := sp.Reader()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	m := o.Manifest
	if _, err := envelope.Seal(ctx, &buf, body, envelope.SealParams{
		Signer: self, Recipients: []*keys.Cert{to}, Label: o.Label, Manifest: &m,
		PackageID: it.PackageID, Now: g.Now, Profile: keys.ProfileOf(self.Entity),
	}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// KeyChangeType is the media type of a key-change notice's body: the
// sender's public certificate.
const KeyChangeType = "application/pgp-keys"

// announceKey seals cert's public certificate, signed by self, to every
// partner with a usable pinned key, so that they take a rotation, a new
// expiry or a revocation. The notice's id is derived from the
// certificate, so announcing the same certificate twice queues it once.
func (g *Gateway) announceKey(ctx context.Context, self *keys.Identity, cert *keys.Identity, why string) ([]string, error) {
	var pub bytes.Buffer
	if err := keys.WritePublic(&pub, cert.Entity); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(pub.Bytes())
	id := "keys-" + hex.EncodeToString(sum[:12])
	now := g.Now()
	l, err := envelope.ParseLabel(fmt.Sprintf("v=1; classification=OFFICIAL; grading=3x5x2; source=1; intelligence=A; handling=P; basis=fact; subjects=other; purpose=prison-security; sanitised=no; originator=%s; reference=%s; created=%s",
		g.cfg.Agency, id, `"`+now.UTC().Format(time.RFC3339)+`"`))
	if err != nil {
		return nil, fmt.Errorf("key-change label: %w", err)
	}
	var items []store.Item
	var dests []string
	for _, a := range g.cfg.Directory.Agencies {
		cert, ok := g.partners().Get(a.ID)
		if a.ID == g.cfg.Agency || !ok || cert.Usable(now) != nil || len(a.Mailboxes) == 0 {
			continue
		}
		rcpt := a.Mailboxes[0].Address
		if mb := a.Mailbox("intake"); mb != nil {
			rcpt = mb.Address
		}
		msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: Key change from %s\r\nDate: %s\r\nContent-Type: %s\r\n\r\n%s",
			emailOfIdentity(self), rcpt, g.cfg.Agency, now.Format(time.RFC1123Z), KeyChangeType, pub.Bytes())
		var buf bytes.Buffer
		if _, err := envelope.Seal(ctx, &buf, strings.NewReader(msg), envelope.SealParams{
			Signer: self, Recipients: []*keys.Cert{cert}, Label: l, PackageID: id, Now: g.Now, Profile: keys.ProfileOf(self.Entity),
			Manifest: &envelope.Manifest{From: g.cfg.Agency, To: []string{a.ID}, Kind: envelope.KindKeyChange},
		}); err != nil {
			return dests, fmt.Errorf("seal key-change notice for %s: %w", a.ID, err)
		}
		items = append(items, store.Item{PackageID: id, Destination: a.ID, Recipients: []string{rcpt}, MailFrom: emailOfIdentity(self),
			Marking: l.Marking(), Envelope: buf.Bytes(), Priority: store.Immediate})
		dests = append(dests, a.ID)
	}
	if len(items) == 0 {
		return nil, nil
	}
	var events []audit.Event
	for _, d := range dests {
		events = append(events, audit.Event{Kind: audit.KeyChange, Package: id, Destination: d, Rule: "announce",
			Detail: fmt.Sprintf("certificate %s sent to %s: %s", cert.Fingerprint(), d, why)})
	}
	if err := g.store.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.Enqueue(items); err != nil {
			return err
		}
		return g.stage(tx, events...)
	}); err != nil {
		return nil, err
	}
	g.kickAudit()
	g.nudge()
	return dests, nil
}

// takeKeyChange records a partner's key-change notice. The notice was
// opened with every check, so it is signed by the key pinned for its
// sender. A certificate with the same fingerprint is an update that key
// signed and is taken at once; another fingerprint waits for an
// administrator.
func (g *Gateway) takeKeyChange(ctx context.Context, m received, o *envelope.Opened, opened []byte) outcome {
	_, content, _ := bytes.Cut(opened, []byte("\r\n\r\n"))
	offered, err := keys.ReadCert(bytes.NewReader(content))
	if err != nil {
		return g.quarantine(ctx, m, "key-change-invalid", "a key-change notice whose body is not a certificate: "+err.Error())
	}
	agency := o.Signer.Agency
	if offered.Agency != agency {
		return g.quarantine(ctx, m, "key-change-invalid", fmt.Sprintf("a key-change notice signed by %s offers a key for %q", agency, offered.Agency))
	}
	pinned, ok := g.partners().Get(agency)
	if !ok {
		return g.quarantine(ctx, m, "key-change-invalid", "a key-change notice from "+agency+", which has no key in force here")
	}
	updated, err := keys.UpdateCert(pinned, offered)
	if errors.Is(err, keys.ErrFingerprintMismatch) {
		rec, _ := g.offerPartnerKey(ctx, offered, agency, pinned.Fingerprint(), "key-change notice "+o.PackageID+" from "+agency+" signed by "+o.Signer.Fingerprint)
		if err := g.recordDelivered(ctx, o); err != nil {
			g.log.Error("key-change replay record", "err", err)
		}
		return outcome{delivered: true, reply: reply(250, smtp.EnhancedCode{2, 0, 0},
			fmt.Sprintf("Key change received; the new key %s is %s here until an administrator of %s approves it", offered.Fingerprint(), rec.State, g.cfg.Agency))}
	}
	if err != nil {
		return g.quarantine(ctx, m, "key-change-invalid", err.Error())
	}
	st := keys.StatusOf(updated.Entity, g.Now())
	detail := fmt.Sprintf("update of %s signed by the key itself: %d encryption subkeys", updated.Fingerprint(), len(st.Subkeys))
	if st.Usable != nil {
		detail += "; " + st.Usable.Error()
	}
	if _, _, err := g.recordKey(ctx, updated, store.PartnerKey{Agency: agency, Replaces: pinned.Fingerprint(), State: store.KeyApproved,
		Source: "key-change notice " + o.PackageID, DecidedBy: "automatic: signed by the pinned key", Reason: detail}); err != nil {
		g.log.Error("partner key update not recorded", "partner", agency, "err", err)
		return outcome{reply: errTempStore}
	}
	if err := g.loadPartners(ctx); err != nil {
		g.log.Error("partner keys not reloaded", "err", err)
	}
	if err := g.recordDelivered(ctx, o); err != nil {
		g.log.Error("key-change replay record", "err", err)
	}
	g.log.Info("partner key updated", "partner", agency, "fingerprint", updated.Fingerprint(), "subkeys", len(st.Subkeys), "usable", st.Usable == nil)
	g.audit(ctx, audit.Event{Kind: audit.KeyChange, Package: o.PackageID, Destination: agency, Actor: agency, Rule: "update", Detail: detail})
	if st.Usable != nil {
		g.alertAdmins(ctx, "partner key of "+agency+" can no longer be used", detail+"\r\nDeliveries to "+agency+" are held until it sends a usable key.")
	}
	return outcome{delivered: true, reply: reply(250, smtp.EnhancedCode{2, 0, 0}, "Key change from "+agency+" recorded")}
}

// ReloadIdentity reads this gateway's key from its backend again (after
// conduit keys rotate or revoke, on SIGHUP). The primary key must be the
// same, since partners pin it; a new encryption subkey, a new expiry or a
// revocation is taken, and the updated certificate is announced to every
// partner. It reports whether the key changed.
func (g *Gateway) ReloadIdentity(ctx context.Context) (bool, error) {
	nid, err := g.keys.Identity(ctx)
	if err != nil {
		return false, fmt.Errorf("reload key: %w", err)
	}
	return g.adoptIdentity(ctx, nid, "SIGHUP")
}

// adoptIdentity puts a reloaded key in force (the same agency and pinned
// fingerprint only), audits the change and announces the certificate.
func (g *Gateway) adoptIdentity(ctx context.Context, nid *keys.Identity, actor string) (bool, error) {
	if err := g.acceptIdentity(nid); err != nil {
		return false, fmt.Errorf("reload key: %w (a new primary key needs a restart and the partners' approval)", err)
	}
	old := g.identity()
	var a, b bytes.Buffer
	if err := keys.WritePublic(&a, old.Entity); err != nil {
		return false, err
	}
	if err := keys.WritePublic(&b, nid.Entity); err != nil {
		return false, err
	}
	if bytes.Equal(a.Bytes(), b.Bytes()) {
		return false, nil
	}
	g.id.Store(nid)
	st := keys.StatusOf(nid.Entity, g.Now())
	detail := fmt.Sprintf("key %s reloaded: %d encryption subkeys", nid.Fingerprint(), len(st.Subkeys))
	if st.Usable != nil {
		detail += "; " + st.Usable.Error()
	}
	g.log.Info("own key reloaded", "fingerprint", nid.Fingerprint(), "subkeys", len(st.Subkeys), "usable", st.Usable == nil)
	g.audit(ctx, audit.Event{Kind: audit.KeyChange, Rule: "reload", Actor: actor, Detail: detail})
	if st.Revoked {
		// Announced by conduit keys revoke, signed while the key was
		// still valid: a revoked key signs nothing more.
		return true, nil
	}
	dests, err := g.announceKey(ctx, nid, nid, detail)
	if err != nil {
		// The key is in force either way; partners without the update go
		// on encrypting to a subkey still kept.
		g.log.Error("admin alert: the updated key was not announced to the partners", "err", err)
		return true, nil
	}
	g.log.Info("updated key announced", "partners", dests)
	return true, nil
}

// AnnounceKey queues the certificate of cert (this gateway's key after a
// change) to every partner, signed by the key in force: conduit keys
// revoke announces the revoked certificate while the key can still sign.
func (g *Gateway) AnnounceKey(ctx context.Context, cert *keys.Identity, why string) ([]string, error) {
	return g.announceKey(ctx, g.identity(), cert, why)
}

// KeysInForce lists this gateway's own public certificate, then the
// partner certificates in force, for conduit keys list.
func (g *Gateway) KeysInForce() []*keys.Cert {
	out := []*keys.Cert{}
	if pub, err := g.identity().Public(); err == nil {
		out = append(out, pub)
	}
	return append(out, g.partners().Certs()...)
}

// Store is the gateway's store, for the CLI.
func (g *Gateway) Store() store.Store { return g.store }

// OfferPartnerCert takes a partner certificate an operator received out of
// band (conduit keys offer): an update of the pinned key (same
// fingerprint) is taken at once, any other key waits for approval.
func (g *Gateway) OfferPartnerCert(ctx context.Context, c *keys.Cert, source string) (store.PartnerKey, error) {
	if g.cfg.Directory.Agency(c.Agency) == nil || c.Agency == g.cfg.Agency {
		return store.PartnerKey{}, fmt.Errorf("certificate %s names %q, which is not a partner agency in the directory", c.Fingerprint(), c.Agency)
	}
	pinned, ok := g.partners().Get(c.Agency)
	if !ok {
		rec, _ := g.offerPartnerKey(ctx, c, c.Agency, keys.NormalizeFingerprint(g.cfg.Directory.Agency(c.Agency).Fingerprint), source)
		return rec, nil
	}
	updated, err := keys.UpdateCert(pinned, c)
	if errors.Is(err, keys.ErrFingerprintMismatch) {
		rec, _ := g.offerPartnerKey(ctx, c, c.Agency, pinned.Fingerprint(), source)
		return rec, nil
	} else if err != nil {
		return store.PartnerKey{}, err
	}
	rec, _, err := g.recordKey(ctx, updated, store.PartnerKey{Agency: c.Agency, Replaces: pinned.Fingerprint(), State: store.KeyApproved,
		Source: source, DecidedBy: "automatic: same pinned fingerprint", Reason: "update of the pinned key"})
	if err == nil {
		g.audit(ctx, audit.Event{Kind: audit.KeyChange, Destination: c.Agency, Rule: "update", Detail: "update of " + updated.Fingerprint() + " from " + source})
	}
	return rec, err
}

// sealTarget is the certificate to seal a message for agency to: the
// partner's key in force, or, when that key cannot be used now (expired,
// revoked), this gateway's own, with the reason the item is to be held
// under until a usable key is in force. ok is false when the agency has
// no key in force at all.
func (g *Gateway) sealTarget(agency string) (cert *keys.Cert, holdReason string, ok bool) {
	cert, ok = g.partners().Get(agency)
	if !ok {
		return nil, "", false
	}
	if err := cert.Usable(g.Now()); err != nil {
		self, perr := g.identity().Public()
		if perr != nil {
			return nil, "", false
		}
		g.log.Error("admin alert: message held for a partner key", "destination", agency, "err", err)
		return self, g.keyHoldReason(agency, err), true
	}
	return cert, "", true
}

// heldIf is the state of a new queue item: held when there is a hold
// reason.
func heldIf(reason string) store.State {
	if reason != "" {
		return store.OnHold
	}
	return store.Queued
}

// recordDelivered adds an opened message to the replay cache.
func (g *Gateway) recordDelivered(ctx context.Context, o *envelope.Opened) error {
	return g.store.Update(ctx, func(tx store.Tx) error {
		return tx.RecordDelivered(o.Label.Originator, o.PackageID, o.MessageID, o.Date)
	})
}
