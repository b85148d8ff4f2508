package envelope

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
	"sync"
	"time"

	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/emersion/go-message/textproto"

	"github.com/conduit-gateway/conduit/armor"
	"github.com/conduit-gateway/conduit/keys"
)

// Header names of the envelope.
const (
	// PackageHeader carries the opaque package id, outside and inside.
	PackageHeader = "Conduit-Package"
	// SIOLabelHeader carries the outer marking in the style of RFC 7444
	// (Security Labels in Internet Email), section 3: marking="...".
	SIOLabelHeader = "SIO-Label"
	// HPOuterHeader records, inside the signed payload, the value of each
	// outer header the sender wrote (RFC 9788 section 2.2), so that an
	// altered outer header is detected as tampering.
	HPOuterHeader = "HP-Outer"
	// ManifestType is the media type of the manifest part.
	ManifestType = "application/vnd.conduit.manifest+json"
)

// ErrProfileMismatch: a key does not belong to the profile asked for.
var ErrProfileMismatch = errors.New("key does not fit the profile")

// SealParams says who seals a package, for whom, under which label.
type SealParams struct {
	Signer     *keys.Identity
	Recipients []*keys.Cert
	Label      Label
	// Manifest is the package's routing facts (subjects, risk, topic).
	// When nil, one is made from the label and the recipients.
	Manifest *Manifest
	Profile  keys.Profile
	// PackageID is the opaque id; a random one when empty.
	PackageID string
	// OuterFrom and OuterTo are the gateways' addresses on the outside;
	// by default the e-mail addresses in the keys' user IDs.
	OuterFrom string
	OuterTo   []string
	Now       func() time.Time
	// Plain seals for a partner without Conduit: standard RFC 3156
	// PGP/MIME with RFC 9788 protected headers (the label among them) and
	// the subject marking, but no manifest part, which such a partner's
	// reader (Thunderbird, Kleopatra, mutt) has no use for.
	Plain bool
}

// Sealed describes a sealed envelope.
type Sealed struct {
	PackageID string
	MessageID string // the inner, signed Message-ID
}

// NewPackageID returns a new package id: "cdt-" and 24 base32 characters
// encoding 15 bytes, the first 6 the millisecond it was made (big-endian)
// and the other 9 random (so that ids made in the same millisecond differ).
//
// The time comes first so that ids sort in the order they were made: every
// index keyed by package id (the queue's unique key, the deadlines', the
// receiver's replay record and pending receipts, the audit trail's package
// index) put each new random id on a page of its own, and every commit
// wrote such a page whole for each; ordered ids go to the index's last
// page, which the packages committed together share (the two gateways
// wrote 6 to 8% fewer bytes a package). An id is a name, not a secret:
// whoever holds one learned it from the package, which carries its date.
func NewPackageID() string { return newPackageID(time.Now()) }

// packageIDEncoding is base32 with its lower-case alphabet in ASCII order,
// so that the ids' text sorts as their bytes do (base32's own order puts
// "2"-"7" after "z"). Both are [a-z2-7], the ids' syntax.
var packageIDEncoding = base32.NewEncoding("234567abcdefghijklmnopqrstuvwxyz").WithPadding(base32.NoPadding)

func newPackageID(now time.Time) string {
	var b [15]byte
	ms := uint64(now.UnixMilli()) // 48 bits: until the year 10889
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	if _, err := rand.Read(b[6:]); err != nil {
		panic("crypto/rand: " + err.Error())
	}
	return "cdt-" + packageIDEncoding.EncodeToString(b[:])
}

// Marking is the human marking of a label: classification, descriptor and
// caveat, as UK government mail writes it.
func (l *Label) Marking() string {
	s := string(l.Classification)
	if l.Descriptor != "" {
		s += " " + l.Descriptor
	}
	if l.Caveat != "" {
		s += " " + l.Caveat
	}
	return s
}

// SIOLabel is the outer SIO-Label value for a label.
func (l *Label) SIOLabel() string { return "marking=" + quoteValue(l.Marking()) }

// SubjectMarking is the prefix put on subjects.
func (l *Label) SubjectMarking() string { return "[" + l.Marking() + "]" }

