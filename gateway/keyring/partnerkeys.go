package keyring

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

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

// watchPoll is how often the key watch looks at the store's record of
// partner keys: one row (a version), so an idle gateway reads almost
// nothing; holds and expiry warnings are looked at only when it moved or
// at most once a minute.
const watchPoll = 2 * time.Second

// holdKeyPrefix starts the reason of an item held for its partner's key,
// so that the hold is lifted when a usable key is in force.
const holdKeyPrefix = "partner-key: "

// keyWatch is what the key watcher remembers between rounds.
type keyWatch struct {
	mu      sync.Mutex
	version int64
	warned  map[string]string // fingerprint -> day of the last expiry warning
}

// Load builds the partner certificates in force: for each
// directory agency, the key an administrator approved (or an update the
// pinned key signed) when it follows from the directory's pin, else the
// certificate file when its fingerprint is the pin. A certificate file
// with another fingerprint is recorded as a pending change and not used.
func (r *Ring) Load(ctx context.Context) error {
	version, err := r.store.PartnerKeysVersion(ctx)
	if err != nil {
		return err
	}
	recs, err := r.store.ListPartnerKeys(ctx, "", store.KeyApproved)
	if err != nil {
		return err
	}
	approved := map[string]store.PartnerKey{}
	for _, rec := range recs {
		if _, ok := approved[rec.Agency]; !ok { // newest first
			approved[rec.Agency] = rec
		}
	}
	ps := keys.NewPartners()
	for _, a := range r.cfg.Directory.Agencies {
		if a.ID == r.cfg.Agency {
			continue
		}
		pin := keys.NormalizeFingerprint(a.Fingerprint)
		if rec, ok := approved[a.ID]; ok && pin != "" && (rec.Fingerprint == pin || rec.Replaces == pin) {
			c, err := keys.ReadCert(bytes.NewReader(rec.Cert))
			if err == nil {
				err = ps.Add(c, a.ID, rec.Fingerprint)
			}
			if err == nil {
				if rec.Fingerprint != pin {
					r.log.Warn("the directory still pins a partner's previous key; an approved change is in force: update the directory",
						"partner", a.ID, "pinned", pin, "in_force", rec.Fingerprint, "approved_by", rec.DecidedBy)
				}
				continue
			}
			r.log.Error("approved partner key not usable; falling back to the directory's", "partner", a.ID, "err", err)
		}
		path := filepath.Join(r.cfg.Keys.Partners, a.ID+".pub.asc")
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			r.unusable(ctx, ps, a.ID, fmt.Sprintf("its certificate file %s cannot be read: %v", path, err))
			continue
		}
		c, err := keys.ReadCert(f)
		f.Close()
		if err != nil {
			// One partner's unusable certificate does not stop the gateway:
			// what is for that partner is held with the reason (SealTarget).
			r.unusable(ctx, ps, a.ID, fmt.Sprintf("its certificate file %s cannot be used: %v", path, err))
			continue
		}
		if pin == "" {
			r.log.Warn("partner certificate not used: the directory pins no fingerprint", "partner", a.ID)
			continue
		}
		if c.Fingerprint() != pin {
			// Never used silently: recorded for an administrator.
			r.Offer(ctx, c, a.ID, pin, "directory certificate file "+path)
			continue
		}
		if err := ps.Add(c, a.ID, pin); err != nil {
			r.log.Error("partner certificate not used", "partner", a.ID, "err", err)
		}
	}
	r.partnerSet.Store(ps)
	r.watch.mu.Lock()
	r.watch.version = version
	r.watch.mu.Unlock()
	return nil
}

// unusable records that a partner's certificate cannot be used and alerts
// the administrators.
func (r *Ring) unusable(ctx context.Context, ps *keys.Partners, agency, why string) {
	ps.SetUnusable(agency, why)
	r.log.Error("admin alert: partner certificate not usable; deliveries to it are held", "partner", agency, "err", why)
	r.AlertAdmins(ctx, "partner certificate for "+agency+" not usable", agency+": "+why+
		"\r\nPackages for "+agency+" are held until a usable certificate is installed (conduit keys offer).\r\n")
}

