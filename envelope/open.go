package envelope

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"slices"
	"strings"
	"time"

	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/emersion/go-message/textproto"

	"github.com/conduit-gateway/conduit/armor"
	"github.com/conduit-gateway/conduit/keys"
)

// ReplayKey identifies an accepted package for the replay cache.
type ReplayKey struct {
	Originator string
	PackageID  string
	MessageID  string
	Date       time.Time
}

// ReplayChecker is the replay cache the gateway's store implements. It is
// asked last, once every other check has passed, and must atomically record
// the key and report ErrReplay if it was already recorded.
type ReplayChecker interface {
	CheckReplay(ctx context.Context, k ReplayKey) error
}

// OpenParams says who opens an envelope and what it trusts.
type OpenParams struct {
	// Identity holds this gateway's decryption keys.
	Identity *keys.Identity
	// Partners are the pinned partner certificates; the signer must be the
	// one pinned for the agency named as originator in the signed label.
	Partners *keys.Partners
	// Replay, when set, refuses packages already accepted.
	Replay ReplayChecker
	Now    func() time.Time
	// MaxAge and MaxSkew bound the signed Date: a package older than
	// MaxAge or dated more than MaxSkew ahead is refused. Defaults: 14
	// days (a package may wait in a queue for days) and 15 minutes.
	MaxAge, MaxSkew time.Duration
	// MaxSize bounds the decrypted payload (default 4 GiB).
	MaxSize int64
	// SpoolDir is where the encrypted spool lives (default os.TempDir).
	SpoolDir string
	// Legacy maps legacy markings in the inner label (default table if nil).
	Legacy LegacyMarkings
	// SubjectMarking reads a classification marking from a subject line
	// (marking.FromSubject through the legacy table in force), for
	// OpenPlain: a plain PGP/MIME partner may mark a message only in its
	// protected subject. found is false when the subject has no marking.
	SubjectMarking func(subject string) (l Label, found bool, err error)
}

// Signer says who signed an opened package.
type Signer struct {
	Agency      string
	Fingerprint string
}

// Opened describes a package that passed every check.
type Opened struct {
	PackageID string
	MessageID string
	Date      time.Time
	Label     Label
	Manifest  Manifest
	Signer    Signer
	// AEAD reports whether the payload was protected by SEIPD v2 (RFC
	// 9580) rather than SEIPD v1 with MDC.
	AEAD bool
	// Plain reports a standard PGP/MIME message from a partner without
	// Conduit (OpenPlain): no manifest, no receipt to expect.
	Plain bool
	// References are the message ids the signed In-Reply-To and
	// References headers name (OpenPlain): what a reply answers.
	References []string
}

// MaxHeaderBytes bounds a header section, outside and inside the
// envelope: a sending gateway must refuse at submission what a receiver
// would refuse here.
const MaxHeaderBytes = 256 << 10

// innerConduitFields are the Conduit-* fields an opened message keeps from
// inside the signed payload (lower case): written by the originating
// gateway, never by a sender, whose own are removed at submission.
var innerConduitFields = []string{"conduit-package", "conduit-notice"}

// VerifiedHeader is added to the opened message: the receiving side's mail
// client shows who signed it and that the label checked out.
const VerifiedHeader = "Conduit-Verified"

const (
	defaultMaxAge  = 14 * 24 * time.Hour
	defaultMaxSkew = 15 * time.Minute
	defaultMaxSize = 4 << 30
	maxHeaderBytes = MaxHeaderBytes
)

