package admission

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/pki"
)

// lineServer is a small line-oriented server on a real loopback socket
// that behaves like go-smtp towards deadlines: it renews a long read
// deadline before every line. "PROMOTE" promotes the connection,
// "STARTTLS" upgrades it; every line is answered "250 ok".
func lineServer(t *testing.T, cfg Config, tlsCfg *tls.Config) *Listener {
	t.Helper()
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Wrap(nl, cfg)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serveLines(c, tlsCfg)
		}
	}()
	return l
}

func serveLines(c net.Conn, tlsCfg *tls.Config) {
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(time.Hour))
	io.WriteString(c, "220 ready\r\n")
	br := bufio.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(time.Hour))
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		switch strings.TrimSpace(line) {
		case "PROMOTE":
			if Promote(c) {
				io.WriteString(c, "250 promoted\r\n")
			} else {
				io.WriteString(c, "550 not promoted\r\n")
			}
			continue
		case "STARTTLS":
			io.WriteString(c, "220 go ahead\r\n")
			tc := tls.Server(c, tlsCfg)
			if tc.Handshake() != nil {
				return
			}
			c, br = tc, bufio.NewReader(tc)
			continue
		}
		io.WriteString(c, "250 ok\r\n")
	}
}

type client struct {
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, l *Listener) *client {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c: c, br: bufio.NewReader(c)}
}

// line reads one reply; a connection that stays silent for 10 s fails the
// test instead of hanging it.
func (c *client) line(t *testing.T) (string, error) {
	t.Helper()
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	s, err := c.br.ReadString('\n')
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("no reply and no close within 10 s")
	}
	return s, err
}

func (c *client) cmd(t *testing.T, s string) string {
	t.Helper()
	io.WriteString(c.c, s+"\r\n")
	r, err := c.line(t)
	if err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return r
}

func banner(t *testing.T, c *client) string {
	t.Helper()
	s, err := c.line(t)
	if err != nil {
		t.Fatalf("no banner: %v", err)
	}
	return s
}

func TestPerAddressCapAnswers421AndOthersStillServed(t *testing.T) {
	l := lineServer(t, Config{Max: 50, PerAddress: 3, PreAuthIdle: time.Hour, PreAuthTotal: time.Hour}, nil)
	for i := 0; i < 3; i++ {
		if b := banner(t, dial(t, l)); !strings.HasPrefix(b, "220") {
			t.Fatalf("connection %d: %q", i, b)
		}
	}
	if b := banner(t, dial(t, l)); !strings.HasPrefix(b, "421 4.7.0 Too many connections from your address") {
		t.Fatalf("fourth connection from one address: %q", b)
	}
	if got := l.Stats().Refused[TooManyFromAddress]; got != 1 {
		t.Fatalf("refusals counted: %d", got)
	}
}

