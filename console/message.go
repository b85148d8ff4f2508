package console

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"
	"time"

	"github.com/conduit-gateway/conduit/envelope"
)

// writeMessage writes a draft as the RFC 5322 message an SMTP client
// would submit: the label in Handling-Label, the routing facts in the
// Conduit-Subject, Conduit-Risk and Conduit-Topic headers, the body, and
// each attachment streamed from its encrypted spool as base64. Lines end
// in CRLF.
func writeMessage(w io.Writer, d *Draft, m *envelope.Manifest, from string, rcpts []string, ups []*upload, now time.Time, host string) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	boundary := randomBoundary()
	h := func(name, value string) { fmt.Fprintf(bw, "%s: %s\r\n", name, value) }
	h("From", "<"+from+">")
	var to []string
	for _, r := range rcpts {
		to = append(to, "<"+r+">")
	}
	h("To", strings.Join(to, ", "))
	title := strings.TrimSpace(d.Title)
	if title == "" {
		title = "Intelligence package " + m.Label.Reference
	}
	h("Subject", mime.QEncoding.Encode("utf-8", m.Label.SubjectMarking()+" "+title))
	h("Date", now.Format(time.RFC1123Z))
	h("Message-ID", "<"+randomBoundary()+"@"+host+">")
	h(envelope.LabelHeader, m.Label.Canonical())
	for _, s := range m.Subjects {
		v := "role=" + string(s.Role)
		if s.Establishment != "" {
			v += "; establishment=" + s.Establishment
		}
		if s.Region != "" {
			v += "; region=" + s.Region
		}
		if len(s.Flags) > 0 {
			v += "; flags=" + strings.Join(s.Flags, ",")
		}
		if s.Post != "" {
			v += "; post=" + s.Post
		}
		if s.ID != "" {
			v += "; id=" + s.ID
		}
		h("Conduit-Subject", v)
	}
	if len(m.Risk) > 0 {
		h("Conduit-Risk", strings.Join(m.Risk, ", "))
	}
	if m.Topic != "" {
		h("Conduit-Topic", m.Topic)
	}
	h("MIME-Version", "1.0")
	h("Content-Type", `multipart/mixed; boundary="`+boundary+`"`)
	bw.WriteString("\r\n")
	fmt.Fprintf(bw, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n", boundary)
	qp := quotedprintable.NewWriter(bw)
	body := strings.ReplaceAll(strings.ReplaceAll(d.Body, "\r\n", "\n"), "\n", "\r\n")
	if _, err := io.WriteString(qp, body); err != nil {
		return err
	}
	if err := qp.Close(); err != nil {
		return err
	}
	bw.WriteString("\r\n")
	for _, u := range ups {
		ct := u.Type
		if _, _, err := mime.ParseMediaType(ct); err != nil || ct == "" {
			ct = "application/octet-stream"
		}
		fmt.Fprintf(bw, "--%s\r\nContent-Type: %s\r\nContent-Disposition: %s\r\nContent-Transfer-Encoding: base64\r\n\r\n",
			boundary, ct, mime.FormatMediaType("attachment", map[string]string{"filename": u.Name}))
		r, err := u.spool.Reader()
		if err != nil {
			return err
		}
		if err := writeBase64Lines(bw, r); err != nil {
			return fmt.Errorf("attachment %s: %w", u.Name, err)
		}
	}
	fmt.Fprintf(bw, "--%s--\r\n", boundary)
	return bw.Flush()
}

// writeBase64Lines writes r as base64 in lines of 76 characters.
func writeBase64Lines(w io.Writer, r io.Reader) error {
	in := make([]byte, 57*1024)
	out := make([]byte, 0, 78*1024)
	for {
		n, err := io.ReadFull(r, in)
		if n > 0 {
			out = out[:0]
			for i := 0; i < n; i += 57 {
				j := min(i+57, n)
				out = base64.StdEncoding.AppendEncode(out, in[i:j])
				out = append(out, '\r', '\n')
			}
			if _, werr := w.Write(out); werr != nil {
				return werr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func randomBoundary() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "cdt-" + hex.EncodeToString(b)
}