// Unusable lists the partners whose certificate cannot be used, with the
// reason, for conduit keys list.
func (r *Ring) Unusable() map[string]string { return r.Partners().UnusableAll() }

// Offer records a certificate with a fingerprint other than the
// pinned one as a pending change, and alerts the administrators the first
// time it is seen.
func (r *Ring) Offer(ctx context.Context, c *keys.Cert, agency, pinned, source string) (store.PartnerKey, bool) {
	rec, isNew, err := r.Record(ctx, c, store.PartnerKey{Agency: agency, Replaces: pinned, State: store.KeyPending, Source: source})
	if err != nil {
		r.log.Error("partner key change not recorded", "partner", agency, "err", err)
		return rec, false
	}
	if !isNew {
		return rec, false
	}
	what := fmt.Sprintf("%s presented key %s, but %s is pinned; it is not used until an administrator approves it (conduit keys pending)",
		agency, c.Fingerprint(), orNone(pinned))
	r.log.Error("admin alert: partner key change pending", "partner", agency, "offered", c.Fingerprint(), "pinned", pinned, "source", source)
	r.audit.Append(ctx, audit.Event{Kind: audit.KeyChange, Destination: agency, Rule: "pending", Detail: what + "; source: " + source})
	r.AlertAdmins(ctx, "partner key change pending for "+agency, what+"\r\nSource: "+source+
		"\r\n\r\nCheck the new fingerprint with "+agency+" by a trusted channel, then:\r\n  conduit keys approve "+agency+" "+c.Fingerprint()+
		" --reason \"...\"\r\nor\r\n  conduit keys reject "+agency+" "+c.Fingerprint()+" --reason \"...\"\r\n")
	return rec, true
}

