package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/examples"
	"github.com/conduit-gateway/conduit/gateway/smtpserver"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/gateway/tlsroute"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/pki"
)

func tcheck(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// relayPeer is a real SMTP server with STARTTLS on 127.0.0.1 standing in
// for a partner gateway: it counts the connections it accepts and closes,
// and records each message it accepted (its body) once per acceptance.
type relayPeer struct {
	addr string
	srv  *smtp.Server
	// failData, when set, answers DATA for a body: an error to reply
	// with, or errDrop to cut the connection instead.
	failData func(body string) error
	// settingUp counts connections between their accept and their first
	// MAIL; maxSettingUp is its peak.
	settingUp, maxSettingUp int
	used                    map[*smtp.Conn]bool
	// failRcpt, when set, answers each RCPT.
	failRcpt func(to string) error
	// failMail, when set, answers the nth MAIL of a session.
	failMail func(n int) error

	mu       sync.Mutex
	accepted int
	conns    map[net.Conn]bool // open
	closed   chan struct{}     // one value per closed connection
	got      map[string]int
	raw      [][]byte // each accepted message, byte for byte
	// clientCN is the verified client certificate's name each body came
	// with ("" without one).
	clientCN map[string]string
}

var errDrop = errors.New("drop the connection")

func startRelayPeer(t testing.TB, ca *pki.CA) *relayPeer {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue("hmp-northgate", []string{"127.0.0.1", "localhost"}, time.Now())
	tcheck(t, err, "issue peer certificate")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	tcheck(t, err, "peer key pair")
	p := &relayPeer{conns: map[net.Conn]bool{}, closed: make(chan struct{}, 1000), got: map[string]int{}, clientCN: map[string]string{}, used: map[*smtp.Conn]bool{}}
	p.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &peerSession{p: p, conn: c}, nil
	}))
	p.srv.Domain = "127.0.0.1"
	// As loadTLS sets up a gateway's inbound listener: a client
	// certificate, when given, is verified against the agencies' CA.
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	p.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: roots}
	p.srv.ReadTimeout = time.Minute
	p.srv.WriteTimeout = time.Minute
	p.srv.ErrorLog = nopSMTPLog{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listen")
	p.addr = l.Addr().String()
	go p.srv.Serve(&peerListener{Listener: l, p: p})
	t.Cleanup(func() { p.srv.Close() })
	return p
}

type nopSMTPLog struct{}

func (nopSMTPLog) Printf(string, ...any) {}
func (nopSMTPLog) Println(...any)        {}

type peerListener struct {
	net.Listener
	p *relayPeer
}

func (l *peerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.p.mu.Lock()
	l.p.accepted++
	l.p.settingUp++
	l.p.maxSettingUp = max(l.p.maxSettingUp, l.p.settingUp)
	pc := &peerConn{Conn: c, p: l.p}
	l.p.conns[pc] = true
	l.p.mu.Unlock()
	return pc, nil
}

type peerConn struct {
	net.Conn
	p    *relayPeer
	once sync.Once
}

func (c *peerConn) Close() error {
	c.once.Do(func() {
		c.p.mu.Lock()
		delete(c.p.conns, c)
		c.p.mu.Unlock()
		c.p.closed <- struct{}{}
	})
	return c.Conn.Close()
}

type peerSession struct {
	p     *relayPeer
	conn  *smtp.Conn
	mails int
}

func (s *peerSession) Mail(string, *smtp.MailOptions) error {
	if _, ok := s.conn.TLSConnectionState(); !ok {
		return smtpserver.ErrNeedTLS
	}
	s.mails++
	s.p.mu.Lock()
	if !s.p.used[s.conn] {
		// Set up: the connection is past its greeting, EHLO and
		// STARTTLS, and sends its first MAIL.
		s.p.used[s.conn] = true
		s.p.settingUp--
	}
	s.p.mu.Unlock()
	if s.p.failMail != nil {
		return s.p.failMail(s.mails)
	}
	return nil
}
func (s *peerSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.p.failRcpt != nil {
		return s.p.failRcpt(to)
	}
	return nil
}
func (s *peerSession) Reset()        {}
func (s *peerSession) Logout() error { return nil }
func (s *peerSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	body := strings.TrimSpace(string(b))
	if s.p.failData != nil {
		if err := s.p.failData(body); errors.Is(err, errDrop) {
			s.conn.Conn().Close()
			return err
		} else if err != nil {
			return err
		}
	}
	st, _ := s.conn.TLSConnectionState()
	s.p.mu.Lock()
	s.p.got[body]++
	s.p.raw = append(s.p.raw, b)
	if len(st.VerifiedChains) > 0 {
		s.p.clientCN[body] = st.VerifiedChains[0][0].Subject.CommonName
	}
	s.p.mu.Unlock()
	return nil
}