// Open reads a PGP/MIME envelope from r, decrypts it into an encrypted
// spool, and runs every check: structure, integrity protection present and
// intact, a valid signature by the key pinned for the originating agency,
// a valid inner label that equals the outer marking, a consistent manifest,
// the clock window and the replay cache. Only then is the opened message
// (the protected headers, a Conduit-Verified header and the original
// content) written to w. On any failure nothing is written to w and the
// error is a *CheckError naming the check.
func Open(ctx context.Context, w io.Writer, r io.Reader, p OpenParams) (*Opened, error) {
	pl, err := openPayload(ctx, r, &p)
	if err != nil {
		return nil, err
	}
	defer pl.sp.Close()
	outer, sp, signer, md, now := pl.outer, pl.sp, pl.signer, pl.md, p.Now
	legacy := p.Legacy
	if legacy == nil {
		legacy = DefaultLegacyMarkings
	}

	res, in, err := checkInner(sp, outer, signer, legacy)
	if err != nil {
		return nil, err
	}
	defer in.close()
	res.Signer = signer
	res.AEAD = md.DecryptedWithAlgorithm != 0 && isSEIPDv2(md)

	t := now()
	if res.Date.Before(t.Add(-orDefault(p.MaxAge, defaultMaxAge))) || res.Date.After(t.Add(orDefault(p.MaxSkew, defaultMaxSkew))) {
		return nil, checkErr(ErrOutsideWindow, fmt.Sprintf("dated %s, now %s", res.Date.UTC().Format(time.RFC3339), t.UTC().Format(time.RFC3339)), nil)
	}
	if p.Replay != nil {
		k := ReplayKey{Originator: res.Label.Originator, PackageID: res.PackageID, MessageID: res.MessageID, Date: res.Date}
		if err := p.Replay.CheckReplay(ctx, k); err != nil {
			if errors.Is(err, ErrReplay) {
				return nil, checkErr(ErrReplay, "package "+res.PackageID+" from "+res.Label.Originator, err)
			}
			return nil, fmt.Errorf("open: replay cache: %w", err)
		}
	}
	if err := release(w, in, res); err != nil {
		return nil, fmt.Errorf("open: write opened message: %w", err)
	}
	return res, nil
}

// payload is a decrypted, integrity-checked and signature-verified
// PGP/MIME payload, spooled encrypted, with the pinned agency that signed
// it.
type payload struct {
	outer  textproto.Header
	sp     *spool
	signer Signer
	md     *openpgp.MessageDetails
	// sum is the SHA-256 of the decrypted payload: the identity of a
	// message that carries no signed Message-ID (plain PGP/MIME). Only
	// OpenPlain has it computed.
	sum [sha256.Size]byte
}

// openPayload reads a PGP/MIME message (RFC 3156 section 4), decrypts its
// OpenPGP message into an encrypted spool, and checks integrity
// protection and a valid signature by a pinned key (by the pin: the
// signer's user ID is not consulted). p.Now is set to the clock in use.
// The caller closes pl.sp.
func openPayload(ctx context.Context, r io.Reader, p *OpenParams) (pl *payload, err error) {
	return openPayloadSigned(ctx, r, p, false)
}