// Seal reads a message (RFC 5322, as a mail client would submit it) from
// msg and writes to w a PGP/MIME envelope (RFC 3156 section 6.2, combined
// sign-and-encrypt) whose encrypted payload holds the message with its
// protected headers (RFC 9788, hp="cipher"), the canonical handling label
// and a JSON manifest part. Outside, only the marking, an opaque package id
// and the gateways' addresses are visible.
//
// Seal streams: the message body is never held in memory whole.
func Seal(ctx context.Context, w io.Writer, msg io.Reader, p SealParams) (*Sealed, error) {
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	if p.Signer == nil {
		return nil, errors.New("seal: no signing identity")
	}
	if len(p.Recipients) == 0 {
		return nil, errors.New("seal: no recipients")
	}
	profile := p.Profile
	if profile == "" {
		profile = keys.ProfileOf(p.Signer.Entity)
	}
	if err := checkProfile(profile, p.Signer.Entity, p.Signer.Agency); err != nil {
		return nil, err
	}
	to := make([]*openpgp.Entity, len(p.Recipients))
	for i, c := range p.Recipients {
		if err := checkProfile(profile, c.Entity, c.Agency); err != nil {
			return nil, err
		}
		to[i] = c.Entity
	}
	label := p.Label
	if label.Created.IsZero() {
		label.Created = now().UTC().Truncate(time.Second)
	}
	if err := label.Validate(); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	if label.Originator != p.Signer.Agency {
		return nil, fmt.Errorf("seal: label originator %q is not the signing agency %q", label.Originator, p.Signer.Agency)
	}
	man := p.Manifest
	if man == nil {
		man = &Manifest{From: p.Signer.Agency}
		for _, c := range p.Recipients {
			// A certificate no agency was given for (an ordinary user ID)
			// adds no addressee: the pin, not the key, names agencies.
			if c.Agency != "" {
				man.To = append(man.To, c.Agency)
			}
		}
	} else {
		cp := *man
		man = &cp
	}
	man.Label = label
	manJSON, err := json.Marshal(man)
	if err != nil {
		return nil, fmt.Errorf("seal: manifest: %w", err)
	}

	pkgID := p.PackageID
	if pkgID == "" {
		pkgID = NewPackageID()
	}
	outerFrom := p.OuterFrom
	if outerFrom == "" {
		outerFrom = emailOf(p.Signer.Entity)
	}
	outerTo := p.OuterTo
	if len(outerTo) == 0 {
		for _, c := range p.Recipients {
			outerTo = append(outerTo, emailOf(c.Entity))
		}
	}

	br := bufio.NewReaderSize(&ctxReader{ctx: ctx, r: msg}, 16<<10)
	orig, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, fmt.Errorf("seal: read message header: %w", err)
	}
	date := now().UTC()
	outer := []field{
		{"From", "<" + outerFrom + ">"},
		{"To", angleList(outerTo)},
		{"Date", date.Format(time.RFC1123Z)},
		{"Message-ID", "<" + pkgID + "@" + domainOf(outerFrom) + ">"},
		{"Subject", label.SubjectMarking() + " Conduit package " + pkgID},
		{SIOLabelHeader, label.SIOLabel()},
		{PackageHeader, pkgID},
	}

	// The protected header section (RFC 9788 section 2.1): every header of
	// the original message except its content headers, which move to the
	// content part, and the envelope's own fields, which we write.
	inner := []field{{"MIME-Version", "1.0"}}
	var content []string // raw content header lines of the original
	var haveDate, haveMsgID, haveSubject bool
	msgID := ""
	for f := orig.Fields(); f.Next(); {
		key := f.Key()
		lk := strings.ToLower(key)
		raw, err := f.Raw()
		if err != nil {
			return nil, fmt.Errorf("seal: message header %s: %w", key, err)
		}
		switch {
		case strings.HasPrefix(lk, "content-"):
			content = append(content, crlf(string(raw)))
			continue
		case lk == "mime-version" || lk == strings.ToLower(LabelHeader) || lk == strings.ToLower(PackageHeader) ||
			lk == strings.ToLower(HPOuterHeader) || lk == strings.ToLower(SIOLabelHeader) || lk == "bcc":
			// Written by us, or never sent on (Bcc).
			continue
		case lk == "subject":
			haveSubject = true
			// The marking once: a marking the sender wrote is replaced
			// by the label's, never doubled.
			v := label.SubjectMarking() + " " + StripSubjectMarking(f.Value())
			inner = append(inner, field{"Subject", v})
			continue
		case lk == "date":
			haveDate = true
		case lk == "message-id":
			haveMsgID = true
			msgID = strings.TrimSpace(f.Value())
		}
		inner = append(inner, rawField(crlf(string(raw))))
	}
	if !haveSubject {
		inner = append(inner, field{"Subject", label.SubjectMarking()})
	}
	if !haveDate {
		inner = append(inner, field{"Date", date.Format(time.RFC1123Z)})
	}
	if !haveMsgID {
		msgID = "<" + NewPackageID() + "@" + domainOf(outerFrom) + ">"
		inner = append(inner, field{"Message-ID", msgID})
	}
	inner = append(inner, field{LabelHeader, label.Canonical()}, field{PackageHeader, pkgID})
	for _, o := range outer {
		inner = append(inner, field{HPOuterHeader, o.k + ": " + o.v})
	}
	if len(content) == 0 {
		content = []string{"Content-Type: text/plain; charset=us-ascii\r\n"}
	}
	innerBoundary := "conduit-" + NewPackageID()
	inner = append(inner, field{"Content-Type", `multipart/mixed; boundary="` + innerBoundary + `"; hp="cipher"`})

	outerBoundary := "conduit-" + NewPackageID()
	bw := writers.get(w)
	defer writers.put(bw)
	for _, f := range append(outer,
		field{"MIME-Version", "1.0"},
		field{"Content-Type", `multipart/encrypted; protocol="application/pgp-encrypted"; boundary="` + outerBoundary + `"`},
	) {
		writeField(bw, f)
	}
	// RFC 3156 section 4: the first part is the version identification,
	// the second the OpenPGP message.
	fmt.Fprintf(bw, "\r\nThis is an OpenPGP/MIME encrypted message (RFC 3156).\r\n"+
		"--%s\r\nContent-Type: application/pgp-encrypted\r\nContent-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n"+
		"--%s\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\nContent-Description: OpenPGP encrypted message\r\n"+
		"Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n", outerBoundary, outerBoundary)

	// The CRC24 line stays, although RFC 9580 section 6.1 says not to emit
	// it: GnuPG 2.2 decodes CRLF armor without it wrongly and reports a bad
	// MDC (found by TestConduitSealedOpensWithGnuPG). The armor package
	// computes it with tables; go-crypto's bit-at-a-time CRC was the
	// largest cost of sealing a large package.
	aw, err := armor.EncodeCRLF(bw, "PGP MESSAGE", nil)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	cfg := profile.Config()
	cfg.Time = now
	pw, err := encryptSigned(aw, to, p.Signer.Entity, cfg)
	if err != nil {
		return nil, fmt.Errorf("seal: encrypt: %w", err)
	}
	// The signed payload is canonical MIME with CRLF line endings (RFC
	// 3156 section 5), so that any receiver's verification sees the same
	// bytes. The buffer sits between the line-ending fixer and the cipher:
	// OpenPGP's partial-length packets are costly per write.
	ib := writers.get(pw)
	defer writers.put(ib)
	cw := &crlfWriter{w: ib}
	var hb strings.Builder
	for _, f := range inner {
		writeField(&hb, f)
	}
	if p.Plain {
		fmt.Fprintf(&hb, "\r\n--%s\r\n", innerBoundary)
	} else {
		fmt.Fprintf(&hb, "\r\n--%s\r\nContent-Type: %s; charset=utf-8\r\nContent-Disposition: attachment; filename=\"conduit-manifest.json\"\r\n\r\n%s\r\n--%s\r\n",
			innerBoundary, ManifestType, manJSON, innerBoundary)
	}
	for _, c := range content {
		hb.WriteString(c)
	}
	hb.WriteString("\r\n")
	io.WriteString(cw, hb.String())
	if _, err := io.Copy(cw, br); err != nil {
		return nil, fmt.Errorf("seal: message body: %w", err)
	}
	fmt.Fprintf(cw, "\r\n--%s--\r\n", innerBoundary)
	if err := ib.Flush(); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	if err := pw.Close(); err != nil {
		return nil, fmt.Errorf("seal: encrypt: %w", err)
	}
	if err := aw.Close(); err != nil {
		return nil, fmt.Errorf("seal: armor: %w", err)
	}
	fmt.Fprintf(bw, "\r\n\r\n--%s--\r\n", outerBoundary)
	if err := bw.Flush(); err != nil {
		return nil, fmt.Errorf("seal: write: %w", err)
	}
	return &Sealed{PackageID: pkgID, MessageID: msgID}, nil
}

