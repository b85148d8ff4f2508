package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/pki"
	"github.com/conduit-gateway/conduit/testbed"
)

// SIGHUP (conduit policy reload) puts a directory change in force without
// a restart, and refuses a change it cannot take whole (an invalid
// directory, a new listen address), keeping what is in force and saying
// why in the log.
func TestReloadTakesTheDirectoryOrRefusesTheWholeChange(t *testing.T) {
	root := t.TempDir()
	ca, err := pki.NewCA("Agencies' test CA", time.Now())
	tcheck(t, err, "CA")
	caKey, err := ca.KeyPEM()
	tcheck(t, err, "CA key")
	tcheck(t, os.WriteFile(filepath.Join(root, "ca.crt"), ca.PEM, 0o644), "ca.crt")
	tcheck(t, os.WriteFile(filepath.Join(root, "ca.key"), caKey, 0o600), "ca.key")
	pio := &initAgency{id: "northshire-pio", args: []string{"--kind", "pio", "--serves", "hmp-northgate", "--mailbox", "pio@northshire-pio.example"}}
	prison := &initAgency{id: "hmp-northgate", args: []string{"--kind", "prison", "--region", "north-east",
		"--mailbox", "intake@hmp-northgate.example", "--mailbox", "governing-governor=governor@hmp-northgate.example"}}
	initFolder(t, root, pio)
	initFolder(t, root, prison)
	addPartner(t, pio, prison)
	cfg := filepath.Join(pio.dir, "conduit.yaml")
	dirFile := filepath.Join(pio.dir, "directory.yaml")
	logf := serveProcess(t, cfg, pio.submission)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	pass := password(t, pio.dir, "admin")
	send := func(to string) error {
		_, err := submitTo(pio.submission, roots, "admin", pass, "pio@northshire-pio.example", []string{to},
			e2eMessage(e2eLabel, "Conveyance"))
		return err
	}
	reload := func(want string) {
		t.Helper()
		before, _ := os.ReadFile(logf.Name())
		out, err := exec.Command(conduitBin, "policy", "reload", "--config", cfg).CombinedOutput()
		if err != nil && want == "" {
			t.Fatalf("policy reload: %v\n%s", err, out)
		}
		if want == "" {
			want = "configuration, directory and policy reloaded"
		}
		if !testbed.WaitFor(context.Background(), 30*time.Second, func() bool {
			b, _ := os.ReadFile(logf.Name())
			return bytes.Contains(b[len(before):], []byte(want))
		}) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("the log does not say %q after the reload:\n%s", want, b[len(before):])
		}
		// The listener is back (a whole reload restarts the parts).
		testbed.WaitFor(context.Background(), 20*time.Second, func() bool { return send("intake@hmp-northgate.example") == nil })
	}

	// A mailbox the directory does not list is refused.
	var se *smtp.SMTPError
	if err := send("duty@hmp-northgate.example"); !errors.As(err, &se) || se.Code != 550 {
		t.Fatalf("a mailbox not in the directory: %v, want 550", err)
	}
	// The administrator adds it and reloads: it is in force at once.
	d, err := os.ReadFile(dirFile)
	tcheck(t, err, "directory")
	added := strings.Replace(string(d), "      - {address: \"intake@hmp-northgate.example\", function: intake",
		"      - {address: \"duty@hmp-northgate.example\", function: duty}\n      - {address: \"intake@hmp-northgate.example\", function: intake", 1)
	if added == string(d) {
		t.Fatal("test bug: the prison's intake line is not in the directory")
	}
	tcheck(t, os.WriteFile(dirFile, []byte(added), 0o644), "directory")
	reload("")
	tcheck(t, send("duty@hmp-northgate.example"), "the added mailbox after the reload")

	// An invalid directory is refused whole; what is in force stays.
	tcheck(t, os.WriteFile(dirFile, []byte(strings.Replace(added, "gateway: \"localhost:", "gateway: \"local_host:", 1)), 0o644), "directory")
	out, err := exec.Command(conduitBin, "policy", "reload", "--config", cfg).CombinedOutput()
	if err == nil || !bytes.Contains(out, []byte("local_host")) {
		t.Errorf("policy reload signalled an invalid directory: %v\n%s", err, out)
	}
	tcheck(t, exec.Command("kill", "-HUP", readPIDFile(t, pio.dir)).Run(), "SIGHUP")
	reloadRefused := "reload refused"
	if !testbed.WaitFor(context.Background(), 20*time.Second, func() bool {
		b, _ := os.ReadFile(logf.Name())
		return bytes.Contains(b, []byte(reloadRefused)) && bytes.Contains(b, []byte("local_host"))
	}) {
		t.Fatal("the gateway did not log the refused reload with its reason")
	}
	tcheck(t, send("duty@hmp-northgate.example"), "the directory in force stays after a refused reload")

	// A new listen address needs a restart: refused, naming it.
	tcheck(t, os.WriteFile(dirFile, []byte(added), 0o644), "directory")
	c, err := os.ReadFile(cfg)
	tcheck(t, err, "config")
	tcheck(t, os.WriteFile(cfg, []byte(strings.Replace(string(c), pio.submission, freeAddr(t), 1)), 0o640), "config")
	reload("listen.submission")
	tcheck(t, send("duty@hmp-northgate.example"), "the listener in force stays")
}

func readPIDFile(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "var", "conduit.pid"))
	tcheck(t, err, "pid file")
	return strings.TrimSpace(string(b))
}