// openPayloadSigned is openPayload; with nested (OpenPlain), a payload with
// no OpenPGP signature is returned unsigned (pl.signer empty) for the
// caller to verify a signature inside it (RFC 3156 section 6.1), and
// pl.sum is set.
func openPayloadSigned(ctx context.Context, r io.Reader, p *OpenParams, nested bool) (pl *payload, err error) {
	if p.Identity == nil {
		return nil, errors.New("open: no identity to decrypt with")
	}
	if p.Partners == nil {
		p.Partners = keys.NewPartners()
	}
	if p.Now == nil {
		p.Now = time.Now
	}
	now := p.Now
	maxSize := p.MaxSize
	if maxSize <= 0 {
		maxSize = defaultMaxSize
	}

	part, err := encryptedPart(ctx, r)
	if err != nil {
		return nil, err
	}
	defer part.close()
	outer, block, dataRec, data, mr := part.outer, part.block, part.rec, part.data, part.mr

	keyring := append(openpgp.EntityList{p.Identity.Entity}, p.Partners.Entities()...)
	cfg := &packet.Config{Time: now}
	md, _, err := readMessage(block.Body, keyring, cfg)
	if err != nil {
		return nil, decryptErr(orTruncated(dataRec, err))
	}
	if !md.IsEncrypted {
		return nil, checkErr(ErrNotEncrypted, "the OpenPGP message is signed or literal data only", nil)
	}
	sp, err := newSpool(p.SpoolDir, maxSize)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	defer func() {
		if err != nil {
			sp.Close()
		}
	}()
	// The digest identifies a plain partner's message that has no signed
	// Message-ID (OpenPlain); a Conduit envelope always has one, and is
	// spared a second pass of SHA-256 over the payload.
	var dst io.Writer = sp
	hash := sha256.New()
	if nested {
		dst = io.MultiWriter(sp, hash)
	}
	// A pooled buffer: neither side has ReadFrom or WriteTo, and io.Copy
	// would allocate 32 KiB for each package.
	buf := chunkPool.Get().([]byte)
	_, err = io.CopyBuffer(dst, md.UnverifiedBody, buf[:cap(buf)])
	chunkPool.Put(buf[:0])
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			return nil, checkErr(ErrTooLarge, fmt.Sprintf("over %d bytes", maxSize), nil)
		}
		return nil, bodyErr(orTruncated(dataRec, err))
	}
	if err := sp.finish(); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	// The rest of the encrypted part, then the closing boundary: a message
	// cut short after the ciphertext is still truncated.
	if _, err := io.Copy(io.Discard, data); err != nil {
		return nil, structural("encrypted part", err)
	}
	if _, err := mr.NextPart(); err != io.EOF {
		if err == nil {
			return nil, checkErr(ErrMalformed, "more than two parts in multipart/encrypted", nil)
		}
		return nil, structural("closing boundary", err)
	}

	// Signature: valid, and by a pinned key.
	if !md.IsSigned && nested {
		pl = &payload{outer: outer, sp: sp, md: md}
		hash.Sum(pl.sum[:0])
		return pl, nil
	}
	if !md.IsSigned {
		return nil, checkErr(ErrNotSigned, "the encrypted payload carries no signature", nil)
	}
	if md.SignatureError != nil {
		if errors.Is(md.SignatureError, pgperrors.ErrUnknownIssuer) {
			return nil, checkErr(ErrSignerNotPinned, "signed by a key pinned for no agency", md.SignatureError)
		}
		return nil, checkErr(ErrBadSignature, md.SignatureError.Error(), md.SignatureError)
	}
	if md.SignedBy == nil || md.SignedBy.Entity == nil {
		return nil, checkErr(ErrNotSigned, "no verified signature", nil)
	}
	signerEnt := md.SignedBy.Entity
	signer := Signer{Fingerprint: keys.Fingerprint(signerEnt)}
	if bytes.Equal(signerEnt.PrimaryKey.Fingerprint, p.Identity.Entity.PrimaryKey.Fingerprint) {
		signer.Agency = p.Identity.Agency
	} else if a, ok := p.Partners.AgencyOf(signerEnt.PrimaryKey.Fingerprint); ok {
		signer.Agency = a
	} else {
		return nil, checkErr(ErrSignerNotPinned, "signer "+signer.Fingerprint+" is pinned for no agency", nil)
	}
	pl = &payload{outer: outer, sp: sp, signer: signer, md: md}
	if nested {
		hash.Sum(pl.sum[:0])
	}
	return pl, nil
}

// pgpPart is the encrypted part of a PGP/MIME message, and what reads
// the rest of the message after it.
type pgpPart struct {
	outer textproto.Header
	block *armor.Block
	rec   *errRecorder
	data  io.Reader
	mr    *multipartReader
	br    *bufio.Reader
}

// close gives back the read buffer; nothing of the part may be read
// after it.
func (p *pgpPart) close() { readers.put(p.br) }

// encryptedPart reads the outer header of a PGP/MIME message (RFC 3156
// section 4) and returns its armored OpenPGP message, positioned at the
// first packet.
func encryptedPart(ctx context.Context, r io.Reader) (*pgpPart, error) {
	// The bound above the sticky reader, as in checkInner: it is lifted
	// once the header has been read.
	lim := &headerLimit{r: &stickyReader{r: &ctxReader{ctx: ctx, r: r}}, n: maxHeaderBytes}
	br := readers.get(lim)
	part, err := readEncryptedPart(br, lim)
	if err != nil {
		readers.put(br)
		return nil, err
	}
	return part, nil
}

