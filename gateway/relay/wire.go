package relay

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/gateway/store"
)

// wireClient is the relay's side of an SMTP session with a partner's
// gateway or mail server: STARTTLS required, then transactions that send
// as little back and forth as the peer allows. go-smtp's client sends one
// command and waits for its reply each time, and sends the envelope with
// DATA, which the receiving go-smtp server reads a byte at a time to undo
// the dot-stuffing. Here, when the peer offers PIPELINING (RFC 2920) and
// CHUNKING (RFC 3030), a one-recipient item is MAIL, RCPT and BDAT LAST
// with the envelope in one write, and its three replies read together:
// one round trip instead of four, and a receiver that copies the envelope
// in bulk. A peer that offers neither gets the classic exchange.
//
// Replies that refuse are *smtp.SMTPError values, as go-smtp's client
// returns them, so that classify and the callers treat both alike.
type wireClient struct {
	raw  net.Conn        // the TCP connection, for deadlines
	ctx  context.Context // of the exchange under way, if any (deadline)
	conn net.Conn        // raw, or the TLS connection over it
	tls  *tls.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	ext  map[string]string // EHLO keywords (upper case) and their parameters

	// commandTimeout bounds a command's reply; submissionTimeout the
	// reply to the end of the message, which the peer gives only once
	// the package is stored.
	commandTimeout, submissionTimeout time.Duration
}

// maxReplyLines bounds a multi-line reply: a peer cannot keep the relay
// reading for ever.
const maxReplyLines = 100

// dialWire greets the peer on conn, requires STARTTLS and completes the
// TLS handshake with tc, and greets it again over TLS. A refusal by the
// peer is an *smtp.SMTPError; anything else (no STARTTLS, the handshake)
// is a plain error.
func dialWire(ctx context.Context, conn net.Conn, tc *tls.Config, hostname string, commandTimeout time.Duration) (*wireClient, error) {
	c := &wireClient{raw: conn, commandTimeout: commandTimeout, submissionTimeout: 10 * time.Minute}
	c.setConn(conn)
	stop := c.follow(ctx)
	defer stop()
	c.deadline(time.Now().Add(commandTimeout))
	if _, err := c.reply(220); err != nil {
		return nil, err
	}
	if err := c.ehlo(hostname); err != nil {
		return nil, err
	}
	if _, ok := c.ext["STARTTLS"]; !ok {
		return nil, errors.New("the peer does not offer STARTTLS")
	}
	if _, err := c.cmd(220, "STARTTLS"); err != nil {
		return nil, err
	}
	t := tls.Client(conn, tc)
	if err := t.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	c.tls = t
	c.setConn(t)
	if err := c.ehlo(hostname); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.deadline(time.Time{})
	return c, nil
}

// follow makes ctx the context of the exchange until stop is called: its
// end sets a deadline in the past, which cuts any read or write under
// way.
func (c *wireClient) follow(ctx context.Context) (stop func()) {
	c.ctx = ctx
	after := context.AfterFunc(ctx, func() { c.raw.SetDeadline(time.Unix(1, 0)) })
	return func() { after(); c.ctx = nil }
}

// deadline sets the connection's deadline, unless the context of the
// exchange has ended: its cancellation set a deadline in the past to cut
// the exchange, and a later deadline must not undo that.
func (c *wireClient) deadline(t time.Time) {
	c.raw.SetDeadline(t)
	if c.ctx != nil && c.ctx.Err() != nil {
		c.raw.SetDeadline(time.Unix(1, 0))
	}
}

func (c *wireClient) setConn(conn net.Conn) {
	c.conn = conn
	c.r = bufio.NewReader(conn)
	c.w = bufio.NewWriterSize(conn, 32<<10)
}

// maxReplyLine bounds one reply line (RFC 5321 4.5.3.1.5 allows 512
// octets): a peer cannot make the relay buffer without end.
const maxReplyLine = 2048

