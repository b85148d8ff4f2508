package inbound

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/examples"
	"github.com/conduit-gateway/conduit/gateway/admission"
	"github.com/conduit-gateway/conduit/gateway/delivery"
	"github.com/conduit-gateway/conduit/gateway/keyring"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/metrics"
	"github.com/conduit-gateway/conduit/pki"
	"github.com/conduit-gateway/conduit/policy"
)

// sessionRig is hmp-northgate's inbound listener, real from the TCP
// socket up (admission, go-smtp, STARTTLS, the store, delivery to a
// Maildir), with a partner's (northshire-pio's) keys and TLS identity
// to talk to it.
type sessionRig struct {
	addr      string
	partner   *tls.Config // the partner's client TLS
	stranger  *tls.Config // no client certificate
	envelopes [][]byte    // valid envelopes from the partner
	store     *store.SQLite
}

const rigMailbox = "intel@northgate.hmpps.example"

func newSessionRig(t testing.TB) *sessionRig {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	check := func(err error, what string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	d, err := config.LoadDirectory("directory.yaml", examples.Directory)
	check(err, "directory")
	ng, err := keys.Generate("hmp-northgate", "conduit@hmp-northgate.example", keys.ProfileRFC4880, time.Now().Add(-time.Hour))
	check(err, "key")
	pio, err := keys.Generate("northshire-pio", "conduit@northshire-pio.example", keys.ProfileRFC4880, time.Now().Add(-time.Hour))
	check(err, "key")
	d.Agency("hmp-northgate").Fingerprint = keys.Fingerprint(ng.Entity)
	d.Agency("northshire-pio").Fingerprint = keys.Fingerprint(pio.Entity)
	partners := filepath.Join(dir, "certs")
	check(os.MkdirAll(partners, 0o700), "certs")
	pioCert, err := pio.Public()
	check(err, "public")
	f, err := os.Create(filepath.Join(partners, "northshire-pio.pub.asc"))
	check(err, "cert file")
	check(keys.WritePublic(f, pioCert.Entity), "write cert")
	f.Close()
	keyPath := filepath.Join(dir, "ng.key")
	check((&keys.File{Path: keyPath}).Store(ctx, ng), "store key")

	cfg := &config.Config{Agency: "hmp-northgate", Directory: d}
	cfg.Keys.Partners = partners
	cfg.Keys.CheckInterval = config.Duration(time.Hour)
	cfg.SetDefaults()
	pol, err := policy.Compile(d, "hmp-northgate", "policy.yaml", examples.Policy)
	check(err, "policy")
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "store.db"))
	check(err, "store")
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	aud := audit.NewWriter(nil, cfg.Agency, time.Now, log, nil)
	deliver := delivery.New(filepath.Join(dir, "maildir"), "", "hmp-northgate.example")
	ring, err := keyring.New(ctx, cfg, &keys.File{Path: keyPath}, keyring.Options{Store: st, Audit: aud, Deliver: deliver, Log: log, Now: time.Now})
	check(err, "key ring")

	ca, err := pki.NewCA("rig CA", time.Now())
	check(err, "CA")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	pair := func(cn string) tls.Certificate {
		c, k, err := ca.Issue(cn, []string{"127.0.0.1"}, time.Now())
		check(err, "issue")
		kp, err := tls.X509KeyPair(c, k)
		check(err, "key pair")
		return kp
	}
	srvTLS := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair("hmp-northgate")},
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	srv := New(cfg, Options{Engine: policy.NewEngine(pol, log), Keys: ring, Store: st, Audit: aud, Deliver: deliver,
		Metrics: metrics.New(log), Log: log, Now: time.Now, Hostname: "ng.localhost", TLS: srvTLS})
	smtpSrv := srv.SMTP()
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	check(err, "listen")
	l := admission.Wrap(nl, admission.Config{PreAuthIdle: 5 * time.Second, PreAuthTotal: 10 * time.Second})
	go smtpSrv.Serve(l)
	t.Cleanup(func() { smtpSrv.Close(); srv.Close() })

	rig := &sessionRig{addr: nl.Addr().String(), store: st,
		partner:  &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{pair("northshire-pio")}},
		stranger: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: "127.0.0.1"}}
	ngCert, err := ng.Public()
	check(err, "public")
	label, err := envelope.ParseLabel(`v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5; source=B; intelligence=2; handling=1; basis=assessment; subjects=suspected; purpose=prison-security; sanitised=yes; originator=northshire-pio; reference=FUZZ-1; created=` + time.Now().UTC().Format(time.RFC3339))
	check(err, "label")
	for _, topic := range []string{"security", "corruption"} {
		var buf bytes.Buffer
		msg := "From: <pio@northshire-pio.example>\r\nTo: <" + rigMailbox + ">\r\nSubject: fuzz seed\r\nContent-Type: text/plain\r\n\r\nSeed " + topic + "\r\n"
		label.Created = time.Now().UTC().Truncate(time.Second)
		_, err := envelope.Seal(ctx, &buf, strings.NewReader(msg), envelope.SealParams{Signer: pio, Recipients: []*keys.Cert{ngCert}, Label: label,
			Manifest: &envelope.Manifest{From: "northshire-pio", To: []string{"hmp-northgate"}, Topic: topic}, Now: time.Now})
		check(err, "seal")
		rig.envelopes = append(rig.envelopes, buf.Bytes())
	}
	return rig
}