// readEncryptedPart is encryptedPart reading from br, which reads from
// lim.
func readEncryptedPart(br *bufio.Reader, lim *headerLimit) (*pgpPart, error) {
	outer, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, structural("outer header", err)
	}
	lim.n = -1
	mt, params, err := mime.ParseMediaType(outer.Get("Content-Type"))
	if err != nil || mt != "multipart/encrypted" || !strings.EqualFold(params["protocol"], "application/pgp-encrypted") || params["boundary"] == "" {
		return nil, checkErr(ErrMalformed, "not a PGP/MIME multipart/encrypted message (RFC 3156 section 4)", err)
	}
	mr := newMultipartReader(br, params["boundary"])
	ver, err := mr.NextPart()
	if err != nil {
		return nil, structural("version part", err)
	}
	if vt, _, _ := mime.ParseMediaType(ver.Header.Get("Content-Type")); vt != "application/pgp-encrypted" {
		return nil, checkErr(ErrMalformed, "first part is not application/pgp-encrypted", nil)
	}
	vb, err := io.ReadAll(io.LimitReader(ver, 1024))
	if err != nil {
		return nil, structural("version part", err)
	}
	if !bytes.Contains(vb, []byte("Version: 1")) {
		return nil, checkErr(ErrMalformed, "version part does not say Version: 1", nil)
	}
	data, err := mr.NextPart()
	if err != nil {
		return nil, structural("encrypted part", err)
	}
	if dt, _, _ := mime.ParseMediaType(data.Header.Get("Content-Type")); dt != "application/octet-stream" {
		return nil, checkErr(ErrMalformed, "second part is not application/octet-stream", nil)
	}
	// Remember how the transport part ended: a truncated message shows
	// there as an unexpected EOF, while OpenPGP only sees its data stop.
	dataRec := &errRecorder{r: data}
	block, err := armor.Decode(dataRec)
	if err != nil {
		return nil, structural("armor", orTruncated(dataRec, err))
	}
	if block.Type != "PGP MESSAGE" {
		return nil, checkErr(ErrMalformed, "armor block is "+block.Type+", not PGP MESSAGE", nil)
	}

	return &pgpPart{outer: outer, block: block, rec: dataRec, data: data, mr: mr, br: br}, nil
}