func (p *relayPeer) counts() (accepted, open int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted, len(p.conns)
}

// waitClosed waits for n more connections to close at the peer.
func (p *relayPeer) waitClosed(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-p.closed:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d connections closed at the peer", i, n)
		}
	}
}

// dropAll closes every connection from the peer's side, as a server
// ending idle sessions does.
func (p *relayPeer) dropAll() int {
	p.mu.Lock()
	var cs []net.Conn
	for c := range p.conns {
		cs = append(cs, c)
	}
	p.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
	return len(cs)
}

// deliveredOnce checks that each body was accepted exactly once.
func (p *relayPeer) deliveredOnce(t *testing.T, bodies ...string) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range bodies {
		if p.got[b] != 1 {
			t.Errorf("%s accepted %d times, want once", b, p.got[b])
		}
	}
}

// noKeys is a key ring with no partner keys in force: the relay's tests
// send prepared envelopes, whose sealing is not theirs to check.
type noKeys struct{}

func (noKeys) CheckSealedTo(_ context.Context, it store.Item) (store.Item, io.ReadCloser, bool) {
	return it, nil, true
}
func (noKeys) Partners() *keys.Partners { return nil }

// testRelay is a relay with just what send needs: the example directory
// with hmp-northgate's gateway at addr, and a client TLS identity issued
// by ca that trusts ca.
func testRelay(t testing.TB, ca *pki.CA, addr string) *Relay {
	t.Helper()
	dir, err := config.LoadDirectory("examples/directory.yaml", examples.Directory)
	tcheck(t, err, "directory")
	dir.Agency("hmp-northgate").Gateway = addr
	certPEM, keyPEM, err := ca.Issue("northshire-pio", []string{"127.0.0.1"}, time.Now())
	tcheck(t, err, "issue client certificate")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	tcheck(t, err, "client key pair")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return New(Config{Agency: "northshire-pio", Directory: dir, Hostname: "northshire-pio.example",
		ClientTLS: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, RootCAs: pool}},
		nil, noKeys{}, nil, nil, nil, slog.New(slog.DiscardHandler), time.Now)
}

func relayItem(body string) store.Item {
	return store.Item{PackageID: body, Destination: "hmp-northgate", MailFrom: "conduit@northshire-pio.example",
		Recipients: []string{"intel@northgate.hmpps.example"}, Envelope: []byte(body + "\r\n")}
}

// relaySetup is a peer, a gateway delivering to it, and a pool closed when
// the test ends.
func relaySetup(t *testing.T) (*relayPeer, *Relay, *relayPool) {
	t.Helper()
	ca := newTestCA(t)
	peer := startRelayPeer(t, ca)
	pool := newRelayPool(4, sessionIdle)
	t.Cleanup(pool.close)
	return peer, testRelay(t, ca, peer.addr), pool
}

func newTestCA(t testing.TB) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("test CA", time.Now())
	tcheck(t, err, "CA")
	return ca
}