func checkProfile(p keys.Profile, e *openpgp.Entity, agency string) error {
	if got := keys.ProfileOf(e); got != p {
		return fmt.Errorf("seal: %w: the key of %s is %s (v%d), the profile is %s", ErrProfileMismatch, agency, got, e.PrimaryKey.Version, p)
	}
	return nil
}

type field struct{ k, v string }

// rawField is a header line as received, kept byte for byte.
func rawField(raw string) field { return field{v: raw} }

// writeField writes a header field, folding at "; " or spaces so that no
// line exceeds 78 characters where that is possible (RFC 5322 2.1.1).
func writeField(w io.StringWriter, f field) {
	if f.k == "" {
		w.WriteString(f.v)
		return
	}
	w.WriteString(f.k)
	w.WriteString(":")
	col := len(f.k) + 1
	for _, word := range strings.Split(f.v, " ") {
		if col+1+len(word) > 78 && col > len(f.k)+1 {
			w.WriteString("\r\n")
			col = 0
		}
		w.WriteString(" ")
		w.WriteString(word)
		col += 1 + len(word)
	}
	w.WriteString("\r\n")
}

func crlf(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\n", "\r\n")
}

func emailOf(e *openpgp.Entity) string {
	for _, id := range e.Identities {
		if id.UserId != nil && id.UserId.Email != "" {
			return id.UserId.Email
		}
	}
	return "gateway@conduit.invalid"
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 && i < len(addr)-1 {
		return addr[i+1:]
	}
	return "conduit.invalid"
}