// replyLine is an RFC 5321 reply line; 4xx and 5xx carry an RFC 3463
// enhanced code.
var (
	replyLine = regexp.MustCompile(`^([2-5])\d\d[ -]`)
	enhanced  = regexp.MustCompile(`^[45]\d\d[ -][45]\.\d{1,3}\.\d{1,3} `)
)

// session runs one client session: banner, EHLO, STARTTLS with tc, then
// the client bytes as given; it returns every reply line after STARTTLS.
func (r *sessionRig) session(t testing.TB, tc *tls.Config, client []byte) []string {
	c, err := net.DialTimeout("tcp", r.addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	expect := func(prefix string) {
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("before the fuzzed part: %v", err)
			}
			if !strings.HasPrefix(line, prefix) {
				t.Fatalf("got %q, want %s", line, prefix)
			}
			if len(line) > 3 && line[3] == ' ' {
				return
			}
		}
	}
	expect("220")
	io.WriteString(c, "EHLO fuzz.localhost\r\n")
	expect("250")
	io.WriteString(c, "STARTTLS\r\n")
	expect("220")
	tl := tls.Client(c, tc)
	if err := tl.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		tl.Write(client)
		tl.Write([]byte("\r\nQUIT\r\n"))
		// close_notify: a session the bytes left waiting (an
		// unterminated DATA) ends at once instead of at a timeout.
		tl.CloseWrite()
	})
	var lines []string
	sc := bufio.NewScanner(tl)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	tl.Close()
	wg.Wait()
	return lines
}

func checkReplies(t *testing.T, lines []string) {
	for _, l := range lines {
		if !replyLine.MatchString(l) {
			t.Fatalf("not an SMTP reply line: %q", l)
		}
		if (l[0] == '4' || l[0] == '5') && !enhanced.MatchString(l) {
			t.Fatalf("a failure without an RFC 3463 code: %q", l)
		}
	}
}

func transaction(env []byte, rcpts ...string) []byte {
	var b bytes.Buffer
	b.WriteString("EHLO partner.localhost\r\nMAIL FROM:<conduit@northshire-pio.example>\r\n")
	for _, r := range rcpts {
		b.WriteString("RCPT TO:<" + r + ">\r\n")
	}
	b.WriteString("DATA\r\n")
	b.Write(env)
	b.WriteString("\r\n.\r\n")
	return b.Bytes()
}

// TestSessionRigDelivers: the fuzz target's rig takes a valid envelope
// over a partner's session, so mutations start from a session that
// delivers.
func TestSessionRigDelivers(t *testing.T) {
	r := newSessionRig(t)
	lines := r.session(t, r.partner, transaction(r.envelopes[0], rigMailbox))
	checkReplies(t, lines)
	if !slices250(lines, "verified and delivered") {
		t.Fatalf("replies %q", lines)
	}
}

func slices250(lines []string, s string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, "250 ") && strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// FuzzInboundSession: the inbound listener faces the network. Whatever a
// partner (with its client certificate) or a stranger (without) sends
// after STARTTLS, every reply is a well-formed SMTP reply with an enhanced
// code on failure, the server neither panics nor hangs, and a stranger's
// bytes never reach the quarantine unless they are an envelope for us.
func FuzzInboundSession(f *testing.F) {
	r := newSessionRig(f)
	for _, env := range r.envelopes {
		f.Add(transaction(env, rigMailbox), false)
		f.Add(transaction(env, rigMailbox, rigMailbox, rigMailbox), true)
		f.Add(transaction(env[:len(env)/2], rigMailbox), false)
	}
	f.Add([]byte("EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<"+rigMailbox+">\r\nDATA\r\nSubject: junk\r\n\r\njunk\r\n.\r\n"), true)
	f.Add([]byte("EHLO x\r\nAUTH PLAIN AGZvbwBiYXI=\r\nRSET\r\nBDAT 10 LAST\r\n0123456789"), false)
	f.Fuzz(func(t *testing.T, client []byte, stranger bool) {
		tc := r.partner
		if stranger {
			tc = r.stranger
		}
		before, err := r.store.ListQuarantine(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		checkReplies(t, r.session(t, tc, client))
		after, err := r.store.ListQuarantine(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		if stranger && len(after) > len(before) {
			for _, q := range after[:len(after)-len(before)] {
				if q.Check == "malformed" || q.Check == "not-encrypted" || q.Check == "not-for-us" || q.Check == "truncated" {
					t.Fatalf("a stranger's non-envelope was quarantined (%s)", q.Check)
				}
			}
		}
	})
}