func TestRelayReusesOneSessionPerDestination(t *testing.T) {
	ca := newTestCA(t)
	peer := startRelayPeer(t, ca)
	g := testRelay(t, ca, peer.addr)
	pool := newRelayPool(4, sessionIdle)
	ctx := context.Background()
	var bodies []string
	for i := range 10 {
		body := fmt.Sprintf("pkg-%d", i)
		bodies = append(bodies, body)
		_, err := g.send(ctx, pool, relayItem(body), nil)
		tcheck(t, err, body)
	}
	peer.deliveredOnce(t, bodies...)
	if accepted, open := peer.counts(); accepted != 1 || open != 1 {
		t.Errorf("10 items used %d connections (%d open), want 1", accepted, open)
	}

	// Concurrent workers: at most one session each.
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for w := range 4 {
		wg.Go(func() {
			for i := range 10 {
				body := fmt.Sprintf("w%d-%d", w, i)
				if _, err := g.send(ctx, pool, relayItem(body), nil); err != nil {
					errs <- fmt.Errorf("%s: %w", body, err)
				}
			}
		})
		for i := range 10 {
			bodies = append(bodies, fmt.Sprintf("w%d-%d", w, i))
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	peer.deliveredOnce(t, bodies...)
	accepted, open := peer.counts()
	if accepted > 4 {
		t.Errorf("4 workers used %d connections, want at most 4", accepted)
	}
	pool.close()
	peer.waitClosed(t, open)
	if _, open := peer.counts(); open != 0 {
		t.Errorf("%d connections open after the pool closed", open)
	}
	if n := poolGoroutines(); n != 0 {
		t.Errorf("%d goroutines of the pool left after it closed", n)
	}
}

// poolGoroutines counts the goroutines running the pool's code.
func poolGoroutines() int {
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	n := 0
	for _, g := range strings.Split(stacks, "\n\n") {
		if strings.Contains(g, "gateway.(*relayPool)") || strings.Contains(g, "gateway.(*relaySession)") {
			n++
		}
	}
	return n
}

func TestRelayReplacesSessionPeerClosedWhileIdle(t *testing.T) {
	peer, g, pool := relaySetup(t)
	ctx := context.Background()
	_, err := g.send(ctx, pool, relayItem("first"), nil)
	tcheck(t, err, "first")
	peer.waitClosed(t, peer.dropAll())
	_, err = g.send(ctx, pool, relayItem("second"), nil)
	tcheck(t, err, "second, after the peer closed the idle session")
	peer.deliveredOnce(t, "first", "second")
	if accepted, _ := peer.counts(); accepted != 2 {
		t.Errorf("%d connections, want 2 (the closed session replaced)", accepted)
	}
}

// A cached session's first command is its probe: a peer that ends it
// with 421 at MAIL (too busy, or closing) has been handed nothing, and the
// package goes over a new session at once.
func TestRelayReplacesSessionRefusedAtMail(t *testing.T) {
	peer, g, pool := relaySetup(t)
	ctx := context.Background()
	_, err := g.send(ctx, pool, relayItem("first"), nil)
	tcheck(t, err, "first")
	peer.failMail = func(n int) error {
		if n > 1 {
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "closing"}
		}
		return nil
	}
	_, err = g.send(ctx, pool, relayItem("second"), nil)
	tcheck(t, err, "second, after the reused session was refused at MAIL")
	peer.deliveredOnce(t, "first", "second")
	if accepted, _ := peer.counts(); accepted != 2 {
		t.Errorf("%d connections, want 2 (the refused session replaced)", accepted)
	}
}

// A relay whose concurrency jumps (a backlog, 32 deliveries at once, no
// session yet) sets its sessions up a few at a time: a receiving gateway
// answers 421 past its limit of unproven connections from one address.
func TestRelaySetsUpSessionsAFewAtATime(t *testing.T) {
	peer, g, _ := relaySetup(t)
	pool := newRelayPool(32, sessionIdle)
	defer pool.close()
	ctx := context.Background()
	var wg sync.WaitGroup
	var bodies []string
	for i := range 32 {
		body := fmt.Sprintf("burst-%d", i)
		bodies = append(bodies, body)
		wg.Go(func() {
			if _, err := g.send(ctx, pool, relayItem(body), nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	peer.deliveredOnce(t, bodies...)
	peer.mu.Lock()
	defer peer.mu.Unlock()
	if peer.maxSettingUp > maxDialsPerDest {
		t.Errorf("%d sessions were being set up at once, want at most %d", peer.maxSettingUp, maxDialsPerDest)
	}
}

func TestRelayClosesSessionIdleTooLong(t *testing.T) {
	ca := newTestCA(t)
	peer := startRelayPeer(t, ca)
	g := testRelay(t, ca, peer.addr)
	pool := newRelayPool(4, 50*time.Millisecond)
	defer pool.close()
	_, err := g.send(context.Background(), pool, relayItem("only"), nil)
	tcheck(t, err, "only")
	peer.waitClosed(t, 1) // by the pool's expiry, within the idle time
	peer.deliveredOnce(t, "only")
	pool.mu.Lock()
	defer pool.mu.Unlock()
	if pool.total != 0 || len(pool.idle) != 0 {
		t.Errorf("%d sessions still counted idle", pool.total)
	}
}

func TestRelayDiscardsSessionAfterFailedTransaction(t *testing.T) {
	ca := newTestCA(t)
	peer := startRelayPeer(t, ca)
	peer.failData = func(body string) error {
		switch body {
		case "temp":
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		case "perm":
			return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "refused"}
		case "cut":
			return errDrop
		}
		return nil
	}
	g := testRelay(t, ca, peer.addr)
	pool := newRelayPool(4, sessionIdle)
	defer pool.close()
	ctx := context.Background()
	tests := []struct {
		body             string
		permanent, alert bool
	}{
		{body: "temp"}, {body: "perm", permanent: true}, {body: "cut"},
	}
	conns := 0
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			_, err := g.send(ctx, pool, relayItem("ok-before-"+tt.body), nil)
			tcheck(t, err, "item before")
			_, err = g.send(ctx, pool, relayItem(tt.body), nil)
			var re *relayError
			if !errors.As(err, &re) || re.permanent != tt.permanent || re.alert != tt.alert {
				t.Fatalf("err = %#v, want permanent=%v alert=%v", err, tt.permanent, tt.alert)
			}
			peer.waitClosed(t, 1) // the failed session is closed, not kept
			_, err = g.send(ctx, pool, relayItem("ok-after-"+tt.body), nil)
			tcheck(t, err, "item after")
			conns++
			peer.deliveredOnce(t, "ok-before-"+tt.body, "ok-after-"+tt.body)
			if accepted, _ := peer.counts(); accepted != conns+1 {
				t.Errorf("%d connections, want %d: the item after the failure must use a new one", accepted, conns+1)
			}
		})
	}
}

func TestRelayVerifiesTLSOnFirstUse(t *testing.T) {
	ca := newTestCA(t)
	peer := startRelayPeer(t, newTestCA(t)) // a certificate the agencies' CA did not sign
	g := testRelay(t, ca, peer.addr)
	pool := newRelayPool(4, sessionIdle)
	defer pool.close()
	_, err := g.send(context.Background(), pool, relayItem("secret"), nil)
	var re *relayError
	if !errors.As(err, &re) || !re.alert || re.permanent {
		t.Fatalf("err = %v, want a temporary alert", err)
	}
	if len(peer.got) != 0 {
		t.Errorf("accepted %v over an unverified session", peer.got)
	}
	if pool.total != 0 {
		t.Errorf("%d sessions kept after a failed handshake", pool.total)
	}
}

// A change of the TLS settings for a destination (here its pin) or of this
// gateway's TLS configuration makes a new session; the old one is closed,
// never used again.
func TestRelaySessionNotReusedAfterSettingsChange(t *testing.T) {
	peer, g, pool := relaySetup(t)
	ctx := context.Background()
	_, err := g.send(ctx, pool, relayItem("one"), nil)
	tcheck(t, err, "one")
	pin := tlsroute.SPKIPin(peer.srv.TLSConfig.Certificates[0].Leaf)
	g.directory.Agency("hmp-northgate").TLSPin = pin
	_, err = g.send(ctx, pool, relayItem("two"), nil)
	tcheck(t, err, "two, pinned")
	peer.waitClosed(t, 1)
	g.clientTLS = g.clientTLS.Clone()
	_, err = g.send(ctx, pool, relayItem("three"), nil)
	tcheck(t, err, "three, new client TLS configuration")
	peer.waitClosed(t, 1)
	peer.deliveredOnce(t, "one", "two", "three")
	if accepted, open := peer.counts(); accepted != 3 || open != 1 {
		t.Errorf("%d connections (%d open), want 3 (1 open)", accepted, open)
	}
	// A wrong pin on the next use refuses the peer: nothing sent.
	g.directory.Agency("hmp-northgate").TLSPin = strings.Repeat("0", 64)
	_, err = g.send(ctx, pool, relayItem("four"), nil)
	var re *relayError
	if !errors.As(err, &re) || !re.alert {
		t.Fatalf("err = %v, want an alert", err)
	}
	if peer.got["four"] != 0 {
		t.Error("sent over a session to a key that is not the pinned one")
	}
}

// A new connection resumes TLS with a ticket from an earlier one, and the
// resumed connection still carries this gateway's verified client
// certificate (what a mutual-TLS route checks at the receiver).
func TestRelaySessionResumesTLS(t *testing.T) {
	peer, g, pool := relaySetup(t)
	a := g.directory.Agency("hmp-northgate")
	key := g.sessionKey(a, a.Gateway, "127.0.0.1")
	var resumed []bool
	for i := range 2 {
		s, err := g.dialRelay(context.Background(), pool, a, a.Gateway, "127.0.0.1", key)
		tcheck(t, err, "dial")
		st, _ := s.c.TLSConnectionState()
		resumed = append(resumed, st.DidResume)
		// A session ticket arrives after the handshake: one exchange reads it.
		_, err = s.transact(context.Background(), false, "conduit@northshire-pio.example", []string{"intel@northgate.hmpps.example"}, bytesMessage([]byte(fmt.Sprintf("r%d\r\n", i))))
		tcheck(t, err, "transact")
		s.close()
	}
	if resumed[0] || !resumed[1] {
		t.Errorf("resumed = %v, want a full handshake and then a resumption", resumed)
	}
	peer.mu.Lock()
	defer peer.mu.Unlock()
	for _, body := range []string{"r0", "r1"} {
		if peer.clientCN[body] != "northshire-pio" {
			t.Errorf("%s came with client certificate %q, want northshire-pio's", body, peer.clientCN[body])
		}
	}
}
