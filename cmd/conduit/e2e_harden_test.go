package main

// End-to-end tests of the defences against hostile clients and careless
// partners: each starts real gateway processes and attacks them over
// real sockets with real TLS, as an outsider, a careless partner or a
// malicious member of staff would.

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/gateway/store"
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