// Record stores a partner certificate offered for k.Agency (k says
// in what state, from where, replacing what).
func (r *Ring) Record(ctx context.Context, c *keys.Cert, k store.PartnerKey) (store.PartnerKey, bool, error) {
	var pub bytes.Buffer
	if err := keys.WritePublic(&pub, c.Entity); err != nil {
		return store.PartnerKey{}, false, err
	}
	k.Fingerprint, k.Cert, k.Seen = c.Fingerprint(), pub.Bytes(), r.now()
	var rec store.PartnerKey
	var isNew bool
	err := r.store.Update(ctx, func(tx store.Tx) error {
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

// AlertAdmins mails the configured administrators. The text is metadata
// only: agencies, fingerprints, dates; never package content.
func (r *Ring) AlertAdmins(ctx context.Context, subject, text string) {
	if len(r.cfg.Alerts.Administrators) == 0 {
		return
	}
	now := r.now()
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Conduit gateway <%s>\r\nSubject: [Conduit] %s\r\nDate: %s\r\n", Address(r.Identity()), subject, now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Auto-Submitted: auto-generated\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n", text)
	sum := sha256.Sum256([]byte(subject + "\x00" + now.Format(time.RFC3339Nano)))
	for _, a := range r.cfg.Alerts.Administrators {
		if err := r.deliver.Deliver(ctx, a, r.cfg.Agency, "alert-"+hex.EncodeToString(sum[:8]), nil, b.Bytes()); err != nil {
			r.log.Error("administrator alert not delivered", "to", a, "err", err)
		}
	}
}

// RunWatch reloads the partner keys when an administrator decides a
// change (the CLI writes the store; the running gateway sees the version
// move), lifts key holds once a usable key is in force, and warns ahead of
// key expiry.
func (r *Ring) RunWatch(ctx context.Context) {
	t := time.NewTicker(watchPoll)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed := r.Sync(ctx)
		if now := time.Now(); changed || now.Sub(last) >= time.Minute {
			last = now
			r.liftKeyHolds(ctx)
			r.warnExpiry(ctx)
		}
	}
}

// Sync reloads the partner keys when the store's record of them
// changed (an administrator's decision made with the CLI), and says
// whether they changed. It is called
// before sealing and before relaying, so that nothing is sealed or sent
// with a key decision already superseded.
func (r *Ring) Sync(ctx context.Context) (changed bool) {
	v, err := r.store.PartnerKeysVersion(ctx)
	if err != nil {
		return false
	}
	r.watch.mu.Lock()
	changed = v != r.watch.version
	r.watch.mu.Unlock()
	if !changed {
		return false
	}
	if err := r.Load(ctx); err != nil {
		r.log.Error("partner keys not reloaded; the keys in force stay", "err", err)
		return false
	}
	r.log.Info("partner keys reloaded")
	return true
}

// liftKeyHolds queues again the items held for a partner key once that
// partner's key in force is usable; the relay seals them again to it
// first when they were sealed to this gateway's own key.
func (r *Ring) liftKeyHolds(ctx context.Context) {
	held, err := r.store.List(ctx, store.Filter{State: store.OnHold})
	if err != nil {
		return
	}
	now := r.now()
	for _, it := range held {
		if !strings.HasPrefix(it.Reason, holdKeyPrefix) {
			continue
		}
		cert, ok := r.Partners().Get(it.Destination)
		if !ok || cert.Usable(now) != nil {
			continue
		}
		note := fmt.Sprintf("%s's key %s is usable again", it.Destination, cert.Fingerprint())
		if err := r.store.Update(ctx, func(tx store.Tx) error {
			if err := tx.Release(it.ID, note); err != nil {
				return err
			}
			return r.audit.Stage(tx, audit.Event{Kind: audit.Released, Package: it.PackageID, Destination: it.Destination, Actor: "key watch", Detail: note})
		}); err != nil {
			r.log.Error("key hold not lifted", "item", it.ID, "err", err)
			continue
		}
		r.audit.Kick()
		r.log.Info("key hold lifted", "package", it.PackageID, "destination", it.Destination, "key", cert.Fingerprint())
		r.nudge()
	}
}

// warnExpiry warns, once a day per key, of keys that expire within the
// configured warning period: this agency's own and each partner's.
func (r *Ring) warnExpiry(ctx context.Context) {
	now := r.now()
	window := time.Duration(r.cfg.Keys.ExpiryWarning)
	day := now.UTC().Format("2006-01-02")
	type k struct {
		agency string
		st     keys.Status
	}
	all := []k{{r.cfg.Agency, keys.StatusOf(r.Identity().Entity, now)}}
	for _, a := range r.cfg.Directory.Agencies {
		if c, ok := r.Partners().Get(a.ID); ok {
			all = append(all, k{a.ID, keys.StatusOf(c.Entity, now)})
		}
	}
	for _, x := range all {
		exp := x.st.Expires
		if exp.IsZero() {
			continue
		}
		r.metrics.KeyExpiry(x.agency, exp.Sub(now))
		if exp.Sub(now) > window || !r.housekeeper() {
			continue
		}
		r.watch.mu.Lock()
		if r.watch.warned == nil {
			r.watch.warned = map[string]string{}
		}
		done := r.watch.warned[x.st.Fingerprint] == day
		r.watch.warned[x.st.Fingerprint] = day
		r.watch.mu.Unlock()
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
		if x.agency == r.cfg.Agency {
			advice = "Partners stop sending to this gateway then: run conduit keys rotate (or extend the key) before it does."
		}
		r.log.Warn("admin alert: key expiry", "agency", x.agency, "fingerprint", x.st.Fingerprint, "expires", exp.UTC().Format(time.RFC3339))
		r.audit.Append(ctx, audit.Event{Kind: audit.Alert, Destination: x.agency, Rule: "key-expiry", Detail: what})
		r.AlertAdmins(ctx, "key expiry: "+x.agency, what+".\r\n"+advice)
	}
}

// keyHoldReason is the reason of an item held because its destination's
// key cannot be used.
func (r *Ring) keyHoldReason(agency string, err error) string {
	return holdKeyPrefix + fmt.Sprintf("%s's key cannot be used (%v); held until a usable key is in force (conduit keys list, conduit keys pending)", agency, err)
}

// CheckSealedTo is the relay's last look before sending: the item must be
// sealed to a key the partner can read now. An item sealed to this
// gateway's own key (held for a key at intake) is sealed again to the
// partner's key in force; one sealed to a key that is no longer valid, or
// for a partner whose key expired or was revoked, is held with the reason.
// It returns the item to send, or ok false when it must not be sent now.
// With an item that stays as stored, it also returns the envelope opened
// for the look (its first bytes, read for the key ids, given again
// first): the send reads on from there instead of reading the first
// chunk from the store a second time. The caller closes it.
func (r *Ring) CheckSealedTo(ctx context.Context, it store.Item) (_ store.Item, env io.ReadCloser, ok bool) {
	log := r.log.With("package", it.PackageID, "destination", it.Destination)
	r.Sync(ctx)
	now := r.now()
	cert, ok := r.Partners().Get(it.Destination)
	hold := func(reason string) (store.Item, io.ReadCloser, bool) {
		if err := r.store.Update(ctx, func(tx store.Tx) error {
			if err := tx.HoldItem(it.ID, reason); err != nil {
				return err
			}
			return r.audit.Stage(tx, audit.Event{Kind: audit.Queued, Package: it.PackageID, Destination: it.Destination, Rule: "partner-key", Detail: "held: " + reason})
		}); err != nil {
			log.Error("key hold not recorded", "err", err)
			return it, nil, false
		}
		r.audit.Kick()
		log.Error("admin alert: delivery held for the partner's key", "reason", reason)
		r.AlertAdmins(ctx, "delivery to "+it.Destination+" held", "Package "+it.PackageID+": "+reason)
		return it, nil, false
	}
	if !ok {
		return hold(holdKeyPrefix + it.Destination + " has no pinned key in force")
	}
	if err := cert.Usable(now); err != nil {
		return hold(r.keyHoldReason(it.Destination, err))
	}
	ids, env, err := r.recipientKeyIDs(ctx, it)
	var se *storeError
	if errors.As(err, &se) {
		// The store, not the envelope: the item is tried again when its
		// claim's lease runs out, not held.
		log.Error("queued envelope not read", "err", err)
		return it, nil, false
	}
	if err != nil {
		return hold(holdKeyPrefix + "the queued envelope cannot be read: " + err.Error())
	}
	if slices.ContainsFunc(ids, func(id uint64) bool { return cert.HasValidSubkey(id, now) }) {
		return it, env, true
	}
	// Sealed again below, or held: what was opened is not what is sent.
	env.Close()
	self := r.Identity()
	if !slices.ContainsFunc(ids, func(id uint64) bool { return keys.HasKeyID(self.Entity, id) }) {
		return hold(holdKeyPrefix + fmt.Sprintf("sealed to a key of %s that is no longer valid; %s's key in force is %s. "+
			"It cannot be sealed again here: drop it (conduit queue drop) and ask the sender to send it again", it.Destination, it.Destination, cert.Fingerprint()))
	}
	sealed, err := r.reseal(ctx, it, cert)
	if err != nil {
		return hold(holdKeyPrefix + "sealing again to " + cert.Fingerprint() + " failed: " + err.Error())
	}
	note := "sealed again to " + it.Destination + "'s key " + cert.Fingerprint()
	if err := r.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.ResealItem(it.ID, sealed, note); err != nil {
			return err
		}
		return r.audit.Stage(tx, audit.Event{Kind: audit.Sealed, Package: it.PackageID, Destination: it.Destination, Rule: "partner-key", Detail: note})
	}); err != nil {
		log.Error("resealed envelope not stored", "err", err)
		return it, nil, false
	}
	r.audit.Kick()
	it.Envelope, it.Size = sealed, int64(len(sealed))
	return it, nil, true
}

