package envelope

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"
)

// OpenPlain opens a standard signed-and-encrypted PGP/MIME message (RFC
// 3156 section 6.2, as GnuPG, Kleopatra, Thunderbird or a commercial
// gateway write it) from a partner that has no Conduit. The checks are
// Open's where they apply: integrity protection, a valid signature by a
// pinned key (the pin, not the user ID, says which agency), the clock
// window and the replay cache, nothing released before all pass. What
// such a partner cannot give is taken from what it does:
//
//   - the marking: a Handling-Label header inside the encrypted part, or
//     else the classification marking of the protected (inner) Subject,
//     read by p.SubjectMarking; an unprotected outer subject is never
//     trusted for it. The label may be incomplete: the inbound policy
//     judges it (label-required) as for any package;
//   - the originator: the signer's agency (a label naming another is
//     refused, as in Open);
//   - replay: the signed inner Message-ID and Date when present, else the
//     signature's creation time and a digest of the signed payload;
//   - the manifest: from the signer's agency to this one, with the label.
//
// The opened message is the decrypted MIME entity, with a Conduit-Verified
// header naming the signer.
func OpenPlain(ctx context.Context, w io.Writer, r io.Reader, p OpenParams) (*Opened, error) {
	pl, err := openPayload(ctx, r, &p)
	if err != nil {
		return nil, err
	}
	defer pl.sp.Close()
	legacy := p.Legacy
	if legacy == nil {
		legacy = DefaultLegacyMarkings
	}
	sr, err := pl.sp.reader()
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	br := bufio.NewReader(&headerLimit{r: sr, n: maxHeaderBytes})
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, checkErr(ErrMalformed, "the encrypted MIME entity's header: "+err.Error(), err)
	}
	if h.Get("Content-Type") == "" && h.Len() == 0 {
		return nil, checkErr(ErrMalformed, "the encrypted part is not a MIME entity", nil)
	}

	res := &Opened{Signer: pl.signer, Plain: true, AEAD: pl.md.DecryptedWithAlgorithm != 0 && isSEIPDv2(pl.md)}
	var lbl Label
	switch raw, subj := h.Get(LabelHeader), h.Get("Subject"); {
	case raw != "":
		if lbl, err = ParseLabelPartialWith(raw, legacy); err != nil {
			return nil, checkErr(ErrLabelInvalid, err.Error(), err)
		}
	case p.SubjectMarking != nil && subj != "":
		l, found, err := p.SubjectMarking(subj)
		if err != nil {
			return nil, checkErr(ErrLabelInvalid, "protected subject: "+err.Error(), err)
		}
		if !found {
			return nil, checkErr(ErrLabelInvalid, "no "+LabelHeader+" and no classification marking in the protected subject", nil)
		}
		lbl = l
	default:
		return nil, checkErr(ErrLabelInvalid, "no "+LabelHeader+" inside the encrypted part and no protected subject with a marking", nil)
	}
	if lbl.Originator == "" {
		lbl.Originator = pl.signer.Agency
	}
	if lbl.Originator != pl.signer.Agency {
		return nil, checkErr(ErrSignerNotPinned,
			fmt.Sprintf("label names originator %s but the signer %s is pinned for %s", lbl.Originator, pl.signer.Fingerprint, pl.signer.Agency), nil)
	}

	// Replay identity: signed values only (RFC 3156 protects the whole
	// encrypted entity; the outer header is not signed).
	sigTime := time.Time{}
	if pl.md.Signature != nil {
		sigTime = pl.md.Signature.CreationTime
	}
	res.Date = sigTime
	if d := h.Get("Date"); d != "" {
		if res.Date, err = mail.ParseDate(d); err != nil {
			return nil, checkErr(ErrMalformed, "signed Date is not a date", err)
		}
	}
	if res.Date.IsZero() {
		return nil, checkErr(ErrMalformed, "no signed Date and no signature time", nil)
	}
	res.MessageID = strings.TrimSpace(h.Get("Message-ID"))
	digest := hex.EncodeToString(pl.sum[:12])
	if res.MessageID == "" {
		res.MessageID = "<" + digest + "." + sigTime.UTC().Format("20060102T150405") + "@signed-payload>"
	}
	res.PackageID = "pgp-" + digest
	for _, k := range []string{"In-Reply-To", "References"} {
		res.References = append(res.References, strings.Fields(h.Get(k))...)
	}
	if lbl.Created.IsZero() {
		lbl.Created = res.Date.UTC().Truncate(time.Second)
	}
	if err := lbl.ValidatePresent(); err != nil {
		return nil, checkErr(ErrLabelInvalid, err.Error(), err)
	}
	res.Label = lbl
	res.Manifest = Manifest{From: pl.signer.Agency, To: []string{p.Identity.Agency}, Label: lbl}

	now := p.Now()
	if res.Date.Before(now.Add(-orDefault(p.MaxAge, defaultMaxAge))) || res.Date.After(now.Add(orDefault(p.MaxSkew, defaultMaxSkew))) {
		return nil, checkErr(ErrOutsideWindow, fmt.Sprintf("dated %s, now %s", res.Date.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)), nil)
	}
	if p.Replay != nil {
		k := ReplayKey{Originator: lbl.Originator, PackageID: res.PackageID, MessageID: res.MessageID, Date: res.Date}
		if err := p.Replay.CheckReplay(ctx, k); err != nil {
			if errors.Is(err, ErrReplay) {
				return nil, checkErr(ErrReplay, "message "+res.MessageID+" from "+lbl.Originator, err)
			}
			return nil, fmt.Errorf("open: replay cache: %w", err)
		}
	}
	if err := releasePlain(w, pl, h, res); err != nil {
		return nil, fmt.Errorf("open: write opened message: %w", err)
	}
	return res, nil
}

// releasePlain writes the opened entity: a Conduit-Verified header, the
// outer Subject, From and To where the entity has no protected ones (so
// that the mailbox shows them; they were never trusted for a decision),
// then the entity as signed.
func releasePlain(w io.Writer, pl *payload, h textproto.Header, res *Opened) error {
	sr, err := pl.sp.reader()
	if err != nil {
		return err
	}
	bw := getWriter(w)
	defer putWriter(bw)
	protected := "yes"
	if h.Get("Subject") == "" {
		protected = "no"
	}
	fmt.Fprintf(bw, "%s: signer=%s; fingerprint=%s; label=%s; format=pgp-mime; protected-headers=%s\r\n",
		VerifiedHeader, res.Signer.Agency, res.Signer.Fingerprint, labelState(res.Label), protected)
	for _, k := range []string{"Subject", "From", "To", "Date"} {
		if h.Get(k) == "" && pl.outer.Get(k) != "" {
			fmt.Fprintf(bw, "%s: %s\r\n", k, norm(pl.outer.Get(k)))
		}
	}
	if _, err := io.Copy(bw, sr); err != nil {
		return err
	}
	return bw.Flush()
}

func labelState(l Label) string {
	if l.Validate() == nil {
		return "valid"
	}
	return "incomplete"
}

// IsPlain reports whether an outer header is a standard PGP/MIME message
// rather than a Conduit envelope: it carries no Conduit-Package.
func IsPlain(outer textproto.Header) bool { return outer.Get(PackageHeader) == "" }
