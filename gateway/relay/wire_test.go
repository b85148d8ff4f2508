package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// A refused recipient in a pipelined transaction leaves nothing delivered,
// says the refusal came before the message was handed over, and leaves the
// session in step for the next transaction, whether the message was one
// BDAT or several.
func TestWirePipelinedRefusalsKeepTheSessionInStep(t *testing.T) {
	peer, g, pool := relaySetup(t)
	ctx := context.Background()
	refuse := "gone@northgate.hmpps.example"
	peer.failRcpt = func(to string) error {
		if to == refuse {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such mailbox"}
		}
		return nil
	}
	for _, tc := range []struct {
		name  string
		rcpts []string
	}{
		{"the only recipient refused", []string{refuse}},
		{"one of two refused", []string{"intel@northgate.hmpps.example", refuse}},
	} {
		it := relayItem("refused-" + tc.name)
		it.Recipients = tc.rcpts
		_, err := g.send(ctx, pool, it, nil)
		var re *relayError
		if !errors.As(err, &re) || !re.permanent {
			t.Fatalf("%s: %v, want a permanent relay error", tc.name, err)
		}
		if !strings.Contains(err.Error(), "no such mailbox") {
			t.Errorf("%s: %v does not carry the peer's reason", tc.name, err)
		}
		peer.mu.Lock()
		got := peer.got["refused-"+tc.name]
		peer.mu.Unlock()
		if got != 0 {
			t.Errorf("%s: the message was delivered %d times, want never", tc.name, got)
		}
	}
	_, err := g.send(ctx, pool, relayItem("after"), nil)
	tcheck(t, err, "after the refusals")
	peer.deliveredOnce(t, "after")

	// On one session: refused, then accepted, then refused, then accepted.
	conn, err := net.Dial("tcp", peer.addr)
	tcheck(t, err, "dial")
	c, err := dialWire(ctx, conn, &tls.Config{RootCAs: g.clientTLS.RootCAs, Certificates: g.clientTLS.Certificates,
		ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}, "relay.example", time.Minute)
	tcheck(t, err, "STARTTLS")
	defer c.Close()
	for i, rcpts := range [][]string{{refuse}, {"intel@northgate.hmpps.example"}, {"intel@northgate.hmpps.example", refuse}, {"intel@northgate.hmpps.example"}} {
		body := fmt.Sprintf("session-%d", i)
		_, before, err := c.transaction(ctx, "conduit@northshire-pio.example", rcpts, bytesMessage([]byte(body+"\r\n")), time.Minute)
		refused := slices.Contains(rcpts, refuse)
		var se *smtp.SMTPError
		switch {
		case refused && (!errors.As(err, &se) || se.Code != 550 || !before):
			t.Errorf("%s: %v (before=%v), want the 550 before the message", body, err, before)
		case !refused && err != nil:
			t.Errorf("%s: %v", body, err)
		}
	}
	peer.deliveredOnce(t, "session-1", "session-3")

	// A message of several BDAT pieces pipelined behind a refused
	// recipient gets a reply for each piece: all are read, and the
	// session stays in step.
	big := bytes.Repeat([]byte(strings.Repeat("L", 78)+"\r\n"), 3*bdatPiece/80+7)
	var se *smtp.SMTPError
	if _, before, err := c.transaction(ctx, "conduit@northshire-pio.example", []string{refuse}, bytesMessage(big), time.Minute); !errors.As(err, &se) || se.Code != 550 || !before {
		t.Fatalf("a large message to a refused recipient: %v (before=%v), want the 550 before the message", err, before)
	}
	if _, _, err := c.transaction(ctx, "conduit@northshire-pio.example", []string{"intel@northgate.hmpps.example"}, bytesMessage([]byte("after-large\r\n")), time.Minute); err != nil {
		t.Fatalf("the next transaction on the session: %v", err)
	}
	peer.deliveredOnce(t, "after-large")
}

// scriptPeer is an SMTP server that offers only STARTTLS (no PIPELINING,
// no CHUNKING), as a minimal partner mail server may: the relay must use
// one command at a time and DATA with dot-stuffing. It records the lines
// it was sent.
type scriptPeer struct {
	addr string
	mu   sync.Mutex
	cmds []string
	data []string // each message as received, dot-stuffing undone
}

func startScriptPeer(t *testing.T) (*scriptPeer, *tls.Config) {
	t.Helper()
	ca := newTestCA(t)
	certPEM, keyPEM, err := ca.Issue("hmp-northgate", []string{"127.0.0.1"}, time.Now())
	tcheck(t, err, "certificate")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	tcheck(t, err, "key pair")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listen")
	p := &scriptPeer{addr: l.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { p.serve(c, &tls.Config{Certificates: []tls.Certificate{cert}}) })
		}
	})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return p, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

