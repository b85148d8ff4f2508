package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/testbed"
)

// TestSwaksSubmissionArrivesOpenedAndVerified submits a marked message with
// the real swaks client (STARTTLS with the agencies' CA verified, AUTH
// PLAIN) to the PIO's submission port; it must arrive at the prison opened,
// verified and marked.
func TestSwaksSubmissionArrivesOpenedAndVerified(t *testing.T) {
	swaks := requireTool(t, "swaks")
	b := newE2EBed(t, testbed.Options{}, "northshire-pio", "hmp-northgate")
	n := b.Nodes["northshire-pio"]
	_, port, _ := strings.Cut(n.Submission, ":")
	const body = "Swaks test: a visitor is passing packages in the visits hall."
	t.Cleanup(func() { noPlaintextAtRest(t, b, body) })
	out := mustRun(t, "", nil, nil, swaks,
		"--server", "127.0.0.1", "--port", port, "--tls",
		"--tls-verify", "--tls-ca-path", filepath.Join(b.Dir, "ca.crt"),
		"--auth", "PLAIN", "--auth-user", n.User, "--auth-password", n.Password,
		"--from", n.Address, "--to", ngIntel, "--helo", "swaks.localhost",
		"--header", "Subject: Visits hall",
		"--header", "Handling-Label: "+e2eLabel,
		"--body", body)
	if !strings.Contains(out, "<~  250 ") || !strings.Contains(out, "queued for hmp-northgate") {
		t.Fatalf("swaks did not get the 250 for the package:\n%s", out)
	}
	var pkg string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "queued for") {
			pkg = packageOf(t, line)
		}
	}
	ctx := context.Background()
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool { return len(b.Delivered("hmp-northgate", ngIntel)) > 0 }) {
		t.Fatalf("nothing delivered to %s", ngIntel)
	}
	got := readDelivered(t, b, "hmp-northgate")[ngIntel]
	if len(got) != 1 {
		t.Fatalf("%d messages delivered; want 1", len(got))
	}
	for _, want := range []string{
		"Conduit-Verified: signer=northshire-pio", "package=" + pkg, "label=valid",
		"Subject: [OFFICIAL-SENSITIVE] Visits hall", "Handling-Label: v=1; classification=OFFICIAL-SENSITIVE",
		"X-Mailer: swaks", body,
	} {
		if !strings.Contains(got[0], want) {
			t.Errorf("the delivered message lacks %q", want)
		}
	}
}

// TestSwaksImplicitTLSSubmissionArrives submits with the real swaks over
// implicit TLS (--tlsc, port 465 style) to the PIO's submission-tls
// listener: AUTH and MAIL must be accepted (before TLS was applied on top
// of the connection limiter, go-smtp did not see the TLS connection and
// answered AUTH with 538 and MAIL with 530), and the package must arrive
// at the prison's Maildir opened and verified.
func TestSwaksImplicitTLSSubmissionArrives(t *testing.T) {
	swaks := requireTool(t, "swaks")
	const sender, receiver = "northshire-pio", "hmp-northgate"
	tlsAddr := freeLoopbackAddr(t)
	b := newE2EBed(t, testbed.Options{Directory: func(b *testbed.Bed, _ *config.Directory) {
		addListener(t, b, sender, "submission-tls", tlsAddr)
	}}, sender, receiver)
	n := b.Nodes[sender]
	ctx := context.Background()
	if !testbed.WaitFor(ctx, 10*time.Second, func() bool { return listening(tlsAddr) }) {
		t.Fatalf("the submission-tls listener %s does not accept connections:\n%s", tlsAddr, b.Tail(sender, 10))
	}
	_, port, _ := strings.Cut(tlsAddr, ":")
	const body = "Swaks implicit TLS: a visitor is passing packages in the visits hall."
	t.Cleanup(func() { noPlaintextAtRest(t, b, body) })
	r := run(t, "", nil, nil, swaks,
		"--server", "127.0.0.1", "--port", port, "--tlsc",
		"--tls-verify", "--tls-ca-path", filepath.Join(b.Dir, "ca.crt"),
		"--auth", "PLAIN", "--auth-user", n.User, "--auth-password", n.Password,
		"--from", n.Address, "--to", ngIntel, "--helo", "swaks.localhost",
		"--header", "Subject: Visits hall over implicit TLS",
		"--header", "Handling-Label: "+e2eLabel,
		"--body", body)
	out := r.stdout + r.stderr
	for _, want := range []string{"<~  235 ", "<~  250 2.0.0", "queued for hmp-northgate"} {
		if !strings.Contains(out, want) {
			t.Fatalf("swaks --tlsc: no %q in the dialogue (exit %d):\n%s", want, r.code, out)
		}
	}
	if r.code != 0 {
		t.Fatalf("swaks --tlsc exited %d:\n%s", r.code, out)
	}
	var pkg string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "queued for") {
			pkg = packageOf(t, line)
		}
	}
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool { return len(b.Delivered(receiver, ngIntel)) > 0 }) {
		t.Fatalf("nothing delivered to %s:\n%s", ngIntel, b.Tail(sender, 10))
	}
	got := readDelivered(t, b, receiver)[ngIntel]
	if len(got) != 1 {
		t.Fatalf("%d messages delivered; want 1", len(got))
	}
	for _, want := range []string{"Conduit-Verified: signer=northshire-pio", "package=" + pkg, "Subject: [OFFICIAL-SENSITIVE] Visits hall over implicit TLS", body} {
		if !strings.Contains(got[0], want) {
			t.Errorf("the delivered message lacks %q", want)
		}
	}
}

// freeLoopbackAddr is a loopback address nothing listens on now.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "free port")
	addr := l.Addr().String()
	tcheck(t, l.Close(), "free port")
	return addr
}

// addListener adds a listener (submission-tls) to a node's config file
// before the bed starts it.
func addListener(t *testing.T, b *testbed.Bed, id, name, addr string) {
	t.Helper()
	cfg := b.Nodes[id].Config
	data, err := os.ReadFile(cfg)
	tcheck(t, err, "read config")
	const from = "listen: {"
	if !bytes.Contains(data, []byte(from)) {
		t.Fatalf("%s: no %q to add %s to", cfg, from, name)
	}
	data = bytes.Replace(data, []byte(from), []byte(fmt.Sprintf("%s%s: %q, ", from, name, addr)), 1)
	tcheck(t, os.WriteFile(cfg, data, 0o600), "write config")
}
