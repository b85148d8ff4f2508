package inbound

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/smtpserver"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
)

// takeKeyChange records a partner's key-change notice. The notice was
// opened with every check, so it is signed by the key pinned for its
// sender. A certificate with the same fingerprint is an update that key
// signed and is taken at once; another fingerprint waits for an
// administrator.
func (srv *Server) takeKeyChange(ctx context.Context, m received, o *envelope.Opened, opened []byte) outcome {
	_, content, _ := bytes.Cut(opened, []byte("\r\n\r\n"))
	offered, err := keys.ReadCert(bytes.NewReader(content))
	if err != nil {
		return srv.quarantine(ctx, m, "key-change-invalid", "a key-change notice whose body is not a certificate: "+err.Error())
	}
	// The notice speaks for the agency whose pinned key signed it; the
	// offered key's user ID is only a claim (a partner's key made with gpg
	// names no agency id), so a different one is logged, not refused.
	agency := o.Signer.Agency
	if w := offered.NameWarning(agency); w != "" {
		srv.log.Warn("key-change notice: the offered key's user ID names another agency", "partner", agency, "detail", w)
	}
	offered.Agency = agency
	pinned, ok := srv.keys.Partners().Get(agency)
	if !ok {
		return srv.quarantine(ctx, m, "key-change-invalid", "a key-change notice from "+agency+", which has no key in force here")
	}
	updated, err := keys.UpdateCert(pinned, offered)
	if errors.Is(err, keys.ErrFingerprintMismatch) {
		rec, _ := srv.keys.Offer(ctx, offered, agency, pinned.Fingerprint(), "key-change notice "+o.PackageID+" from "+agency+" signed by "+o.Signer.Fingerprint)
		if err := srv.recordDelivered(ctx, o); err != nil {
			srv.log.Error("key-change replay record", "err", err)
		}
		return outcome{delivered: true, reply: smtpserver.Reply(250, smtp.EnhancedCode{2, 0, 0},
			fmt.Sprintf("Key change received; the new key %s is %s here until an administrator of %s approves it", offered.Fingerprint(), rec.State, srv.cfg.Agency))}
	}
	if err != nil {
		return srv.quarantine(ctx, m, "key-change-invalid", err.Error())
	}
	st := keys.StatusOf(updated.Entity, srv.now())
	detail := fmt.Sprintf("update of %s signed by the key itself: %d encryption subkeys", updated.Fingerprint(), len(st.Subkeys))
	if st.Usable != nil {
		detail += "; " + st.Usable.Error()
	}
	if _, _, err := srv.keys.Record(ctx, updated, store.PartnerKey{Agency: agency, Replaces: pinned.Fingerprint(), State: store.KeyApproved,
		Source: "key-change notice " + o.PackageID, DecidedBy: "automatic: signed by the pinned key", Reason: detail}); err != nil {
		srv.log.Error("partner key update not recorded", "partner", agency, "err", err)
		return outcome{reply: smtpserver.ErrTempStore}
	}
	if err := srv.keys.Load(ctx); err != nil {
		srv.log.Error("partner keys not reloaded", "err", err)
	}
	if err := srv.recordDelivered(ctx, o); err != nil {
		srv.log.Error("key-change replay record", "err", err)
	}
	srv.log.Info("partner key updated", "partner", agency, "fingerprint", updated.Fingerprint(), "subkeys", len(st.Subkeys), "usable", st.Usable == nil)
	srv.audit.Append(ctx, audit.Event{Kind: audit.KeyChange, Package: o.PackageID, Destination: agency, Actor: agency, Rule: "update", Detail: detail})
	if st.Usable != nil {
		srv.keys.AlertAdmins(ctx, "partner key of "+agency+" can no longer be used", detail+"\r\nDeliveries to "+agency+" are held until it sends a usable key.")
	}
	return outcome{delivered: true, reply: smtpserver.Reply(250, smtp.EnhancedCode{2, 0, 0}, "Key change from "+agency+" recorded")}
}

// recordDelivered adds an opened message to the replay cache.
func (srv *Server) recordDelivered(ctx context.Context, o *envelope.Opened) error {
	return srv.store.Update(ctx, func(tx store.Tx) error {
		return tx.RecordDelivered(o.Label.Originator, o.PackageID, o.MessageID, o.Date)
	})
}