// readLine reads one reply line without its CRLF.
func (c *wireClient) readLine() (string, error) {
	var b []byte
	for {
		part, err := c.r.ReadSlice('\n')
		if len(b)+len(part) > maxReplyLine {
			return "", errors.New("smtp: a reply line over 2048 octets")
		}
		b = append(b, part...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// TLSConnectionState is the session's TLS state; ok is false before
// STARTTLS.
func (c *wireClient) TLSConnectionState() (tls.ConnectionState, bool) {
	if c.tls == nil {
		return tls.ConnectionState{}, false
	}
	return c.tls.ConnectionState(), true
}

func (c *wireClient) ehlo(hostname string) error {
	msg, err := c.cmd(250, "EHLO %s", hostname)
	if err != nil {
		return err
	}
	c.ext = map[string]string{}
	lines := strings.Split(msg, "\n")
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(l), " ")
		c.ext[strings.ToUpper(k)] = v
	}
	return nil
}

// has says whether the peer offered an extension.
func (c *wireClient) has(ext string) bool {
	_, ok := c.ext[ext]
	return ok
}

// cmd sends one command and reads its reply.
func (c *wireClient) cmd(want int, format string, args ...any) (string, error) {
	if err := c.send(format, args...); err != nil {
		return "", err
	}
	if err := c.w.Flush(); err != nil {
		return "", err
	}
	return c.reply(want)
}

// send buffers one command line.
func (c *wireClient) send(format string, args ...any) error {
	line := fmt.Sprintf(format, args...)
	if strings.ContainsAny(line, "\r\n") {
		return errors.New("smtp: a command must not contain CR or LF")
	}
	c.w.WriteString(line)
	_, err := c.w.WriteString("\r\n")
	return err
}

// reply reads one reply (all its lines); a code other than want is an
// *smtp.SMTPError.
func (c *wireClient) reply(want int) (string, error) {
	var lines []string
	code := 0
	for {
		line, err := c.readLine()
		if err != nil {
			return "", err
		}
		if len(line) < 4 || (line[3] != ' ' && line[3] != '-') {
			if len(line) == 3 {
				line += " "
			} else {
				return "", fmt.Errorf("smtp: malformed reply %q", truncate(line))
			}
		}
		n, err := strconv.Atoi(line[:3])
		if err != nil || n < 200 || n > 599 {
			return "", fmt.Errorf("smtp: malformed reply %q", truncate(line))
		}
		if code != 0 && n != code {
			return "", fmt.Errorf("smtp: reply codes %d and %d in one reply", code, n)
		}
		code = n
		lines = append(lines, line[4:])
		if line[3] == ' ' {
			break
		}
		if len(lines) >= maxReplyLines {
			return "", errors.New("smtp: a reply of too many lines")
		}
	}
	msg := strings.Join(lines, "\n")
	if code != want {
		return msg, replyError(code, msg)
	}
	return msg, nil
}

// replyError is a refusal as go-smtp gives it: the code, the enhanced
// status code when the text begins with one, and the text after it.
func replyError(code int, msg string) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: code, EnhancedCode: smtp.NoEnhancedCode, Message: msg}
	if first, rest, ok := strings.Cut(msg, " "); ok {
		parts := strings.Split(first, ".")
		if len(parts) == 3 {
			var ec smtp.EnhancedCode
			good := true
			for i, p := range parts {
				v, err := strconv.Atoi(p)
				if err != nil || v < 0 || v > 999 {
					good = false
					break
				}
				ec[i] = v
			}
			if good && ec[0] == code/100 {
				e.EnhancedCode, e.Message = ec, rest
			}
		}
	}
	return e
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// message is what a transaction sends: its size, announced before it is
// read (SIZE=, BDAT), and how to read it. A transaction opens it once; a
// session that turns out dead makes the relay open it again for the next.
type message struct {
	size int64
	open func() (io.ReadCloser, error)
}

// bytesMessage is a message held in memory.
func bytesMessage(b []byte) message {
	return message{size: int64(len(b)), open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}}
}