func (p *scriptPeer) serve(c net.Conn, tc *tls.Config) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	say := func(s string) { w.WriteString(s + "\r\n"); w.Flush() }
	say("220 script.example ESMTP")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		// Nothing may follow a command before its reply: the client
		// must not pipeline with a peer that did not offer it.
		if r.Buffered() > 0 {
			say("554 5.5.0 pipelining not offered")
			return
		}
		p.mu.Lock()
		p.cmds = append(p.cmds, line)
		p.mu.Unlock()
		verb := strings.ToUpper(strings.Fields(line + " x")[0])
		switch verb {
		case "EHLO":
			if _, ok := c.(*tls.Conn); ok {
				say("250-script.example\r\n250 8BITMIME")
			} else {
				say("250-script.example\r\n250 STARTTLS")
			}
		case "STARTTLS":
			say("220 2.0.0 go ahead")
			tcn := tls.Server(c, tc)
			if err := tcn.Handshake(); err != nil {
				return
			}
			c = tcn
			r, w = bufio.NewReader(c), bufio.NewWriter(c)
		case "MAIL", "RCPT", "RSET":
			say("250 2.1.0 ok")
		case "DATA":
			say("354 go ahead")
			var msg strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				msg.WriteString(strings.TrimPrefix(l, "."))
			}
			p.mu.Lock()
			p.data = append(p.data, msg.String())
			p.mu.Unlock()
			say("250 2.0.0 queued as SCRIPT1")
		case "QUIT":
			say("221 bye")
			return
		default:
			say("502 5.5.1 not implemented")
		}
	}
}

func TestWireWithoutPipeliningOrChunkingSendsDataOneCommandAtATime(t *testing.T) {
	p, tc := startScriptPeer(t)
	conn, err := net.Dial("tcp", p.addr)
	tcheck(t, err, "dial")
	ctx := context.Background()
	c, err := dialWire(ctx, conn, tc, "relay.example", time.Minute)
	tcheck(t, err, "STARTTLS")
	msg := "Subject: dots\r\n\r\n.a line that starts with a dot\r\n..two\r\n.\r\nend\r\n"
	for i := 0; i < 2; i++ {
		text, before, err := c.transaction(ctx, "a@x.example", []string{"b@y.example", "c@y.example"}, bytesMessage([]byte(msg)), time.Minute)
		if err != nil || before {
			t.Fatalf("transaction %d: %v (before=%v)", i, err, before)
		}
		if text != "2.0.0 queued as SCRIPT1" {
			t.Errorf("final reply %q", text)
		}
	}
	tcheck(t, c.Quit(time.Second), "QUIT")
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.data) != 2 || p.data[0] != msg {
		t.Fatalf("the peer received %q, want %q twice", p.data, msg)
	}
	want := []string{"EHLO relay.example", "STARTTLS", "EHLO relay.example",
		"MAIL FROM:<a@x.example>", "RCPT TO:<b@y.example>", "RCPT TO:<c@y.example>", "DATA",
		"MAIL FROM:<a@x.example>", "RCPT TO:<b@y.example>", "RCPT TO:<c@y.example>", "DATA", "QUIT"}
	if strings.Join(p.cmds, "|") != strings.Join(want, "|") {
		t.Errorf("commands:\n%s\nwant:\n%s", strings.Join(p.cmds, "\n"), strings.Join(want, "\n"))
	}
}

// A peer without STARTTLS gets nothing: there is no plaintext fallback.
func TestWireRefusesAPeerWithoutSTARTTLS(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listen")
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		c.Write([]byte("220 plain.example\r\n"))
		r.ReadString('\n')
		c.Write([]byte("250-plain.example\r\n250 PIPELINING\r\n"))
		r.ReadString('\n')
	}()
	conn, err := net.Dial("tcp", l.Addr().String())
	tcheck(t, err, "dial")
	defer conn.Close()
	if _, err := dialWire(context.Background(), conn, &tls.Config{}, "relay.example", 5*time.Second); err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("dialWire = %v, want a refusal for the missing STARTTLS", err)
	}
}