func angleList(addrs []string) string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		if _, err := mail.ParseAddress(a); err == nil && !strings.Contains(a, "<") {
			a = "<" + a + ">"
		}
		out[i] = a
	}
	return strings.Join(out, ", ")
}

// bufPool pools buffered readers or writers: one is reset to what it
// reads or writes when taken, and to nil when given back, so that a
// pooled buffer holds on to nothing.
type bufPool[B interface{ Reset(T) }, T any] struct{ p sync.Pool }

func (p *bufPool[B, T]) get(t T) B {
	b := p.p.Get().(B)
	b.Reset(t)
	return b
}

func (p *bufPool[B, T]) put(b B) {
	var none T
	b.Reset(none)
	p.p.Put(b)
}

// Seal's buffers are large enough to keep cipher and armor writes big,
// and pooled so that sealing a 4 KiB package does not zero 128 KiB.
var writers = bufPool[*bufio.Writer, io.Writer]{sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 64<<10) }}}

// Open's read buffers: 16 KiB, so that a large package is read in large
// pieces, and pooled, so that opening a small one does not zero them.
var readers = bufPool[*bufio.Reader, io.Reader]{sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}}

// crlfWriter turns bare LF into CRLF, leaving CRLF alone, across writes.
// It finds line ends with bytes.IndexByte and writes runs of bytes, not a
// byte at a time: the whole payload passes through it.
type crlfWriter struct {
	w      io.Writer
	prevCR bool
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	start := 0 // the first byte not yet written
	for i := 0; ; i++ {
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		if i == 0 && c.prevCR || i > 0 && p[i-1] == '\r' {
			continue
		}
		// A bare LF: the run before it, a CR, and the LF starts the
		// next run.
		if _, err := c.w.Write(p[start:i]); err != nil {
			return 0, err
		}
		if err := c.writeCR(); err != nil {
			return 0, err
		}
		start = i
	}
	if _, err := c.w.Write(p[start:]); err != nil {
		return 0, err
	}
	if len(p) > 0 {
		c.prevCR = p[len(p)-1] == '\r'
	}
	return len(p), nil
}

func (c *crlfWriter) writeCR() error {
	if bw, ok := c.w.(io.ByteWriter); ok {
		return bw.WriteByte('\r')
	}
	_, err := c.w.Write([]byte{'\r'})
	return err
}

// ctxReader stops a long copy when the context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// StripSubjectMarking removes the markings a sender or a mail client put at
// the start of a subject ("[OFFICIAL-SENSITIVE]", "[OFFICIAL SENSITIVE
// PERSONAL]", "OFFICIAL-SENSITIVE:", "[RESTRICTED]", in any case), so that
// the label's marking appears once. Anything else is left as it is.
func StripSubjectMarking(subject string) string {
	v := strings.TrimSpace(subject)
	for {
		var inner, rest string
		switch {
		case strings.HasPrefix(v, "["):
			end := strings.IndexByte(v, ']')
			if end < 0 {
				return v
			}
			inner, rest = v[1:end], v[end+1:]
		default:
			i := strings.IndexByte(v, ':')
			if i < 0 {
				return v
			}
			inner, rest = v[:i], v[i+1:]
		}
		if !isMarking(inner) {
			return v
		}
		v = strings.TrimSpace(rest)
	}
}

// isMarking reports whether s reads as a protective marking: a
// classification or legacy marking, then any descriptor or caveat.
func isMarking(s string) bool {
	u := strings.ToUpper(strings.Join(strings.Fields(s), " "))
	if u == "" {
		return false
	}
	heads := []string{"OFFICIAL-SENSITIVE", "OFFICIAL SENSITIVE", "OFFICIAL", "SECRET", "TOP SECRET",
		"NOT PROTECTIVELY MARKED", "PROTECT", "RESTRICTED", "CONFIDENTIAL"}
	for _, h := range heads {
		if u == h || strings.HasPrefix(u, h+" ") {
			return true
		}
	}
	return false
}