// storeError is a failure of the store to give a queued envelope that may
// pass (the database unreachable), as opposed to an envelope that cannot
// be read: not there, not whole, or not an envelope.
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// passing marks err as a storeError unless it says the stored envelope
// itself is unreadable.
func passing(err error) error {
	if err == nil || err == io.EOF || errors.Is(err, store.ErrEnvelopeChanged) || errors.Is(err, store.ErrNoEnvelope) ||
		errors.Is(err, store.ErrShredded) {
		return err
	}
	return &storeError{err}
}

// storeReader marks its reader's passing errors as storeErrors.
type storeReader struct{ r io.Reader }

func (s storeReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	return n, passing(err)
}

// queuedEnvelope opens an item's envelope: from memory when the item
// carries it, else streamed from the store.
func (r *Ring) queuedEnvelope(ctx context.Context, it store.Item) (io.ReadCloser, error) {
	if it.Envelope != nil {
		return io.NopCloser(bytes.NewReader(it.Envelope)), nil
	}
	rc, err := r.store.OpenEnvelope(ctx, it.ID, it.Size)
	if err != nil {
		return nil, passing(err)
	}
	return struct {
		io.Reader
		io.Closer
	}{storeReader{rc}, rc}, nil
}

// recipientKeyIDs reads the key ids an item's envelope is sealed to: its
// first packets, not the whole envelope. It returns the envelope too, the
// bytes it read given again before the rest (a few read buffers' worth).
func (r *Ring) recipientKeyIDs(ctx context.Context, it store.Item) ([]uint64, io.ReadCloser, error) {
	rc, err := r.queuedEnvelope(ctx, it)
	if err != nil {
		return nil, nil, err
	}
	var head bytes.Buffer
	ids, err := envelope.RecipientKeyIDs(ctx, io.TeeReader(rc, &head))
	if err != nil {
		rc.Close()
		var se *storeError
		if errors.As(err, &se) {
			return nil, nil, se
		}
		return nil, nil, err
	}
	return ids, struct {
		io.Reader
		io.Closer
	}{io.MultiReader(&head, rc), rc}, nil
}