// RecipientKeyIDs lists the key ids an envelope is encrypted to (its
// PKESK packets), without decrypting anything: the relay uses it to see
// whether a queued envelope can still be read by the partner's current key.
func RecipientKeyIDs(ctx context.Context, r io.Reader) ([]uint64, error) {
	part, err := encryptedPart(ctx, r)
	if err != nil {
		return nil, err
	}
	defer part.close()
	pr := packet.NewReader(part.block.Body)
	var ids []uint64
	for {
		p, err := pr.Next()
		if err != nil {
			return nil, structural("encrypted part", err)
		}
		ek, ok := p.(*packet.EncryptedKey)
		if !ok {
			return ids, nil // the encrypted data follows the PKESKs
		}
		ids = append(ids, ek.KeyId)
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func isSEIPDv2(md *openpgp.MessageDetails) bool {
	// go-crypto records the SEIPD v2 cipher before key decryption; for v1 it
	// comes from the session key packet. The decryption key's version is
	// the reliable signal: v6 PKESK goes with SEIPD v2.
	return md.DecryptedWith.PublicKey != nil && md.DecryptedWith.PublicKey.Version == 6
}

// errRecorder remembers the first error other than EOF its reader gave.
type errRecorder struct {
	r   io.Reader
	err error
}

func (e *errRecorder) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// orTruncated reports truncation when the transport part ended early,
// whatever error the layers above made of it.
func orTruncated(rec *errRecorder, err error) error {
	if rec.err != nil && (errors.Is(rec.err, io.ErrUnexpectedEOF) || errors.Is(rec.err, io.EOF)) {
		return fmt.Errorf("%w (%v)", io.ErrUnexpectedEOF, err)
	}
	return err
}

// headerLimit caps the bytes read until the header is parsed (n >= 0).
type headerLimit struct {
	r io.Reader
	n int64
}

func (h *headerLimit) Read(p []byte) (int, error) {
	if h.n < 0 {
		return h.r.Read(p)
	}
	if h.n == 0 {
		return 0, errors.New("header section too large")
	}
	if int64(len(p)) > h.n {
		p = p[:h.n]
	}
	n, err := h.r.Read(p)
	h.n -= int64(n)
	return n, err
}

func structural(where string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return checkErr(ErrTruncated, where+": the message ends early", err)
	}
	if errors.Is(err, armor.ErrCorrupt) {
		return checkErr(ErrTampered, where+": armor checksum or encoding is corrupt", err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("open: %w", err)
	}
	return checkErr(ErrMalformed, where+": "+err.Error(), err)
}

// decryptErr classifies an error from reading the packets before the
// encrypted data.
func decryptErr(err error) error {
	var unsupported pgperrors.UnsupportedError
	switch {
	case errors.As(err, &unsupported) && strings.Contains(string(unsupported), "integrity"):
		return checkErr(ErrNoIntegrity, "symmetrically encrypted data without MDC", err)
	case errors.Is(err, pgperrors.ErrKeyIncorrect):
		return checkErr(ErrNoKey, "no session key could be decrypted with this gateway's keys", err)
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return checkErr(ErrTruncated, "the OpenPGP message ends early", err)
	case errors.Is(err, armor.ErrCorrupt):
		return checkErr(ErrTampered, "armor checksum or encoding is corrupt", err)
	}
	var se pgperrors.SignatureError
	var ae pgperrors.AEADError
	var de pgperrors.DecryptWithSessionKeyError
	if errors.As(err, &se) || errors.As(err, &ae) || errors.As(err, &de) {
		return checkErr(ErrTampered, err.Error(), err)
	}
	return checkErr(ErrMalformed, "OpenPGP: "+err.Error(), err)
}

// bodyErr classifies an error from reading the decrypted data: any
// failure there means the ciphertext is not what was encrypted.
func bodyErr(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("open: %w", err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return checkErr(ErrTruncated, "the ciphertext ends early", err)
	}
	return checkErr(ErrTampered, err.Error(), err)
}

// inner is the opened payload, read once: its protected header section,
// checked, and what reads on after the manifest part.
type inner struct {
	h   textproto.Header
	mr  *multipartReader
	lim *headerLimit
	br  *bufio.Reader
}

// close gives back the read buffer.
func (in *inner) close() { readers.put(in.br) }

// checkInner reads the spooled payload's header section and manifest part
// and checks them against the signer and the outer header. Until the
// manifest has been read, what it reads is bounded by maxHeaderBytes.
func checkInner(sp *spool, outer textproto.Header, signer Signer, legacy LegacyMarkings) (*Opened, *inner, error) {
	sr, err := sp.reader()
	if err != nil {
		return nil, nil, err
	}
	// The bound above the sticky reader, so that release can lift it:
	// while it holds, it refuses every read alike.
	lim := &headerLimit{r: &stickyReader{r: sr}, n: maxHeaderBytes}
	br := readers.get(lim)
	res, in, err := readInner(br, lim, outer, signer, legacy)
	if err != nil {
		readers.put(br)
		return nil, nil, err
	}
	return res, in, nil
}

// readInner is checkInner reading from br, which reads from lim.
func readInner(br *bufio.Reader, lim *headerLimit, outer textproto.Header, signer Signer, legacy LegacyMarkings) (*Opened, *inner, error) {
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, nil, checkErr(ErrMalformed, "protected header section: "+err.Error(), err)
	}
	res := &Opened{}
	raw := h.Get(LabelHeader)
	if raw == "" {
		return nil, nil, checkErr(ErrLabelInvalid, "no "+LabelHeader+" inside the envelope", nil)
	}
	lbl, err := ParseLabelWith(raw, legacy)
	if err != nil {
		return nil, nil, checkErr(ErrLabelInvalid, err.Error(), err)
	}
	res.Label = lbl
	if lbl.Originator != signer.Agency {
		return nil, nil, checkErr(ErrSignerNotPinned,
			fmt.Sprintf("label names originator %s but the signer %s is pinned for %s", lbl.Originator, signer.Fingerprint, signer.Agency), nil)
	}

	// Outer against inner (RFC 9788 section 2.2, HP-Outer): the marking and
	// the package id a relay or a person sees must be the signed ones.
	res.PackageID = strings.TrimSpace(h.Get(PackageHeader))
	if res.PackageID == "" {
		return nil, nil, checkErr(ErrMalformed, "no "+PackageHeader+" inside the envelope", nil)
	}
	if got := norm(outer.Get(PackageHeader)); got != res.PackageID {
		return nil, nil, checkErr(ErrMarkingMismatch, "outer package id differs from the signed one", nil)
	}
	if got, want := norm(outer.Get(SIOLabelHeader)), lbl.SIOLabel(); got != want {
		return nil, nil, checkErr(ErrMarkingMismatch, fmt.Sprintf("outer %s is %q, the signed label says %q", SIOLabelHeader, got, want), nil)
	}
	if subj := norm(outer.Get("Subject")); !strings.HasPrefix(subj, lbl.SubjectMarking()) {
		return nil, nil, checkErr(ErrMarkingMismatch, "outer subject does not carry the signed marking "+lbl.SubjectMarking(), nil)
	}
	hpOuter := map[string]string{}
	for _, v := range h.Values(HPOuterHeader) {
		if k, val, ok := strings.Cut(v, ":"); ok {
			hpOuter[strings.ToLower(strings.TrimSpace(k))] = norm(val)
		}
	}
	for _, k := range []string{"Subject", SIOLabelHeader, PackageHeader} {
		want, ok := hpOuter[strings.ToLower(k)]
		if !ok {
			return nil, nil, checkErr(ErrMalformed, "no "+HPOuterHeader+" record of the outer "+k, nil)
		}
		if norm(outer.Get(k)) != want {
			return nil, nil, checkErr(ErrMarkingMismatch, "outer "+k+" differs from what the sender signed", nil)
		}
	}

	res.MessageID = strings.TrimSpace(h.Get("Message-ID"))
	if res.MessageID == "" {
		return nil, nil, checkErr(ErrMalformed, "no signed Message-ID", nil)
	}
	date, err := mail.ParseDate(h.Get("Date"))
	if err != nil {
		return nil, nil, checkErr(ErrMalformed, "no valid signed Date", err)
	}
	res.Date = date

	// The manifest part, and its label, which must be the header's label.
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return nil, nil, checkErr(ErrMalformed, "protected payload is not multipart/mixed", err)
	}
	mr := newMultipartReader(br, params["boundary"])
	part, err := mr.NextPart()
	if err != nil {
		return nil, nil, checkErr(ErrMalformed, "no manifest part", err)
	}
	if pt, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type")); pt != ManifestType {
		return nil, nil, checkErr(ErrMalformed, "first part is not the manifest", nil)
	}
	mj, err := io.ReadAll(io.LimitReader(part, maxManifest+1))
	if err != nil || len(mj) > maxManifest {
		return nil, nil, checkErr(ErrMalformed, "manifest part unreadable or too large", err)
	}
	var man Manifest
	if err := json.Unmarshal(mj, &man); err != nil {
		return nil, nil, checkErr(ErrMalformed, "manifest: "+err.Error(), err)
	}
	if man.Label.Canonical() != lbl.Canonical() {
		return nil, nil, checkErr(ErrMarkingMismatch, "the manifest's label differs from the "+LabelHeader, nil)
	}
	if err := man.check(); err != nil {
		return nil, nil, checkErr(ErrMalformed, "manifest: "+err.Error(), err)
	}
	res.Manifest = man
	return res, &inner{h: h, mr: mr, lim: lim, br: br}, nil
}