func TestPromotedConnectionsLeaveTheAddressShare(t *testing.T) {
	l := lineServer(t, Config{Max: 50, PerAddress: 2, PreAuthIdle: time.Hour, PreAuthTotal: time.Hour}, nil)
	for i := 0; i < 4; i++ {
		c := dial(t, l)
		banner(t, c)
		if r := c.cmd(t, "PROMOTE"); !strings.HasPrefix(r, "250") {
			t.Fatalf("promote %d: %q", i, r)
		}
	}
	if b := banner(t, dial(t, l)); !strings.HasPrefix(b, "220") {
		t.Fatalf("a stranger after four proven connections from the same address: %q", b)
	}
	if s := l.Stats(); s.Proven != 4 || s.Unproven != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestIdleStrangersAreEvictedForANewcomer(t *testing.T) {
	// 6 slots, 3 kept for proven clients: strangers hold at most 3.
	l := lineServer(t, Config{Max: 6, Reserved: 3, PerAddress: 100, PreAuthIdle: time.Hour, PreAuthTotal: time.Hour}, nil)
	var idle []*client
	for i := 0; i < 3; i++ {
		c := dial(t, l)
		banner(t, c)
		idle = append(idle, c)
	}
	newcomer := dial(t, l)
	if b := banner(t, newcomer); !strings.HasPrefix(b, "220") {
		t.Fatalf("newcomer: %q", b)
	}
	if _, err := idle[0].line(t); err == nil {
		t.Fatal("the oldest idle stranger was not dropped")
	}
	if r := newcomer.cmd(t, "PROMOTE"); !strings.HasPrefix(r, "250") {
		t.Fatalf("promote: %q", r)
	}
	if r := idle[1].cmd(t, "NOOP"); !strings.HasPrefix(r, "250") {
		t.Fatalf("the second stranger was dropped too: %q", r)
	}
	if got := l.Stats().Refused[Evicted]; got != 1 {
		t.Fatalf("evictions: %d", got)
	}
}

func TestProvenSlotsCannotBeTakenByStrangers(t *testing.T) {
	l := lineServer(t, Config{Max: 4, Reserved: 2, PerAddress: 100, PreAuthIdle: time.Hour, PreAuthTotal: time.Hour}, nil)
	for i := 0; i < 10; i++ { // many strangers: never more than 2 held
		banner(t, dial(t, l))
	}
	if s := l.Stats(); s.Unproven > 2 {
		t.Fatalf("strangers hold %d slots, more than Max-Reserved", s.Unproven)
	}
	for i := 0; i < 4; i++ {
		c := dial(t, l)
		banner(t, c)
		if r := c.cmd(t, "PROMOTE"); !strings.HasPrefix(r, "250") {
			t.Fatalf("partner %d: %q", i, r)
		}
	}
	if b := banner(t, dial(t, l)); !strings.HasPrefix(b, "421 4.7.0 This gateway is busy") {
		t.Fatalf("with every slot proven: %q", b)
	}
}

func TestPreAuthIdleTimeoutClosesSilentClient(t *testing.T) {
	l := lineServer(t, Config{PreAuthIdle: 100 * time.Millisecond, PreAuthTotal: time.Hour}, nil)
	c := dial(t, l)
	banner(t, c)
	// The server asked for a one-hour read deadline; the clamp cuts it.
	if _, err := c.line(t); !errors.Is(err, io.EOF) {
		t.Fatalf("a silent stranger was not cut off: %v", err)
	}
}

func TestPreAuthTotalBoundsSlowLoris(t *testing.T) {
	l := lineServer(t, Config{PreAuthIdle: time.Second, PreAuthTotal: 300 * time.Millisecond}, nil)
	c := dial(t, l)
	banner(t, c)
	// One command every 50 ms renews the server's per-command deadline,
	// but never the whole pre-auth budget.
	for i := 0; ; i++ {
		io.WriteString(c.c, "NOOP\r\n")
		if _, err := c.line(t); err != nil {
			if i == 0 {
				t.Fatal("closed before the budget was used")
			}
			return
		}
		if i > 1000 {
			t.Fatal("a trickling stranger kept its connection past the pre-auth budget")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPromotionLiftsPreAuthDeadlinesThroughTLS(t *testing.T) {
	ca, err := pki.NewCA("admission test CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue("gateway", []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	srvTLS := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	l := lineServer(t, Config{PreAuthIdle: 150 * time.Millisecond, PreAuthTotal: 150 * time.Millisecond}, srvTLS)
	c := dial(t, l)
	banner(t, c)
	if r := c.cmd(t, "STARTTLS"); !strings.HasPrefix(r, "220") {
		t.Fatal(r)
	}
	tc := tls.Client(c.c, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	tcl := &client{c: tc, br: bufio.NewReader(tc)}
	if r := tcl.cmd(t, "PROMOTE"); !strings.HasPrefix(r, "250 promoted") {
		t.Fatalf("promotion through the TLS layer: %q", r)
	}
	time.Sleep(400 * time.Millisecond) // longer than both pre-auth bounds
	if r := tcl.cmd(t, "NOOP"); !strings.HasPrefix(r, "250") {
		t.Fatalf("a proven connection was held to the pre-auth deadline: %q", r)
	}
}

func TestOfRefusesForeignConnections(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := Of(a); !errors.Is(err, ErrNotAdmitted) {
		t.Fatalf("Of(pipe) = %v", err)
	}
	if Promote(a) {
		t.Fatal("promoted a connection that was never admitted")
	}
}

func TestDropEndsTheConnectionAfterTheReply(t *testing.T) {
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Wrap(nl, Config{PreAuthIdle: time.Hour, PreAuthTotal: time.Hour})
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		io.WriteString(c, "220 ready\r\n")
		for {
			c.SetReadDeadline(time.Now().Add(time.Hour))
			if _, err := br.ReadString('\n'); err != nil {
				io.WriteString(c, "421 4.4.2 bye\r\n")
				return
			}
			if Fail(c) >= 2 {
				Drop(c)
				io.WriteString(c, "535 5.7.8 failed, closing\r\n")
				continue
			}
			io.WriteString(c, "535 5.7.8 failed\r\n")
		}
	}()
	c := dial(t, l)
	banner(t, c)
	if r := c.cmd(t, "AUTH"); !strings.HasPrefix(r, "535 5.7.8 failed\r") {
		t.Fatalf("first: %q", r)
	}
	if r := c.cmd(t, "AUTH"); !strings.HasPrefix(r, "535 5.7.8 failed, closing") {
		t.Fatalf("second: %q", r)
	}
	if r, err := c.line(t); err != nil || !strings.HasPrefix(r, "421") {
		t.Fatalf("after the drop: %q %v", r, err)
	}
	if _, err := c.line(t); !errors.Is(err, io.EOF) {
		t.Fatalf("still open: %v", err)
	}
}

func TestEvictionFallsOnTheAddressHoldingTheMost(t *testing.T) {
	// 4 slots for strangers; a flood from 127.0.0.2 holds 3, a partner
	// from 127.0.0.1 one: newcomers evict the flood's oldest, never the
	// partner's connection, however old it is.
	l := lineServer(t, Config{Max: 4, Reserved: 0, PerAddress: 100, PreAuthIdle: time.Hour, PreAuthTotal: time.Hour}, nil)
	partner := dial(t, l)
	banner(t, partner)
	from := func() *client {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
		c, err := d.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cl := &client{c: c, br: bufio.NewReader(c)}
		banner(t, cl)
		return cl
	}
	for i := 0; i < 10; i++ {
		from()
	}
	if r := partner.cmd(t, "NOOP"); !strings.HasPrefix(r, "250") {
		t.Fatalf("the partner's connection was evicted by a flood from another address: %q", r)
	}
}