// bodyError is a failure to read the message being sent: it could not be
// opened, or it gave other than its announced size (the store's envelope
// changed, or the store failed). It says nothing of the peer or the
// session. Once part of the message has gone, the session is cut: the
// peer, given less than BDAT announced or no end of DATA, keeps nothing.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "reading the message to send: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// exactReader reads exactly n bytes of r, then expects r to end; any other
// end, and any error of r, is a *bodyError.
type exactReader struct {
	r    io.Reader
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left == 0 {
		var one [1]byte
		for range 100 {
			n, err := e.r.Read(one[:])
			switch {
			case n > 0:
				return 0, &bodyError{errors.New("the message is longer than its announced size")}
			case err == io.EOF:
				return 0, io.EOF
			case err != nil:
				return 0, &bodyError{err}
			}
		}
		return 0, &bodyError{io.ErrNoProgress}
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	switch {
	case err == io.EOF && e.left > 0:
		return n, &bodyError{fmt.Errorf("the message ended %d bytes short of its announced size", e.left)}
	case err == io.EOF:
		// Ended exactly: the next Read confirms it.
		return n, nil
	case err != nil:
		return n, &bodyError{err}
	}
	return n, nil
}

// transaction sends one message. firstTimeout bounds the reply to MAIL
// (the probe of a cached session); before reports whether an error came
// before the peer was given the message (nothing handed over). The
// returned text is the peer's final reply. The message is opened before
// the first command and read as it is sent, never held whole.
func (c *wireClient) transaction(ctx context.Context, from string, rcpts []string, msg message, firstTimeout time.Duration) (text string, before bool, err error) {
	// A context that ends (the gateway stopping) cuts the exchange at
	// once, whatever the peer is doing.
	stop := c.follow(ctx)
	defer stop()
	if len(rcpts) == 0 {
		return "", true, errors.New("smtp: no recipients")
	}
	rc, err := msg.open()
	if err != nil {
		return "", true, &bodyError{err}
	}
	defer rc.Close()
	body := &exactReader{r: rc, left: msg.size}
	defer func() {
		var be *bodyError
		if errors.As(err, &be) {
			// Part of the message may have gone: nothing more goes over
			// this session, and the peer keeps nothing of it.
			c.Close()
		}
	}()
	pipelining, chunking := c.has("PIPELINING"), c.has("CHUNKING")
	mail := "MAIL FROM:<%s>"
	args := []any{from}
	if c.has("SIZE") {
		mail += " SIZE=%d"
		args = append(args, msg.size)
	}
	c.deadline(time.Now().Add(firstTimeout))
	if err := c.send(mail, args...); err != nil {
		return "", true, err
	}
	if !pipelining {
		if err := c.w.Flush(); err != nil {
			return "", true, err
		}
		if _, err := c.reply(250); err != nil {
			return "", true, err
		}
		c.deadline(time.Now().Add(c.commandTimeout))
		for _, rc := range rcpts {
			if _, err := c.cmd(250, "RCPT TO:<%s>", rc); err != nil {
				if isReply(err) {
					err = c.reset(err)
				}
				return "", true, err
			}
		}
		return c.body(msg.size, body, chunking, false)
	}
	for _, rc := range rcpts {
		if err := c.send("RCPT TO:<%s>", rc); err != nil {
			return "", true, err
		}
	}
	// The message goes with the commands only when a refused recipient
	// cannot leave it delivered to the others: one recipient. With more,
	// their replies are read first, and a refusal of any sends nothing.
	withBody := chunking && len(rcpts) == 1
	bdats := 0
	if withBody {
		if bdats, err = c.bdat(msg.size, body, false); err != nil {
			return "", true, err
		}
	}
	if err := c.w.Flush(); err != nil {
		return "", true, err
	}
	// Every reply is read, whatever came first, so that the session stays
	// in step; the first refusal is the outcome.
	first, err := c.replies(1, nil) // MAIL's
	if err != nil {
		return "", true, err
	}
	c.deadline(time.Now().Add(c.commandTimeout))
	if first, err = c.replies(len(rcpts), first); err != nil {
		return "", true, err
	}
	if withBody {
		// A BDAT that is not the last is answered once its chunk is in
		// (250), or refused with the transaction (after a refused RCPT).
		if first, err = c.replies(bdats-1, first); err != nil {
			return "", true, err
		}
		c.deadline(time.Now().Add(c.submissionTimeout))
		text, err := c.reply(250)
		if first != nil {
			if err != nil && !isReply(err) {
				return "", true, err // out of step: the session is dropped
			}
			return "", true, c.reset(first)
		}
		return text, false, err
	}
	if first != nil {
		return "", true, c.reset(first)
	}
	return c.body(msg.size, body, chunking, true)
}

// replies reads n replies to pipelined commands, every one, so that the
// session stays in step. refused is the first refusal among them, or
// first when that is given; err is a reply that could not be read (the
// session is out of step).
func (c *wireClient) replies(n int, first error) (refused, err error) {
	for range n {
		if _, err := c.reply(250); err != nil {
			if !isReply(err) {
				return first, err
			}
			first = cmp.Or(first, err)
		}
	}
	return first, nil
}

// reset ends a transaction that was refused after its MAIL was accepted
// (a recipient refused), so that the peer's state is clean for the next
// one; err, the refusal, is what the caller is told.
func (c *wireClient) reset(err error) error {
	if _, rerr := c.cmd(250, "RSET"); rerr != nil && !isReply(rerr) {
		c.Close() // out of step: nothing more goes over this session
	}
	return err
}

// body sends the message after accepted recipients: BDAT when the peer
// offers CHUNKING (its commands pipelined when the peer offers that too),
// else DATA with dot-stuffing.
func (c *wireClient) body(size int64, msg io.Reader, chunking, pipelining bool) (string, bool, error) {
	if chunking {
		n, err := c.bdat(size, msg, !pipelining)
		if err != nil {
			return "", true, err
		}
		if err := c.w.Flush(); err != nil {
			return "", false, err
		}
		// Pipelined, every BDAT's reply is read, so that the session
		// stays in step; the first refusal is the outcome.
		var first error
		if pipelining {
			c.deadline(time.Now().Add(c.commandTimeout))
			if first, err = c.replies(n-1, nil); err != nil {
				return "", false, err
			}
		}
		c.deadline(time.Now().Add(c.submissionTimeout))
		text, err := c.reply(250)
		if first != nil && (err == nil || isReply(err)) {
			return "", false, first
		}
		return text, false, err
	}
	c.deadline(time.Now().Add(c.commandTimeout))
	if _, err := c.cmd(354, "DATA"); err != nil {
		return "", true, err
	}
	// Dot-stuffed as it streams (the writer keeps its place in the line
	// across writes). Closed, and so ended with ".", only once the whole
	// message has been read: a message that fails part way is never
	// ended, and the session is cut.
	dw := textproto.NewWriter(c.w).DotWriter()
	if _, err := io.Copy(dw, msg); err != nil {
		return "", false, err
	}
	if err := dw.Close(); err != nil { // writes ".\r\n" and flushes
		return "", false, err
	}
	c.deadline(time.Now().Add(c.submissionTimeout))
	text, err := c.reply(250)
	return text, false, err
}

// bdatPiece is the most one BDAT command carries: a larger message goes
// as several (RFC 3030 2), the last with LAST. Each piece is read whole
// before its command is written, so a message that fails to read part way
// has not sent its LAST, and the peer keeps nothing of it. One BDAT LAST
// for the whole size, streamed, would not do: go-smtp's server (a partner
// gateway's) takes a connection that ends inside the chunk as the end of
// the message and hands what it got on. The size is the store's chunk, so
// a package of up to 256 KiB is one BDAT LAST, as it always was.
const bdatPiece = store.EnvelopeChunk

// pieces are the BDAT pieces' buffers, one per transaction under way.
var pieces = sync.Pool{New: func() any { b := make([]byte, bdatPiece); return &b }}

// bdat writes the message as BDAT commands of at most bdatPiece bytes, the
// last with LAST, reading msg as it goes. inStep (no PIPELINING) reads each
// non-last command's reply before the next and leaves the last's to read;
// else every reply is left to read. It returns how many BDATs it wrote.
func (c *wireClient) bdat(size int64, msg io.Reader, inStep bool) (int, error) {
	bp := pieces.Get().(*[]byte)
	defer pieces.Put(bp)
	left, n := size, 0
	for {
		piece := (*bp)[:min(left, bdatPiece)]
		if _, err := io.ReadFull(msg, piece); err != nil {
			return n, asBody(err)
		}
		left -= int64(len(piece))
		if left > 0 {
			if err := c.send("BDAT %d", len(piece)); err != nil {
				return n, err
			}
		} else {
			// LAST says the message ends here: it must.
			if k, err := msg.Read(make([]byte, 1)); err != io.EOF {
				if k > 0 || err == nil {
					err = errors.New("the message is longer than its announced size")
				}
				return n, asBody(err)
			}
			if err := c.send("BDAT %d LAST", len(piece)); err != nil {
				return n, err
			}
		}
		if _, err := c.w.Write(piece); err != nil {
			return n, err
		}
		n++
		if left == 0 {
			return n, nil
		}
		if inStep {
			if err := c.w.Flush(); err != nil {
				return n, err
			}
			c.deadline(time.Now().Add(c.commandTimeout))
			if _, err := c.reply(250); err != nil {
				return n, err
			}
		}
	}
}

// asBody makes a failure to read the message a *bodyError.
func asBody(err error) error {
	var be *bodyError
	if err == nil || errors.As(err, &be) {
		return err
	}
	return &bodyError{err}
}

func isReply(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se)
}

// Quit ends the session politely, within timeout, and closes it.
func (c *wireClient) Quit(timeout time.Duration) error {
	c.deadline(time.Now().Add(timeout))
	_, err := c.cmd(221, "QUIT")
	if cerr := c.conn.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close closes the connection without QUIT.
func (c *wireClient) Close() error { return c.conn.Close() }