func TestWireReplyParsing(t *testing.T) {
	for _, tc := range []struct {
		in       string
		want     int
		text     string
		code     int
		enhanced smtp.EnhancedCode
		bad      bool
	}{
		{in: "250 2.0.0 ok\r\n", want: 250, text: "2.0.0 ok"},
		{in: "250-a\r\n250-b\r\n250 c\r\n", want: 250, text: "a\nb\nc"},
		{in: "250\r\n", want: 250, text: ""},
		{in: "550 5.1.1 no such user\r\n", want: 250, code: 550, enhanced: smtp.EnhancedCode{5, 1, 1}, text: "no such user"},
		{in: "451 try later\r\n", want: 250, code: 451, enhanced: smtp.NoEnhancedCode, text: "try later"},
		{in: "421 4.3.2 closing\r\n", want: 250, code: 421, enhanced: smtp.EnhancedCode{4, 3, 2}, text: "closing"},
		{in: "550 4.1.1 a class that does not match\r\n", want: 250, code: 550, enhanced: smtp.NoEnhancedCode, text: "4.1.1 a class that does not match"},
		{in: "250-a\r\n251 b\r\n", want: 250, bad: true},
		{in: "2x0 ok\r\n", want: 250, bad: true},
		{in: "999 what\r\n", want: 250, bad: true},
		{in: "250", want: 250, bad: true},
		{in: "250 " + strings.Repeat("x", 3000) + "\r\n", want: 250, bad: true},
		{in: strings.Repeat("250-x\r\n", 200) + "250 x\r\n", want: 250, bad: true},
	} {
		c := &wireClient{r: bufio.NewReader(strings.NewReader(tc.in))}
		text, err := c.reply(tc.want)
		var se *smtp.SMTPError
		switch {
		case tc.bad:
			if err == nil || errors.As(err, &se) {
				t.Errorf("%q: %v, want a malformed-reply error", truncate(tc.in), err)
			}
		case tc.code != 0:
			if !errors.As(err, &se) || se.Code != tc.code || se.EnhancedCode != tc.enhanced || se.Message != tc.text {
				t.Errorf("%q: %#v, want %d %v %q", tc.in, err, tc.code, tc.enhanced, tc.text)
			}
		default:
			if err != nil || text != tc.text {
				t.Errorf("%q: %q, %v; want %q", tc.in, text, err, tc.text)
			}
		}
	}
}

// FuzzWireReply feeds a partner's replies, as any bytes, to the reply
// reader: it must end with a reply or an error, never panic, and never
// return more than it bounds.
func FuzzWireReply(f *testing.F) {
	for _, s := range []string{"250 ok\r\n", "250-a\r\n250 b\r\n", "550 5.1.1 x\r\n", "421\r\n", "2", "\r\n", "250-\r\n250 \r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c := &wireClient{r: bufio.NewReader(strings.NewReader(string(in)))}
		for i := 0; i < 10; i++ {
			text, err := c.reply(250)
			if len(text) > maxReplyLines*maxReplyLine {
				t.Fatalf("a reply of %d bytes", len(text))
			}
			var se *smtp.SMTPError
			if err != nil && !errors.As(err, &se) {
				return
			}
			if se != nil && (se.Code < 200 || se.Code > 599) {
				t.Fatalf("reply code %d", se.Code)
			}
		}
	})
}

// BenchmarkWireTransaction sends one 16 KiB envelope per operation over
// one verified TLS session to a go-smtp server, as the relay does to a
// partner gateway: with the relay's client (PIPELINING and BDAT) and, for
// comparison, with go-smtp's client (a command and its reply at a time,
// DATA), which the relay used before. The figure is the whole exchange,
// both ends on this machine.
func BenchmarkWireTransaction(b *testing.B) {
	ca := newTestCA(b)
	peer := startRelayPeer(b, ca)
	r := testRelay(b, ca, peer.addr)
	tc := &tls.Config{RootCAs: r.clientTLS.RootCAs, Certificates: r.clientTLS.Certificates, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	env := []byte(strings.Repeat(strings.Repeat("A", 76)+"\r\n", 16<<10/78))
	rcpts := []string{"intel@northgate.hmpps.example"}
	b.Run("pipelined-bdat", func(b *testing.B) {
		conn, err := net.Dial("tcp", peer.addr)
		tcheck(b, err, "dial")
		c, err := dialWire(context.Background(), conn, tc, "relay.example", time.Minute)
		tcheck(b, err, "STARTTLS")
		defer c.Close()
		b.SetBytes(int64(len(env)))
		for b.Loop() {
			if _, _, err := c.transaction(context.Background(), "conduit@northshire-pio.example", rcpts, bytesMessage(env), time.Minute); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("go-smtp-data", func(b *testing.B) {
		c, err := smtp.DialStartTLS(peer.addr, tc)
		tcheck(b, err, "STARTTLS")
		defer c.Close()
		b.SetBytes(int64(len(env)))
		for b.Loop() {
			if err := c.Mail("conduit@northshire-pio.example", nil); err != nil {
				b.Fatal(err)
			}
			if err := c.Rcpt(rcpts[0], nil); err != nil {
				b.Fatal(err)
			}
			w, err := c.Data()
			if err != nil {
				b.Fatal(err)
			}
			w.Write(env)
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
