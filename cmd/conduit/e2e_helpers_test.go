package main

// Helpers of the end-to-end tests: a raw SMTP client for what go-smtp's
// client will not send (bare line endings, commands before STARTTLS),
// sealing a real envelope with a bed's keys, and reading what a gateway
// delivered.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/examples"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/testbed"
)

// rawSMTP is a line-level SMTP client: it sends exactly the bytes it is
// given, so a test can say what a careless or hostile client would.
type rawSMTP struct {
	t    *testing.T
	conn net.Conn
	tp   *textproto.Conn
}

func dialRaw(t *testing.T, addr string) *rawSMTP {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := &rawSMTP{t: t, conn: c, tp: textproto.NewConn(c)}
	t.Cleanup(func() { r.conn.Close() })
	if code, msg := r.reply(); code != 220 {
		t.Fatalf("greeting: %d %s", code, msg)
	}
	return r
}

// reply reads one (possibly multi-line) reply.
func (r *rawSMTP) reply() (int, string) {
	r.t.Helper()
	code, msg, err := r.tp.ReadResponse(0)
	if err != nil && code == 0 {
		r.t.Fatalf("read reply: %v", err)
	}
	return code, msg
}

// cmd sends one command line and returns the reply.
func (r *rawSMTP) cmd(format string, args ...any) (int, string) {
	r.t.Helper()
	if err := r.tp.PrintfLine(format, args...); err != nil {
		r.t.Fatalf("send: %v", err)
	}
	return r.reply()
}

// startTLS upgrades the connection and greets again.
func (r *rawSMTP) startTLS(cfg *tls.Config) {
	r.t.Helper()
	if code, msg := r.cmd("STARTTLS"); code != 220 {
		r.t.Fatalf("STARTTLS: %d %s", code, msg)
	}
	tc := tls.Client(r.conn, cfg)
	if err := tc.Handshake(); err != nil {
		r.t.Fatalf("TLS handshake: %v", err)
	}
	r.conn = tc
	r.tp = textproto.NewConn(tc)
	if code, msg := r.cmd("EHLO e2e.localhost"); code != 250 {
		r.t.Fatalf("EHLO after STARTTLS: %d %s", code, msg)
	}
}

func (r *rawSMTP) authPlain(user, pass string) {
	r.t.Helper()
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	if code, msg := r.cmd("AUTH PLAIN %s", ir); code != 235 {
		r.t.Fatalf("AUTH: %d %s", code, msg)
	}
}

// data sends DATA and then body exactly as given, followed by the
// terminating CRLF.CRLF, and returns the final reply.
func (r *rawSMTP) data(body []byte) (int, string) {
	r.t.Helper()
	if code, msg := r.cmd("DATA"); code != 354 {
		return code, msg
	}
	if _, err := r.conn.Write(append(append([]byte{}, body...), "\r\n.\r\n"...)); err != nil {
		r.t.Fatalf("write data: %v", err)
	}
	return r.reply()
}

// bedIdentity reads an agency's secret key from a bed.
func bedIdentity(t *testing.T, b *testbed.Bed, agency string) *keys.Identity {
	t.Helper()
	id, err := (&keys.File{Path: filepath.Join(b.Dir, agency, "keys", agency+".key")}).Identity(context.Background())
	if err != nil {
		t.Fatalf("key of %s: %v", agency, err)
	}
	return id
}

// bedCert reads an agency's public certificate from a bed.
func bedCert(t *testing.T, b *testbed.Bed, agency string) *keys.Cert {
	t.Helper()
	f, err := os.Open(filepath.Join(b.Dir, "certs", agency+".pub.asc"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := keys.ReadCert(f)
	if err != nil {
		t.Fatalf("certificate of %s: %v", agency, err)
	}
	return c
}

// sealFor seals a message from one bed agency to another with their real
// keys, as the sender's gateway would, and returns the envelope and its
// package id.
func sealFor(t *testing.T, b *testbed.Bed, from, to, label string, msg []byte) ([]byte, string) {
	t.Helper()
	signer := bedIdentity(t, b, from)
	l, err := envelope.ParseLabel(label + `; created="` + time.Now().UTC().Format(time.RFC3339) + `"`)
	if err != nil {
		t.Fatalf("label: %v", err)
	}
	var buf bytes.Buffer
	s, err := envelope.Seal(context.Background(), &buf, bytes.NewReader(msg), envelope.SealParams{
		Signer: signer, Recipients: []*keys.Cert{bedCert(t, b, to)}, Label: l,
		Profile: keys.ProfileOf(signer.Entity), Now: time.Now,
	})
	if err != nil {
		t.Fatalf("seal: %v", err)
	}
	return buf.Bytes(), s.PackageID
}

var packageIDRE = regexp.MustCompile(`cdt-[a-z0-9]+`)

// packageOf is the package id a 250 reply names.
func packageOf(t *testing.T, resp string) string {
	t.Helper()
	id := packageIDRE.FindString(resp)
	if id == "" {
		t.Fatalf("the reply names no package id: %q", resp)
	}
	return id
}

var verifiedPkgRE = regexp.MustCompile(`(?m)^Conduit-Verified:[^\r\n]*package=(cdt-[a-z0-9]+)`)

// deliveredByPackage counts a node's delivered messages per package id,
// read from the Conduit-Verified header each opened message carries, and
// per mailbox.
func deliveredByPackage(b *testbed.Bed, agency string) (perPackage map[string]int, perMailbox map[string]int) {
	perPackage, perMailbox = map[string]int{}, map[string]int{}
	for box, files := range b.AllDelivered(agency) {
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			hdr, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
			if m := verifiedPkgRE.FindSubmatch(hdr); m != nil {
				perPackage[string(m[1])]++
			} else {
				perPackage["(none)"]++
			}
			perMailbox[box]++
		}
	}
	return
}

// readDelivered returns the content of a node's delivered messages.
func readDelivered(t *testing.T, b *testbed.Bed, agency string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for box, files := range b.AllDelivered(agency) {
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out[box] = append(out[box], string(data))
		}
	}
	return out
}