// norm unfolds a header value and trims it, for comparisons.
func norm(s string) string {
	return strings.Join(strings.Fields(unfold(s)), " ")
}

// release writes the opened message: the protected headers (without the
// envelope's own machinery), a Conduit-Verified header, and the original
// content part, streamed from the spool where checkInner stopped reading,
// so that the header section and the manifest are read and parsed once.
func release(w io.Writer, in *inner, res *Opened) error {
	in.lim.n = -1 // the content part is bounded by the spool's size
	content, err := in.mr.NextPart()
	if err != nil {
		return err
	}
	h := in.h
	bw := writers.get(w)
	defer writers.put(bw)
	fields := h.Fields()
	var keep [][]byte
	for fields.Next() {
		lk := strings.ToLower(fields.Key())
		if lk == "content-type" || lk == strings.ToLower(HPOuterHeader) {
			continue
		}
		// The receiving gateway writes its own Conduit-* fields
		// (Conduit-Verified above, delivery and decision fields when it
		// delivers); one that arrived inside the payload is a claim no
		// gateway checked here, whoever signed it, and would sit beside
		// the genuine one. Only the package id and a notice's kind, which
		// the originating gateway itself wrote and signed, stay.
		if strings.HasPrefix(lk, "conduit-") && !slices.Contains(innerConduitFields, lk) {
			continue
		}
		raw, err := fields.Raw()
		if err != nil {
			return err
		}
		keep = append(keep, raw)
	}
	fmt.Fprintf(bw, "%s: signer=%s; fingerprint=%s; label=valid; package=%s\r\n",
		VerifiedHeader, res.Signer.Agency, res.Signer.Fingerprint, res.PackageID)
	for _, raw := range keep {
		bw.Write(raw)
	}
	if err := textproto.WriteHeader(bw, content.Header); err != nil {
		return err
	}
	if _, err := io.Copy(bw, content); err != nil {
		return err
	}
	return bw.Flush()
}
