package envelope

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"github.com/emersion/go-message/textproto"
)

// Banner is the short text a delivered package starts with, in plain
// words, because mail clients hide the headers that carry the label: the
// marking, the grading and the handling code with their meanings, the
// originator, and what the reader must do with it.
func (l *Label) Banner(pkgID, signer string) string {
	g := l.Grading
	var b strings.Builder
	fmt.Fprintf(&b, "==== %s | intelligence package %s ====\r\n", l.Marking(), pkgID)
	fmt.Fprintf(&b, "From %s, reference %s; signed by %s and verified by this agency's Conduit gateway.\r\n", l.Originator, l.Reference, signer)
	fmt.Fprintf(&b, "Grading %s: source %s (%s); intelligence %s (%s).\r\n",
		g.Scheme, g.Source, g.Scheme.Meaning("source", g.Source), g.Intelligence, g.Scheme.Meaning("intelligence", g.Intelligence))
	fmt.Fprintf(&b, "Handling %s: %s.\r\n", g.Handling, g.Scheme.Meaning("handling", g.Handling))
	basis := "a statement of fact"
	if l.Basis == BasisAssessment {
		basis = "an assessment, not established fact"
	}
	fmt.Fprintf(&b, "It is %s; purpose: %s.\r\n", basis, l.Purpose)
	fmt.Fprintf(&b, "What to do: %s\r\n", l.instruction())
	b.WriteString("====\r\n")
	return b.String()
}

// instruction says what the handling code and the marking ask of the
// reader.
func (l *Label) instruction() string {
	keep := "handle it as " + l.Marking() + " and keep it in the agency's secure systems; do not forward it by ordinary mail"
	g := l.Grading
	var onward string
	switch {
	case g.Scheme == Scheme5x5x5 && g.Handling == "1":
		onward = "it may be passed to law enforcement and prosecuting agencies, through Conduit, with the originator's consent where the agreements require it"
	case g.Scheme == Scheme5x5x5 && g.Handling == "2":
		onward = "it may go to UK non-prosecuting parties only under authorisation " + l.Authorisation + ", recorded"
	case g.Scheme == Scheme5x5x5 && g.Handling == "3":
		onward = "it may not be passed on from here: ask the originator"
	case g.Scheme == Scheme5x5x5 && g.Handling == "4":
		onward = "it stays within the originating agency: pass it to nobody"
	case g.Scheme == Scheme5x5x5 && g.Handling == "5":
		onward = "pass it to nobody; refer any request to the originator, " + l.Originator
	case g.Scheme == Scheme3x5x2 && g.Handling == "C":
		onward = "share it only under these conditions: " + l.Conditions
	default:
		onward = "share it only lawfully, through Conduit"
	}
	return keep + "; " + onward + "."
}

// WithBanner returns an opened message with a banner as its first part:
// the message's own header stays at the top, its content (whatever its
// type and encoding) becomes the second part of a multipart/mixed, and
// the banner, a text/plain part shown inline, the first. Mail clients show
// the banner above the package.
func WithBanner(msg []byte, banner string) ([]byte, error) {
	br := bufio.NewReader(bytes.NewReader(msg))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, fmt.Errorf("banner: read header: %w", err)
	}
	body, err := io.ReadAll(br)
	if err != nil {
		return nil, fmt.Errorf("banner: %w", err)
	}
	var top, content bytes.Buffer
	for f := h.Fields(); f.Next(); {
		raw, err := f.Raw()
		if err != nil {
			return nil, fmt.Errorf("banner: header %s: %w", f.Key(), err)
		}
		lk := strings.ToLower(f.Key())
		switch {
		case strings.HasPrefix(lk, "content-"):
			content.Write(raw)
		case lk == "mime-version":
		default:
			top.Write(raw)
		}
	}
	rb := make([]byte, 12)
	if _, err := rand.Read(rb); err != nil {
		return nil, err
	}
	boundary := "conduit-banner-" + hex.EncodeToString(rb)
	var out bytes.Buffer
	out.Write(top.Bytes())
	fmt.Fprintf(&out, "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n", boundary)
	fmt.Fprintf(&out, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\nContent-Disposition: inline\r\n\r\n", boundary)
	out.WriteString(banner)
	fmt.Fprintf(&out, "\r\n--%s\r\n", boundary)
	out.Write(content.Bytes())
	out.WriteString("\r\n")
	out.Write(body)
	// The CRLF before a delimiter belongs to the delimiter (RFC 2046
	// section 5.1.1), so the body keeps its own last line ending.
	fmt.Fprintf(&out, "\r\n--%s--\r\n", boundary)
	return out.Bytes(), nil
}
