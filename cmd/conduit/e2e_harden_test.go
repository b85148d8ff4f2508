package main

// End-to-end tests of the defences against hostile clients and careless
// partners: each starts real gateway processes and attacks them over
// real sockets with real TLS, as an outsider, a careless partner or a
// malicious member of staff would.

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/testbed"
)

// TestRelayRefusesAnotherAgencysCertificate: a server that answers on a
// partner's address with another partner's valid certificate (same CA,
// same IP address in its names) receives nothing, and the package stays
// queued, not logged as sent.
func TestRelayRefusesAnotherAgencysCertificate(t *testing.T) {
	b, err := testbed.Create(t.TempDir(), conduitBin, testbed.Options{Policy: e2ePolicy(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.StopAll(); noPlaintextAtRest(t, b, e2eBody) })
	// The impostor holds hmp-eastmoor's certificate and listens where
	// hmp-northgate's gateway should be.
	em := b.Nodes["hmp-eastmoor"]
	cert, err := tls.LoadX509KeyPair(filepath.Join(em.Dir, "gw.crt"), filepath.Join(em.Dir, "gw.key"))
	if err != nil {
		t.Fatal(err)
	}
	tap := &wireTap{}
	srv := smtp.NewServer(tap)
	srv.Domain = "impostor.localhost"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	l, err := net.Listen("tcp", b.Nodes["hmp-northgate"].Inbound)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	ctx := context.Background()
	if err := b.Start(ctx, "northshire-pio"); err != nil {
		t.Fatal(err)
	}
	resp, err := b.Submit(ctx, "northshire-pio", []string{ngIntel}, e2eMessage(e2eLabel, "For the prison only",
		"Conduit-Topic: security", "Conduit-Subject: role=staff; establishment=hmp-northgate"))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	pkg := packageOf(t, resp)
	items, ok := waitQueue(t, b, "northshire-pio", pkg, 20*time.Second, func(items []store.Item) bool {
		for _, it := range items {
			if it.Destination == "hmp-northgate" && (it.LastError != "" || it.State == store.Sent) {
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("no relay attempt: %s", describeItems(items))
	}
	if msgs, _ := tap.seen(); len(msgs) > 0 {
		t.Fatalf("the impostor received %d message(s)", len(msgs))
	}
	for _, it := range items {
		if it.Destination != "hmp-northgate" {
			continue
		}
		if it.State == store.Sent {
			t.Fatalf("logged as sent to an impostor: %s", describeItems(items))
		}
		if !strings.Contains(it.LastError, "hmp-eastmoor") {
			t.Errorf("the item's last error does not name the wrong certificate: %q", it.LastError)
		}
	}
}

// TestServeDisablesCoreDumps: the running gateway's core file limit is 0
// whatever limit it was started with.
func TestServeDisablesCoreDumps(t *testing.T) {
	b := newE2EBed(t, testbed.Options{}, "northshire-pio")
	raw, err := os.ReadFile(filepath.Join(b.Nodes["northshire-pio"].Dir, "conduit.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	limits, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/limits")
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	for _, line := range strings.Split(string(limits), "\n") {
		if strings.HasPrefix(line, "Max core file size") {
			f := strings.Fields(strings.TrimPrefix(line, "Max core file size"))
			if len(f) < 2 || f[0] != "0" || f[1] != "0" {
				t.Fatalf("core file limit (soft, hard) = %v, want 0 0", f)
			}
			return
		}
	}
	t.Fatal("no core file limit in /proc/PID/limits")
}

// wire is a line-level SMTP client that never fails the test on a
// closed connection: what the gateway does to a hostile client (a 421, a
// close) is what these tests look at.
type wire struct {
	t  *testing.T
	c  net.Conn
	tp *textproto.Conn
}

// dialFrom connects to addr from a local loopback address (127.0.0.2 is
// another host than the partners' 127.0.0.1) and reads the greeting.
func dialFrom(t *testing.T, addr, local string) (*wire, int, string) {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, local, err)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	w := &wire{t: t, c: c, tp: textproto.NewConn(c)}
	t.Cleanup(func() { w.c.Close() })
	code, msg := w.reply()
	return w, code, msg
}

// reply reads one reply; 0 and the error's text when the connection
// closed or timed out.
func (w *wire) reply() (int, string) {
	code, msg, err := w.tp.ReadResponse(0)
	if err != nil && code == 0 {
		return 0, err.Error()
	}
	return code, msg
}

func (w *wire) cmd(format string, args ...any) (int, string) {
	if err := w.tp.PrintfLine(format, args...); err != nil {
		return 0, err.Error()
	}
	return w.reply()
}

func (w *wire) mustCmd(want int, format string, args ...any) string {
	w.t.Helper()
	code, msg := w.cmd(format, args...)
	if code != want {
		w.t.Fatalf("%s: %d %s, want %d", fmt.Sprintf(format, args...), code, msg, want)
	}
	return msg
}

func (w *wire) startTLS(cfg *tls.Config) {
	w.t.Helper()
	w.mustCmd(250, "EHLO hostile.example")
	w.mustCmd(220, "STARTTLS")
	tc := tls.Client(w.c, cfg)
	if err := tc.Handshake(); err != nil {
		w.t.Fatalf("TLS handshake: %v", err)
	}
	w.c, w.tp = tc, textproto.NewConn(tc)
	w.mustCmd(250, "EHLO hostile.example")
}

func (w *wire) auth(user, pass string) (int, string) {
	return w.cmd("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)))
}

func (w *wire) data(body []byte) (int, string) {
	if code, msg := w.cmd("DATA"); code != 354 {
		return code, msg
	}
	if _, err := w.c.Write(append(append([]byte{}, body...), "\r\n.\r\n"...)); err != nil {
		return 0, err.Error()
	}
	return w.reply()
}

// junk is a message that is no envelope: n bytes of text.
func junk(n int) []byte {
	var b bytes.Buffer
	b.WriteString("From: <x@evil.example>\r\nSubject: junk\r\n\r\n")
	line := strings.Repeat("J", 76) + "\r\n"
	for b.Len() < n {
		b.WriteString(line)
	}
	return b.Bytes()
}

func countInLog(t *testing.T, b *testbed.Bed, id, s string) int {
	t.Helper()
	raw, err := os.ReadFile(b.Nodes[id].Log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(raw), s)
}

// TestStrangersCannotFillTheQuarantine: anyone who can reach the inbound
// port must not be able to fill the quarantine or the alert log.
func TestStrangersCannotFillTheQuarantine(t *testing.T) {
	b := newE2EBed(t, testbed.Options{Extra: "quarantine: {per-source-hour: 2}\n"}, "hmp-northgate")
	ctx := context.Background()
	ng := b.Nodes["hmp-northgate"]
	// A stranger over STARTTLS with no client certificate: 3 MB of junk,
	// four times in one session.
	w, code, msg := dialFrom(t, ng.Inbound, "127.0.0.2")
	if code != 220 {
		t.Fatalf("greeting %d %s", code, msg)
	}
	w.startTLS(b.ClientTLS())
	for i := 0; i < 4; i++ {
		w.mustCmd(250, "MAIL FROM:<x@evil.example>")
		w.mustCmd(250, "RCPT TO:<%s>", ngIntel)
		code, msg := w.data(junk(3 << 20))
		if code != 554 || !strings.HasPrefix(msg, "5.6.0") || !strings.Contains(msg, "not kept") {
			t.Fatalf("junk %d from a stranger: %d %s; want 554 5.6.0, not kept", i, code, msg)
		}
	}
	qs, err := b.Quarantined(ctx, "hmp-northgate")
	tcheck(t, err, "quarantine")
	if len(qs) != 0 {
		t.Fatalf("a stranger's junk was kept: %d quarantined", len(qs))
	}
	// A partner's gateway (its certificate) sending junk: quarantined,
	// up to the per-source rate; then 452 4.3.1, kept by the sender.
	for i := 0; i < 3; i++ {
		_, err := b.InjectAs(ctx, "hmp-northgate", "northshire-pio", pioFrom, []string{ngIntel}, junk(64<<10))
		code, msg := smtpCode(err)
		switch {
		case i < 2 && (code != 550 || !strings.Contains(msg, "quarantined as Q")):
			t.Fatalf("partner junk %d: %v; want 550 quarantined", i, err)
		case i == 2 && code != 452:
			t.Fatalf("partner junk past the per-source rate: %v; want 452 4.3.1", err)
		}
	}
	qs, err = b.Quarantined(ctx, "hmp-northgate")
	tcheck(t, err, "quarantine")
	if len(qs) != 2 {
		t.Fatalf("%d quarantined, want the 2 within the rate", len(qs))
	}
	if n := countInLog(t, b, "hmp-northgate", "admin alert: package quarantined"); n != 1 {
		t.Errorf("%d quarantine alerts, want 1 (the rest grouped)", n)
	}
}

// attack holds connections from local against addr until the test ends:
// idle ones that never send, and slow ones that send a byte a second;
// each reconnects when the gateway drops it.
func attack(t *testing.T, addr, local string, idle, slow int) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	one := func(trickle bool) {
		for ctx.Err() == nil {
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			done := make(chan struct{})
			go func() { io.Copy(io.Discard, c); close(done) }()
			for stop := false; !stop; {
				select {
				case <-ctx.Done():
					stop = true
				case <-done:
					stop = true
				case <-time.After(time.Second):
					if trickle {
						c.Write([]byte("N"))
					}
				}
			}
			c.Close()
			time.Sleep(200 * time.Millisecond)
		}
	}
	for i := 0; i < idle; i++ {
		wg.Go(func() { one(false) })
	}
	for i := 0; i < slow; i++ {
		wg.Go(func() { one(true) })
	}
}

// TestIdleAndSlowStrangersCannotDelayAPartner: idle and slow connections
// must not shut the listeners, nor make an escape package wait.
func TestIdleAndSlowStrangersCannotDelayAPartner(t *testing.T) {
	b := newE2EBed(t, testbed.Options{Extra: "limits: {connections: 30, partner-slots: 8, connections-per-address: 12, pre-auth-timeout: 3s, pre-auth-total: 5s}\n"},
		"hmp-northgate", "northshire-pio")
	ctx := context.Background()
	ng, pio := b.Nodes["hmp-northgate"], b.Nodes["northshire-pio"]
	// The per-address cap answers at once, with its reason.
	for i := 0; i < 12; i++ {
		if _, code, msg := dialFrom(t, ng.Inbound, "127.0.0.5"); code != 220 {
			t.Fatalf("connection %d from one address: %d %s", i, code, msg)
		}
	}
	if _, code, msg := dialFrom(t, ng.Inbound, "127.0.0.5"); code != 421 || !strings.Contains(msg, "Too many connections from your address") {
		t.Fatalf("13th connection from one address: %d %s; want 421 4.7.0", code, msg)
	}
	// An idle stranger is cut off by the pre-auth timeout, not after 5
	// minutes.
	w, _, _ := dialFrom(t, ng.Inbound, "127.0.0.6")
	if code, msg := w.reply(); code != 421 && code != 0 {
		t.Fatalf("an idle stranger: %d %s", code, msg)
	} else if strings.Contains(msg, "i/o timeout") {
		t.Fatalf("an idle stranger was still connected after 60 s: %s", msg)
	}
	// Many strangers, idle and slow, on both listeners, from several
	// addresses: more than all the slots.
	for _, local := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		attack(t, ng.Inbound, local, 12, 8)
		attack(t, pio.Submission, local, 12, 8)
	}
	time.Sleep(2 * time.Second) // the attack fills every slot strangers may hold
	// Staff still log in and submit; the partner still delivers an
	// immediate package.
	resp, err := b.Submit(ctx, "northshire-pio", []string{ngIntel}, e2eMessage(e2eLabel, "Escape plan, wing C",
		"Conduit-Risk: escape", "Conduit-Topic: security"))
	if err != nil {
		t.Fatalf("submission under attack: %v", err)
	}
	pkg := packageOf(t, resp)
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool {
		per, _ := deliveredByPackage(b, "hmp-northgate")
		return per[pkg] > 0
	}) {
		items, _ := b.Queue(ctx, "northshire-pio", store.Filter{PackageID: pkg})
		t.Fatalf("the immediate package was not delivered under attack: %s\n%s", describeItems(items), b.Tail("hmp-northgate", 10))
	}
}

// TestFailedLoginsSlowThenLockThenUnlock: password guessing is slowed,
// stopped, audited, and undone only by time or an administrator.
func TestFailedLoginsSlowThenLockThenUnlock(t *testing.T) {
	b := newE2EBed(t, testbed.Options{Extra: "auth: {penalty: 20ms, max-penalty: 100ms, account-failures: 5, address-failures: 50, session-failures: 3}\n"}, "northshire-pio")
	ctx := context.Background()
	pio := b.Nodes["northshire-pio"]
	session := func() *wire {
		w, code, msg := dialFrom(t, pio.Submission, "127.0.0.2")
		if code != 220 {
			t.Fatalf("greeting %d %s", code, msg)
		}
		w.startTLS(b.ClientTLS())
		return w
	}
	// Three failures end the session.
	w := session()
	for i := 1; i <= 3; i++ {
		code, msg := w.auth(pio.User, "wrong-"+strconv.Itoa(i))
		if code != 535 {
			t.Fatalf("wrong password %d: %d %s", i, code, msg)
		}
		if i == 3 && !strings.Contains(msg, "closing") {
			t.Fatalf("third failure: %s; want the connection closed", msg)
		}
	}
	if code, msg := w.cmd("NOOP"); code == 250 {
		t.Fatalf("the session survived three failed logins: %d %s", code, msg)
	}
	// Two more from another session: the account locks; the right
	// password is then refused too.
	w = session()
	w.auth(pio.User, "wrong-4")
	w.auth(pio.User, "wrong-5")
	w = session()
	if code, msg := w.auth(pio.User, pio.Password); code != 454 || !strings.Contains(msg, "locked") {
		t.Fatalf("right password on a locked account: %d %s; want 454 4.7.0", code, msg)
	}
	// From another address too: the lock is the account's.
	if _, err := b.Submit(ctx, "northshire-pio", []string{ngIntel}, e2eMessage(e2eLabel, "After the lock")); err == nil {
		t.Fatal("a locked account submitted")
	}
	out := mustRun(t, b.Dir, nil, nil, conduitBin, "user", "unlock", pio.User, "--reason", "the officer called the service desk", "--config", pio.Config)
	if !strings.Contains(out, "unlocked account "+pio.User) {
		t.Fatalf("unlock: %s", out)
	}
	w = session()
	if code, msg := w.auth(pio.User, pio.Password); code != 235 {
		t.Fatalf("after unlock: %d %s", code, msg)
	}
	// Every failure is in the audit trail; none names an unknown account.
	w = session()
	w.auth("no-such-user", "guess")
	audit := mustRun(t, b.Dir, nil, nil, conduitBin, "audit", "query", "--kind", "auth-failed", "--config", pio.Config)
	if n := strings.Count(audit, "auth-failed"); n < 6 {
		t.Errorf("%d auth-failed events, want 6:\n%s", n, audit)
	}
	if strings.Contains(audit, "no-such-user") || !strings.Contains(audit, "an unknown account") {
		t.Errorf("the audit trail names what an unknown user typed:\n%s", audit)
	}
	for _, kind := range []string{"auth-locked", "auth-unlocked"} {
		if !strings.Contains(mustRun(t, b.Dir, nil, nil, conduitBin, "audit", "query", "--kind", kind, "--config", pio.Config), kind) {
			t.Errorf("no %s event", kind)
		}
	}
}

// submitRaw submits msg as the bed's account of id over a raw session
// and returns the final reply (of RCPT when a RCPT is refused).
func submitRaw(t *testing.T, b *testbed.Bed, id string, rcpts []string, msg []byte) (int, string) {
	t.Helper()
	n := b.Nodes[id]
	w, code, text := dialFrom(t, n.Submission, "")
	if code != 220 {
		t.Fatalf("greeting %d %s", code, text)
	}
	w.startTLS(b.ClientTLS())
	if code, text := w.auth(n.User, n.Password); code != 235 {
		t.Fatalf("AUTH: %d %s", code, text)
	}
	w.mustCmd(250, "MAIL FROM:<%s>", n.Address)
	for _, r := range rcpts {
		if code, text := w.cmd("RCPT TO:<%s>", r); code != 250 {
			return code, text
		}
	}
	return w.data(msg)
}

// message builds a submission with the given header lines before the
// e2e label and body.
func message(from string, extra []string, body string) []byte {
	var b strings.Builder
	if from != "" {
		fmt.Fprintf(&b, "From: %s\r\n", from)
	}
	fmt.Fprintf(&b, "To: <%s>\r\nSubject: Wing C\r\nMessage-ID: <%d@northshire-pio.example>\r\nHandling-Label: %s\r\n", ngIntel, time.Now().UnixNano(), e2eLabel)
	for _, e := range extra {
		b.WriteString(e + "\r\n")
	}
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n")
	return []byte(b.String())
}

// TestSubmissionIsCheckedAsThePartnerWillCheckIt: what a member of
// staff submits is checked as the receiver will check it, and refused
// with a permanent code naming what is wrong.
func TestSubmissionIsCheckedAsThePartnerWillCheckIt(t *testing.T) {
	const limit = 2 << 20 // every gateway's, and the directory's, inbound limit
	b := newE2EBed(t, testbed.Options{
		Extra: fmt.Sprintf("limits: {message-bytes: %d}\n", limit),
		Directory: func(_ *testbed.Bed, d *config.Directory) {
			for _, a := range d.Agencies {
				a.MessageBytes = limit
			}
		},
	}, "hmp-northgate", "northshire-pio")
	ctx := context.Background()
	own := "\"D Patel\" <pio@northshire-pio.example>"
	delivered := func(t *testing.T, pkg string) string {
		t.Helper()
		if !testbed.WaitFor(ctx, 30*time.Second, func() bool { per, _ := deliveredByPackage(b, "hmp-northgate"); return per[pkg] > 0 }) {
			qs, _ := b.Quarantined(ctx, "hmp-northgate")
			t.Fatalf("package %s not delivered; quarantined at the prison: %+v\n%s", pkg, qs, b.Tail("hmp-northgate", 6))
		}
		for _, f := range b.Delivered("hmp-northgate", ngIntel) {
			raw, err := os.ReadFile(f)
			tcheck(t, err, "read delivered")
			if bytes.Contains(raw, []byte(pkg)) {
				return string(raw)
			}
		}
		t.Fatalf("no delivered file names %s", pkg)
		return ""
	}
	for _, tc := range []struct {
		name    string
		msg     []byte
		rcpts   []string
		code    int
		enh     string
		mention string
	}{
		{"forged From", message("\"National CCU Director\" <director@ccu-national.example>", nil, e2eBody), nil, 553, "5.7.1", "From:"},
		{"foreign Sender", message(own, []string{"Sender: director@ccu-national.example"}, e2eBody), nil, 553, "5.7.1", "Sender:"},
		{"Reply-To outside the directory", message(own, []string{"Reply-To: attacker@evil.example"}, e2eBody), nil, 553, "5.7.1", "Reply-To:"},
		{"another agency as originator", []byte(strings.Replace(string(message(own, nil, e2eBody)), "originator=northshire-pio", "originator=hmp-eastmoor", 1)), nil, 553, "5.7.1", "originator"},
		{"a 4,000-character line", message(own, nil, strings.Repeat("x", 4100)), nil, 500, "5.5.6", "line"},
		{"360 KB of header", message(own, []string{strings.TrimSuffix(strings.Repeat("X-Filler: "+strings.Repeat("f", 990)+"\r\n", 360), "\r\n")}, e2eBody), nil, 552, "5.3.4", "header section"},
		{"an attachment the partner would refuse once armored", message(own, nil, strings.Repeat(strings.Repeat("A", 76)+"\r\n", 1700<<10/78)), nil, 552, "5.3.4", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, text := submitRaw(t, b, "northshire-pio", []string{ngIntel}, tc.msg)
			if code != tc.code || !strings.HasPrefix(text, tc.enh) || !strings.Contains(text, tc.mention) {
				t.Fatalf("%d %s; want %d %s naming %q", code, text, tc.code, tc.enh, tc.mention)
			}
		})
	}
	items, err := b.Queue(ctx, "northshire-pio", store.Filter{})
	tcheck(t, err, "queue")
	if len(items) != 0 {
		t.Fatalf("refused submissions were queued: %s", describeItems(items))
	}

	t.Run("forged trust headers removed, the sender's date replaced", func(t *testing.T) {
		for _, date := range []time.Time{time.Now().Add(48 * time.Hour), time.Now().Add(-15 * 24 * time.Hour)} {
			msg := message(own, []string{
				"Reply-To: " + ngIntel,
				"Date: " + date.Format(time.RFC1123Z),
				"Conduit-Verified: signer=ccu-national; fingerprint=0000; label=valid; package=cdt-forged",
				"Conduit-Delivered-To: director@ccu-national.example",
				"Conduit-Decision: forged-rule",
				"Conduit-Topic: security",
			}, e2eBody)
			code, text := submitRaw(t, b, "northshire-pio", []string{ngIntel}, msg)
			if code != 250 {
				t.Fatalf("%d %s", code, text)
			}
			got := delivered(t, packageOf(t, text))
			hdr, _, _ := strings.Cut(got, "\r\n\r\n")
			for f, want := range map[string]int{"Conduit-Verified:": 1, "Conduit-Delivered-To:": 1, "Conduit-Decision:": 1} {
				if n := strings.Count(hdr, f); n != want {
					t.Errorf("%d %s fields in the delivered copy, want %d:\n%s", n, f, want, hdr)
				}
			}
			for _, forged := range []string{"ccu-national", "cdt-forged", "forged-rule", date.Format(time.RFC1123Z)} {
				if strings.Contains(hdr, forged) {
					t.Errorf("the delivered copy carries the forged %q", forged)
				}
			}
			if !strings.Contains(hdr, "Conduit-Verified: signer=northshire-pio") {
				t.Errorf("the genuine Conduit-Verified is missing:\n%s", hdr)
			}
		}
	})

	t.Run("the same recipient fifty-five times is one", func(t *testing.T) {
		rcpts := make([]string, 55)
		for i := range rcpts {
			rcpts[i] = ngIntel
		}
		code, text := submitRaw(t, b, "northshire-pio", rcpts, message(own, []string{"Conduit-Topic: security"}, e2eBody))
		if code != 250 {
			t.Fatalf("%d %s", code, text)
		}
		items, err := b.Queue(ctx, "northshire-pio", store.Filter{PackageID: packageOf(t, text)})
		tcheck(t, err, "queue")
		if len(items) != 1 || len(items[0].Recipients) != 1 {
			t.Fatalf("items %s", describeItems(items))
		}
	})
}

// TestReleaseAfterRefusalGivesOneTruthOnBothSides: a package refused
// (550) and later released at the receiver
// is delivered there; the originator takes its receipt as a late
// delivery, and both audit trails and the submitter say so.
func TestReleaseAfterRefusalGivesOneTruthOnBothSides(t *testing.T) {
	const wrongPin = "0000000000000000000000000000000000000000000000000000000000000000"
	b := newE2EBed(t, testbed.Options{Directory: func(_ *testbed.Bed, d *config.Directory) {
		// The prison expects northshire-pio's client certificate with a
		// key the directory pins wrongly: its deliveries are refused and
		// quarantined until the directory is corrected.
		a := d.Agency("northshire-pio")
		a.MutualTLS, a.TLSPin = true, wrongPin
	}}, "hmp-northgate", "northshire-pio")
	ctx := context.Background()
	pio, ng := b.Nodes["northshire-pio"], b.Nodes["hmp-northgate"]
	resp, err := b.Submit(ctx, "northshire-pio", []string{ngIntel}, e2eMessage(e2eLabel, "Refused, then released", "Conduit-Topic: security"))
	tcheck(t, err, "submit")
	pkg := packageOf(t, resp)
	items, ok := waitQueue(t, b, "northshire-pio", pkg, 30*time.Second, func(its []store.Item) bool {
		return len(its) == 1 && its[0].State == store.Failed
	})
	if !ok {
		t.Fatalf("the prison's refusal did not fail the item: %s\n%s", describeItems(items), b.Tail("hmp-northgate", 6))
	}
	notices := func() string {
		var all strings.Builder
		for _, f := range b.Delivered("northshire-pio", pio.Address) {
			raw, _ := os.ReadFile(f)
			all.Write(raw)
		}
		return all.String()
	}
	if !testbed.WaitFor(ctx, 10*time.Second, func() bool { return strings.Contains(notices(), "Undelivered: package "+pkg) }) {
		t.Fatal("the submitter was not told the package was undelivered")
	}
	// The administrator corrects the directory and releases the package.
	tcheck(t, b.Stop("hmp-northgate"), "stop the prison")
	dirFile := filepath.Join(b.Dir, "directory.yaml")
	raw, err := os.ReadFile(dirFile)
	tcheck(t, err, "read directory")
	fixed := strings.Replace(string(raw), wrongPin, pinOf(t, filepath.Join(pio.Dir, "gw.crt")), 1)
	tcheck(t, os.WriteFile(dirFile, []byte(fixed), 0o644), "write directory")
	tcheck(t, b.Start(ctx, "hmp-northgate"), "start the prison")
	mustRun(t, b.Dir, nil, nil, conduitBin, "quarantine", "release", "1", "--reason", "pin corrected with the PIO unit", "--config", ng.Config)

	if !testbed.WaitFor(ctx, 30*time.Second, func() bool {
		its, _ := b.Queue(ctx, "northshire-pio", store.Filter{PackageID: pkg})
		return len(its) == 1 && its[0].State == store.Sent
	}) {
		its, _ := b.Queue(ctx, "northshire-pio", store.Filter{})
		qs, _ := b.Quarantined(ctx, "northshire-pio")
		t.Fatalf("the late receipt did not make the item sent: %s; quarantined at the PIO: %+v\n%s\n%s", describeItems(its), qs, b.Tail("northshire-pio", 8), b.Tail("hmp-northgate", 8))
	}
	if per, _ := deliveredByPackage(b, "hmp-northgate"); per[pkg] == 0 {
		t.Fatal("not delivered at the prison")
	}
	if qs, _ := b.Quarantined(ctx, "northshire-pio"); len(qs) != 0 {
		t.Fatalf("the receipt was quarantined at the originator: %+v", qs)
	}
	if !testbed.WaitFor(ctx, 10*time.Second, func() bool { return strings.Contains(notices(), "Delivered after all: package "+pkg) }) {
		t.Fatal("the submitter was not told the package arrived after all")
	}
	sender := mustRun(t, b.Dir, nil, nil, conduitBin, "audit", "query", "--package", pkg, "--config", pio.Config)
	receiver := mustRun(t, b.Dir, nil, nil, conduitBin, "audit", "query", "--package", pkg, "--config", ng.Config)
	if !strings.Contains(sender, "delivered late") || !strings.Contains(sender, "released it from its quarantine") {
		t.Errorf("the originator's audit trail does not record the late delivery:\n%s", sender)
	}
	if !strings.Contains(receiver, "delivered after release from quarantine Q1") {
		t.Errorf("the receiver's audit trail does not tie the receipt to the release:\n%s", receiver)
	}
}

// forgeReceipt seals, with the prison's real key, a receipt for package
// pkg naming mailboxes, as the prison's gateway would.
func forgeReceipt(t *testing.T, b *testbed.Bed, pkg string, mailboxes []string) []byte {
	t.Helper()
	signer := bedIdentity(t, b, "hmp-northgate")
	l, err := envelope.ParseLabel(strings.Replace(e2eLabel, "originator=northshire-pio", "originator=hmp-northgate", 1) +
		`; created="` + time.Now().UTC().Format(time.RFC3339) + `"`)
	tcheck(t, err, "label")
	body := fmt.Sprintf(`{"package":%q,"agency":"hmp-northgate","mailboxes":[%q],"delivered":%q}`,
		pkg, strings.Join(mailboxes, `","`), time.Now().UTC().Format(time.RFC3339))
	msg := "From: <conduit@hmp-northgate.example>\r\nTo: <pio@northshire-pio.example>\r\nSubject: Receipt\r\n" +
		"Content-Type: application/vnd.conduit.receipt+json\r\n\r\n" + body + "\r\n"
	var buf bytes.Buffer
	_, err = envelope.Seal(context.Background(), &buf, strings.NewReader(msg), envelope.SealParams{
		Signer: signer, Recipients: []*keys.Cert{bedCert(t, b, "northshire-pio")}, Label: l, PackageID: "rcpt-" + pkg,
		Manifest: &envelope.Manifest{From: "hmp-northgate", To: []string{"northshire-pio"}, Kind: envelope.KindReceipt},
		Profile:  keys.ProfileOf(signer.Entity), Now: time.Now,
	})
	tcheck(t, err, "seal receipt")
	return buf.Bytes()
}

// TestReceiptsOnlyForPackagesSentAndTheirAgencysMailboxes: a receipt is
// taken only for an item sent, and only naming the receiver's mailboxes.
func TestReceiptsOnlyForPackagesSentAndTheirAgencysMailboxes(t *testing.T) {
	// The prison's gateway is down: the package stays queued.
	b := newE2EBed(t, testbed.Options{RetryMin: "1h", RetryMax: "1h"}, "northshire-pio")
	ctx := context.Background()
	resp, err := b.Submit(ctx, "northshire-pio", []string{ngIntel}, e2eMessage(e2eLabel, "Never sent", "Conduit-Topic: security"))
	tcheck(t, err, "submit")
	pkg := packageOf(t, resp)
	if _, ok := waitQueue(t, b, "northshire-pio", pkg, 20*time.Second, func(its []store.Item) bool {
		return len(its) == 1 && its[0].LastError != ""
	}); !ok {
		t.Fatal("no failed attempt recorded")
	}
	_, err = b.InjectAs(ctx, "northshire-pio", "hmp-northgate", "conduit@hmp-northgate.example",
		[]string{"pio@northshire-pio.example"}, forgeReceipt(t, b, pkg, []string{ngIntel}))
	if code, text := smtpCode(err); code != 451 || !strings.Contains(text, "not been sent") {
		t.Fatalf("a receipt for a package never sent: %v; want 451, deferred", err)
	}
	items, err := b.Queue(ctx, "northshire-pio", store.Filter{PackageID: pkg})
	tcheck(t, err, "queue")
	if len(items) != 1 || items[0].State != store.Queued {
		t.Fatalf("items %s", describeItems(items))
	}
	// A receipt naming a mailbox that is not the prison's.
	_, err = b.InjectAs(ctx, "northshire-pio", "hmp-northgate", "conduit@hmp-northgate.example",
		[]string{"pio@northshire-pio.example"}, forgeReceipt(t, b, pkg, []string{"director@ccu-national.example"}))
	if code, text := smtpCode(err); code != 550 || !strings.Contains(text, "not a mailbox of hmp-northgate") {
		t.Fatalf("a receipt naming another agency's mailbox: %v; want 550, quarantined", err)
	}
}