// reseal opens an envelope this gateway sealed to itself, with every
// check, and seals its content to the partner's certificate under the
// same package id, label and manifest.
func (r *Ring) reseal(ctx context.Context, it store.Item, to *keys.Cert) ([]byte, error) {
	self := r.Identity()
	pub, err := self.Public()
	if err != nil {
		return nil, err
	}
	mine := keys.NewPartners()
	if err := mine.Add(pub, r.cfg.Agency, ""); err != nil {
		return nil, err
	}
	max := r.cfg.Limits.MessageBytes * 2
	sp, err := envelope.NewSpool(os.TempDir(), max)
	if err != nil {
		return nil, err
	}
	defer sp.Close()
	rc, err := r.queuedEnvelope(ctx, it)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	o, err := envelope.Open(ctx, sp, rc, envelope.OpenParams{
		Identity: self, Partners: mine, Now: r.now, MaxAge: 365 * 24 * time.Hour, MaxSize: max,
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
		PackageID: it.PackageID, Now: r.now, Profile: keys.ProfileOf(self.Entity), Plain: r.PlainFor(it.Destination),
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
func (r *Ring) announceKey(ctx context.Context, self *keys.Identity, cert *keys.Identity, why string) ([]string, error) {
	var pub bytes.Buffer
	if err := keys.WritePublic(&pub, cert.Entity); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(pub.Bytes())
	id := "keys-" + hex.EncodeToString(sum[:12])
	now := r.now()
	l, err := envelope.ParseLabel(fmt.Sprintf("v=1; classification=OFFICIAL; grading=3x5x2; source=1; intelligence=A; handling=P; basis=fact; subjects=other; purpose=prison-security; sanitised=no; originator=%s; reference=%s; created=%s",
		r.cfg.Agency, id, `"`+now.UTC().Format(time.RFC3339)+`"`))
	if err != nil {
		return nil, fmt.Errorf("key-change label: %w", err)
	}
	var items []store.Item
	var dests []string
	for _, a := range r.cfg.Directory.Agencies {
		cert, ok := r.Partners().Get(a.ID)
		if a.ID == r.cfg.Agency || !ok || cert.Usable(now) != nil || len(a.Mailboxes) == 0 {
			continue
		}
		rcpt := a.Mailboxes[0].Address
		if mb := a.Mailbox("intake"); mb != nil {
			rcpt = mb.Address
		}
		msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: Key change from %s\r\nDate: %s\r\nContent-Type: %s\r\n\r\n%s",
			Address(self), rcpt, r.cfg.Agency, now.Format(time.RFC1123Z), KeyChangeType, pub.Bytes())
		var buf bytes.Buffer
		if _, err := envelope.Seal(ctx, &buf, strings.NewReader(msg), envelope.SealParams{
			Signer: self, Recipients: []*keys.Cert{cert}, Label: l, PackageID: id, Now: r.now, Profile: keys.ProfileOf(self.Entity),
			Manifest: &envelope.Manifest{From: r.cfg.Agency, To: []string{a.ID}, Kind: envelope.KindKeyChange}, Plain: a.PlainPGPMIME(),
		}); err != nil {
			return dests, fmt.Errorf("seal key-change notice for %s: %w", a.ID, err)
		}
		items = append(items, store.Item{PackageID: id, Destination: a.ID, Recipients: []string{rcpt}, MailFrom: Address(self),
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
	if err := r.store.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.Enqueue(items); err != nil {
			return err
		}
		return r.audit.Stage(tx, events...)
	}); err != nil {
		return nil, err
	}
	r.audit.Kick()
	r.nudge()
	return dests, nil
}

// ReloadIdentity reads this gateway's key from its backend again (after
// conduit keys rotate or revoke, on SIGHUP). The primary key must be the
// same, since partners pin it; a new encryption subkey, a new expiry or a
// revocation is taken, and the updated certificate is announced to every
// partner. It reports whether the key changed.
func (r *Ring) ReloadIdentity(ctx context.Context) (bool, error) {
	nid, err := r.backend.Identity(ctx)
	if err != nil {
		return false, fmt.Errorf("reload key: %w", err)
	}
	return r.adoptIdentity(ctx, nid, "SIGHUP")
}

// adoptIdentity puts a reloaded key in force (the same agency and pinned
// fingerprint only), audits the change and announces the certificate.
func (r *Ring) adoptIdentity(ctx context.Context, nid *keys.Identity, actor string) (bool, error) {
	if err := r.accept(nid); err != nil {
		return false, fmt.Errorf("reload key: %w (a new primary key needs a restart and the partners' approval)", err)
	}
	old := r.Identity()
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
	r.id.Store(nid)
	st := keys.StatusOf(nid.Entity, r.now())
	detail := fmt.Sprintf("key %s reloaded: %d encryption subkeys", nid.Fingerprint(), len(st.Subkeys))
	if st.Usable != nil {
		detail += "; " + st.Usable.Error()
	}
	r.log.Info("own key reloaded", "fingerprint", nid.Fingerprint(), "subkeys", len(st.Subkeys), "usable", st.Usable == nil)
	r.audit.Append(ctx, audit.Event{Kind: audit.KeyChange, Rule: "reload", Actor: actor, Detail: detail})
	if st.Revoked {
		// Announced by conduit keys revoke, signed while the key was
		// still valid: a revoked key signs nothing more.
		return true, nil
	}
	dests, err := r.announceKey(ctx, nid, nid, detail)
	if err != nil {
		// The key is in force either way; partners without the update go
		// on encrypting to a subkey still kept.
		r.log.Error("admin alert: the updated key was not announced to the partners", "err", err)
		return true, nil
	}
	r.log.Info("updated key announced", "partners", dests)
	return true, nil
}

// AnnounceKey queues the certificate of cert (this gateway's key after a
// change) to every partner, signed by the key in force: conduit keys
// revoke announces the revoked certificate while the key can still sign.
func (r *Ring) AnnounceKey(ctx context.Context, cert *keys.Identity, why string) ([]string, error) {
	return r.announceKey(ctx, r.Identity(), cert, why)
}

// KeysInForce lists this gateway's own public certificate, then the
// partner certificates in force, for conduit keys list.
func (r *Ring) KeysInForce() []*keys.Cert {
	out := []*keys.Cert{}
	if pub, err := r.Identity().Public(); err == nil {
		out = append(out, pub)
	}
	return append(out, r.Partners().Certs()...)
}

// OfferPartnerCert takes a partner certificate an operator received out of
// band (conduit keys offer): an update of the pinned key (same
// fingerprint) is taken at once, any other key waits for approval.
func (r *Ring) OfferPartnerCert(ctx context.Context, c *keys.Cert, source string) (store.PartnerKey, error) {
	if r.cfg.Directory.Agency(c.Agency) == nil || c.Agency == r.cfg.Agency {
		return store.PartnerKey{}, fmt.Errorf("certificate %s names %q, which is not a partner agency in the directory", c.Fingerprint(), c.Agency)
	}
	pinned, ok := r.Partners().Get(c.Agency)
	if !ok {
		rec, _ := r.Offer(ctx, c, c.Agency, keys.NormalizeFingerprint(r.cfg.Directory.Agency(c.Agency).Fingerprint), source)
		return rec, nil
	}
	updated, err := keys.UpdateCert(pinned, c)
	if errors.Is(err, keys.ErrFingerprintMismatch) {
		rec, _ := r.Offer(ctx, c, c.Agency, pinned.Fingerprint(), source)
		return rec, nil
	} else if err != nil {
		return store.PartnerKey{}, err
	}
	rec, _, err := r.Record(ctx, updated, store.PartnerKey{Agency: c.Agency, Replaces: pinned.Fingerprint(), State: store.KeyApproved,
		Source: source, DecidedBy: "automatic: same pinned fingerprint", Reason: "update of the pinned key"})
	if err == nil {
		r.audit.Append(ctx, audit.Event{Kind: audit.KeyChange, Destination: c.Agency, Rule: "update", Detail: "update of " + updated.Fingerprint() + " from " + source})
	}
	return rec, err
}

// SealTarget is the certificate to seal a message for agency to: the
// partner's key in force, or, when that key cannot be used now (expired,
// revoked), this gateway's own, with the reason the item is to be held
// under until a usable key is in force. ok is false when the agency has
// no key in force at all.
func (r *Ring) SealTarget(agency string) (cert *keys.Cert, holdReason string, ok bool) {
	cert, ok = r.Partners().Get(agency)
	if !ok {
		if why, bad := r.Partners().Unusable(agency); bad {
			if self, err := r.Identity().Public(); err == nil {
				return self, holdKeyPrefix + agency + "'s key cannot be used: " + why + "; held until a usable key is in force", true
			}
		}
		return nil, "", false
	}
	if err := cert.Usable(r.now()); err != nil {
		self, perr := r.Identity().Public()
		if perr != nil {
			return nil, "", false
		}
		r.log.Error("admin alert: message held for a partner key", "destination", agency, "err", err)
		return self, r.keyHoldReason(agency, err), true
	}
	return cert, "", true
}

// PlainFor reports whether an agency speaks standard PGP/MIME only (its
// directory entry says envelope: pgp-mime): what is sealed for it has no
// manifest part, and it sends no receipts.
func (r *Ring) PlainFor(agency string) bool {
	a := r.cfg.Directory.Agency(agency)
	return a != nil && a.PlainPGPMIME()
}

// HoldState is the state of a new queue item: held when there is a hold
// reason.
func HoldState(reason string) store.State {
	if reason != "" {
		return store.OnHold
	}
	return store.Queued
}