// waitQueue polls a node's queue for a package until cond holds on its
// items; it returns the last items seen.
func waitQueue(t *testing.T, b *testbed.Bed, agency, pkg string, timeout time.Duration, cond func([]store.Item) bool) ([]store.Item, bool) {
	t.Helper()
	ctx := context.Background()
	var items []store.Item
	ok := testbed.WaitFor(ctx, timeout, func() bool {
		var err error
		items, err = b.Queue(ctx, agency, store.Filter{PackageID: pkg})
		if err != nil {
			t.Logf("queue of %s: %v", agency, err)
			return false
		}
		return cond(items)
	})
	return items, ok
}

func allSent(items []store.Item) bool {
	if len(items) == 0 {
		return false
	}
	for _, it := range items {
		if it.State != store.Sent {
			return false
		}
	}
	return true
}

func describeItems(items []store.Item) string {
	var b strings.Builder
	for _, it := range items {
		fmt.Fprintf(&b, "\n  #%d %s → %s: %s, %s, attempts %d, last error %q", it.ID, it.PackageID, it.Destination, it.State, it.Priority, it.Attempts, it.LastError)
	}
	return b.String()
}

// fakeSMTP is a plain SMTP server that never offers STARTTLS: a peer
// downgraded by an attacker, or a misconfigured partner. It records the
// commands it was sent.
type fakeSMTP struct {
	l     net.Listener
	mu    chanMutex
	cmds  []string
	conns int
}

type chanMutex chan struct{}

func (m chanMutex) lock()   { m <- struct{}{} }
func (m chanMutex) unlock() { <-m }

func startFakeSMTP(t *testing.T, addr string) *fakeSMTP {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("fake SMTP on %s: %v", addr, err)
	}
	f := &fakeSMTP{l: l, mu: make(chanMutex, 1)}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return f
}

func (f *fakeSMTP) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	f.mu.lock()
	f.conns++
	f.mu.unlock()
	w := bufio.NewWriter(c)
	say := func(s string) { w.WriteString(s + "\r\n"); w.Flush() }
	say("220 fake.localhost ESMTP no TLS here")
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		f.mu.lock()
		f.cmds = append(f.cmds, line)
		f.mu.unlock()
		verb := strings.ToUpper(strings.Fields(line + " x")[0])
		switch verb {
		case "EHLO":
			say("250-fake.localhost\r\n250-8BITMIME\r\n250 PIPELINING")
		case "HELO", "MAIL", "RCPT", "RSET", "NOOP":
			say("250 OK")
		case "DATA":
			say("354 go ahead")
		case "QUIT":
			say("221 bye")
			return
		default:
			say("500 unrecognised")
		}
	}
}

func (f *fakeSMTP) seen() (conns int, cmds []string) {
	f.mu.lock()
	defer f.mu.unlock()
	return f.conns, append([]string(nil), f.cmds...)
}

// newE2EBed is newBed with the check of security invariant 2 at the end of
// the test: see noPlaintextAtRest.
func newE2EBed(t *testing.T, opt testbed.Options, start ...string) *testbed.Bed {
	t.Helper()
	if opt.Policy == nil {
		opt.Policy = e2ePolicy(t)
	}
	b := newBed(t, opt, start...)
	t.Cleanup(func() { noPlaintextAtRest(t, b, e2eBody) })
	return b
}

// noPlaintextAtRest fails the test when a package's content (a canary:
// the body every e2e message carries) appears in any gateway's log or
// store (the queue holds sealed envelopes, the quarantine the bytes as
// received): only the delivered Maildir may hold it (security invariant
// 2; the store's promise of ciphertext only).
func noPlaintextAtRest(t *testing.T, b *testbed.Bed, canaries ...string) {
	t.Helper()
	for _, id := range b.IDs {
		n := b.Nodes[id]
		for _, f := range []string{n.Log, b.StorePath(id), b.StorePath(id) + "-wal"} {
			data, err := os.ReadFile(f)
			if err != nil {
				continue // this node never ran
			}
			for _, c := range canaries {
				if bytes.Contains(data, []byte(c)) {
					t.Errorf("package content in %s", f)
				}
			}
		}
	}
}

// e2ePolicy is the example policy with training records that do not age
// out: the example directory's training dates are fixed (2025-2026) and
// the example policy's 365 days would otherwise hold every package from
// January 2027 on, whatever the test is about.
func e2ePolicy(t *testing.T) []byte {
	t.Helper()
	const from, to = "valid-days: 365", "valid-days: 36500"
	if !bytes.Contains(examples.Policy, []byte(from)) {
		t.Fatalf("the example policy no longer says %q; update e2ePolicy", from)
	}
	return bytes.Replace(examples.Policy, []byte(from), []byte(to), 1)
}
