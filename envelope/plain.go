package envelope

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"time"

	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/emersion/go-message/textproto"

	"github.com/conduit-gateway/conduit/armor"
	"github.com/conduit-gateway/conduit/keys"
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
	pl, err := openPayloadSigned(ctx, r, &p, true)
	if err != nil {
		return nil, err
	}
	defer pl.sp.Close()
	sigTime := time.Time{}
	if pl.md.Signature != nil {
		sigTime = pl.md.Signature.CreationTime
	}
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
	if pl.signer.Agency == "" {
		// No OpenPGP signature around the data: RFC 3156 section 6.1,
		// a multipart/signed entity inside the encryption, or unsigned.
		signer, signed, t, err := verifyNested(pl, h, &p)
		if err != nil {
			return nil, err
		}
		// Only the signed part's header is signed: the marking, date and
		// Message-ID are read from it.
		pl.signer, h, sigTime = signer, signed, t
	}

	res := &Opened{Plain: true, AEAD: pl.md.DecryptedWithAlgorithm != 0 && isSEIPDv2(pl.md)}
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
	res.Signer = pl.signer
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
	bw := writers.get(w)
	defer writers.put(bw)
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

// maxSignedLine bounds one line of a signed part while it is verified.
const maxSignedLine = 1 << 20

// verifyNested verifies RFC 3156 section 6.1: the encrypted entity is
// multipart/signed (protocol application/pgp-signature), its first part
// signed by the detached signature in its second, with a pinned key. It
// returns the signer, the signed part's header and the signature time.
// The spool is read twice: once for the signature, once streaming the
// signed part's bytes, as sent, into the verification.
func verifyNested(pl *payload, h textproto.Header, p *OpenParams) (Signer, textproto.Header, time.Time, error) {
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "multipart/signed" || !strings.EqualFold(params["protocol"], "application/pgp-signature") || params["boundary"] == "" {
		return Signer{}, h, time.Time{}, checkErr(ErrNotSigned, "the encrypted payload carries no signature", nil)
	}
	boundary := params["boundary"]
	sr, err := pl.sp.reader()
	if err != nil {
		return Signer{}, h, time.Time{}, err
	}
	br := bufio.NewReader(sr)
	if _, err := textproto.ReadHeader(br); err != nil {
		return Signer{}, h, time.Time{}, checkErr(ErrMalformed, "multipart/signed header", err)
	}
	mr := textproto.NewMultipartReader(br, boundary)
	first, err := mr.NextPart()
	if err != nil {
		return Signer{}, h, time.Time{}, checkErr(ErrMalformed, "multipart/signed has no signed part", err)
	}
	signedHdr := first.Header
	if _, err := io.Copy(io.Discard, first); err != nil {
		return Signer{}, h, time.Time{}, checkErr(ErrMalformed, "multipart/signed signed part", err)
	}
	second, err := mr.NextPart()
	if err != nil {
		return Signer{}, h, time.Time{}, checkErr(ErrMalformed, "multipart/signed has no signature part", err)
	}
	if st, _, _ := mime.ParseMediaType(second.Header.Get("Content-Type")); st != "application/pgp-signature" {
		return Signer{}, h, time.Time{}, checkErr(ErrMalformed, "the second part of multipart/signed is not application/pgp-signature", nil)
	}
	sig, err := io.ReadAll(io.LimitReader(second, 64<<10))
	if err != nil {
		return Signer{}, h, time.Time{}, checkErr(ErrMalformed, "signature part", err)
	}
	var sigBody io.Reader = bytes.NewReader(sig)
	if blk, err := armor.Decode(bytes.NewReader(sig)); err == nil {
		sigBody = blk.Body
	}

	sr2, err := pl.sp.reader()
	if err != nil {
		return Signer{}, h, time.Time{}, err
	}
	br2 := bufio.NewReader(sr2)
	if _, err := textproto.ReadHeader(br2); err != nil {
		return Signer{}, h, time.Time{}, checkErr(ErrMalformed, "multipart/signed header", err)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(signedPart(br2, boundary, pw)) }()
	keyring := append(openpgp.EntityList{p.Identity.Entity}, p.Partners.Entities()...)
	s, ent, err := openpgp.VerifyDetachedSignature(keyring, pr, sigBody, &packet.Config{Time: p.Now})
	pr.CloseWithError(io.ErrClosedPipe)
	if err != nil {
		if errors.Is(err, pgperrors.ErrUnknownIssuer) {
			return Signer{}, h, time.Time{}, checkErr(ErrSignerNotPinned, "signed by a key pinned for no agency", err)
		}
		var ce *CheckError
		if errors.As(err, &ce) {
			return Signer{}, h, time.Time{}, err
		}
		return Signer{}, h, time.Time{}, checkErr(ErrBadSignature, err.Error(), err)
	}
	signer := Signer{Fingerprint: keys.Fingerprint(ent)}
	a, ok := p.Partners.AgencyOf(ent.PrimaryKey.Fingerprint)
	if !ok {
		return Signer{}, h, time.Time{}, checkErr(ErrSignerNotPinned, "signer "+signer.Fingerprint+" is pinned for no agency", nil)
	}
	signer.Agency = a
	return signer, signedHdr, s.CreationTime, nil
}

// signedPart writes the first body part of a multipart entity whose
// header has been read from r, byte for byte as sent (RFC 3156 section
// 5: the signed data is the part with its headers; the CRLF before the
// next delimiter belongs to the delimiter, RFC 2046 section 5.1.1).
func signedPart(r *bufio.Reader, boundary string, w io.Writer) error {
	delim := "--" + boundary
	isDelim := func(line []byte) bool {
		t := strings.TrimRight(string(line), " \t\r\n")
		return t == delim || t == delim+"--"
	}
	readLine := func() ([]byte, error) {
		var line []byte
		for {
			chunk, err := r.ReadSlice('\n')
			line = append(line, chunk...)
			if len(line) > maxSignedLine {
				return nil, checkErr(ErrMalformed, "a line of the signed part is too long", nil)
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil {
				return nil, checkErr(ErrMalformed, "multipart/signed ends inside its signed part", err)
			}
			return line, nil
		}
	}
	for {
		line, err := readLine()
		if err != nil {
			return err
		}
		if isDelim(line) {
			break
		}
	}
	var pending []byte
	for {
		line, err := readLine()
		if err != nil {
			return err
		}
		if isDelim(line) {
			_, err := w.Write(bytes.TrimSuffix(bytes.TrimSuffix(pending, []byte("\n")), []byte("\r")))
			return err
		}
		if pending != nil {
			if _, err := w.Write(pending); err != nil {
				return err
			}
		}
		pending = line
	}
}
