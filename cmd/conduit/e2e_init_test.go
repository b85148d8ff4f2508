package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/pki"
	"github.com/conduit-gateway/conduit/testbed"
)

// initAgency is one agency set up by `conduit init` for a test.
type initAgency struct {
	id, dir                  string
	inbound, submission, adm string
	args                     []string
}

// freeAddr returns a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// serveProcess runs `conduit serve` for a folder and waits until it
// listens; it is stopped when the test ends.
func serveProcess(t *testing.T, cfg string, addrs ...string) *os.File {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(conduitBin, "serve", "--config", cfg, "--log-format", "text")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("log of %s:\n%s", cfg, b)
		}
	})
	for _, a := range addrs {
		ok := testbed.WaitFor(context.Background(), 20*time.Second, func() bool {
			select {
			case err := <-done:
				done <- err
				return true
			default:
			}
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		select {
		case err := <-done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("serve %s exited at start (%v):\n%s", cfg, err, b)
		default:
		}
		if !ok {
			t.Fatalf("serve %s does not listen on %s", cfg, a)
		}
	}
	return logf
}

// submitTo sends a message through a submission listener: STARTTLS
// verified by the CA, AUTH PLAIN, and returns the final reply's text.
func submitTo(addr string, roots *x509.CertPool, user, pass, from string, rcpts []string, msg []byte) (string, error) {
	c, err := smtp.DialStartTLS(addr, &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.Hello("client.localhost"); err != nil {
		return "", err
	}
	if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		return "", err
	}
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write(msg); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	return resp.StatusText, c.Quit()
}

// password reads an account's password from the passwords file init wrote.
func password(t *testing.T, dir, user string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "passwords"))
	tcheck(t, err, "passwords file")
	for _, l := range strings.Split(string(b), "\n") {
		if name, pw, ok := strings.Cut(l, " "); ok && name == user {
			return pw
		}
	}
	t.Fatalf("no password for %s in %s", user, dir)
	return ""
}

// Two agencies set up by `conduit init`, with nothing edited by hand but
// each other's directory entry (and the partner's certificate put in
// place): a PIO unit and the prison it serves exchange a package over
// mutual TLS; a package that needs an agency the two-agency directory
// lacks is refused with that reason.
func TestTwoAgenciesSetUpByInitExchangePackages(t *testing.T) {
	root := t.TempDir()
	ca, err := pki.NewCA("Agencies' test CA", time.Now())
	tcheck(t, err, "CA")
	caKey, err := ca.KeyPEM()
	tcheck(t, err, "CA key")
	tcheck(t, os.WriteFile(filepath.Join(root, "ca.crt"), ca.PEM, 0o644), "ca.crt")
	tcheck(t, os.WriteFile(filepath.Join(root, "ca.key"), caKey, 0o600), "ca.key")
	trained := time.Now().AddDate(0, -1, 0).Format("2006-01-02")
	agencies := []*initAgency{
		{id: "northshire-pio", args: []string{"--kind", "pio", "--name", "Northshire Police PIO unit", "--serves", "hmp-northgate",
			"--mailbox", "pio@northshire-pio.example"}},
		{id: "hmp-northgate", args: []string{"--kind", "prison", "--name", "HMP Northgate", "--region", "north-east",
			"--mailbox", "intake@hmp-northgate.example", "--mailbox", "governing-governor=governor@hmp-northgate.example"}},
	}
	for _, a := range agencies {
		a.dir = filepath.Join(root, a.id)
		a.inbound, a.submission, a.adm = freeAddr(t), freeAddr(t), freeAddr(t)
		args := append([]string{"init", a.dir, "--agency", a.id, "--host", "localhost",
			"--inbound", a.inbound, "--submission", a.submission, "--admin", a.adm, "--trained", trained,
			"--ca-cert", filepath.Join(root, "ca.crt"), "--ca-key", filepath.Join(root, "ca.key")}, a.args...)
		out, err := exec.Command(conduitBin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("conduit init %s: %v\n%s", a.id, err, out)
		}
		for _, want := range []string{"OpenPGP fingerprint", "TLS pin", "Next:", "conduit serve --config"} {
			if !bytes.Contains(out, []byte(want)) {
				t.Errorf("init's output does not say %q:\n%s", want, out)
			}
		}
	}
	// What the two administrators exchange: the entry and the certificate.
	for i, a := range agencies {
		p := agencies[1-i]
		entry, err := os.ReadFile(filepath.Join(p.dir, p.id+".entry.yaml"))
		tcheck(t, err, "entry")
		f, err := os.OpenFile(filepath.Join(a.dir, "directory.yaml"), os.O_APPEND|os.O_WRONLY, 0)
		tcheck(t, err, "directory")
		_, err = f.Write(entry)
		tcheck(t, errors.Join(err, f.Close()), "append the partner's entry")
		cert, err := os.ReadFile(filepath.Join(p.dir, p.id+".pub.asc"))
		tcheck(t, err, "certificate")
		tcheck(t, os.WriteFile(filepath.Join(a.dir, "partners", p.id+".pub.asc"), cert, 0o644), "partner certificate")
		// var/ is not there on a fresh machine's copy of the folder:
		// serve makes what it writes.
		tcheck(t, os.RemoveAll(filepath.Join(a.dir, "var")), "remove var")
	}
	for _, a := range agencies {
		out, err := exec.Command(conduitBin, "policy", "check", "--config", filepath.Join(a.dir, "conduit.yaml")).CombinedOutput()
		if err != nil {
			t.Fatalf("policy check %s: %v\n%s", a.id, err, out)
		}
	}
	pio, prison := agencies[0], agencies[1]
	serveProcess(t, filepath.Join(prison.dir, "conduit.yaml"), prison.inbound, prison.submission)
	serveProcess(t, filepath.Join(pio.dir, "conduit.yaml"), pio.inbound, pio.submission)

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	pass := password(t, pio.dir, "admin")
	send := func(subject string, extra ...string) (string, error) {
		return submitTo(pio.submission, roots, "admin", pass, "pio@northshire-pio.example",
			[]string{"intake@hmp-northgate.example"}, e2eMessage(e2eLabel, subject, extra...))
	}
	text, err := send("Conveyance on wing C")
	tcheck(t, err, "submit a routine package")
	if !strings.Contains(text, "hmp-northgate") {
		t.Errorf("the 250 does not say where the package went: %q", text)
	}
	box := filepath.Join(prison.dir, "var", "maildir", "intake@hmp-northgate.example", "new")
	var delivered []byte
	if !testbed.WaitFor(context.Background(), 30*time.Second, func() bool {
		files, _ := filepath.Glob(filepath.Join(box, "*"))
		if len(files) == 0 {
			return false
		}
		delivered, _ = os.ReadFile(files[0])
		return true
	}) {
		t.Fatalf("nothing delivered to %s", box)
	}
	for _, want := range []string{e2eBody, "Conduit-Verified: signer=northshire-pio", "Handling-Label: v=1"} {
		if !bytes.Contains(delivered, []byte(want)) {
			t.Errorf("delivered message lacks %q", want)
		}
	}
	// Mutual TLS with init's certificates names the agency: nothing is
	// quarantined at the prison.
	out, err := exec.Command(conduitBin, "quarantine", "list", "--config", filepath.Join(prison.dir, "conduit.yaml")).CombinedOutput()
	tcheck(t, err, "quarantine list")
	if bytes.Contains(out, []byte("mutual-tls")) || bytes.Contains(out, []byte("Q1")) {
		t.Errorf("the prison quarantined the package:\n%s", out)
	}

	// The governing governor as a subject needs the regional CCU, which
	// this directory lacks: that package alone is refused, saying so.
	_, err = send("About the governor", "Conduit-Subject: role=governing-governor; establishment=hmp-northgate")
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 550 || !strings.Contains(se.Message, "no regional CCU") {
		t.Errorf("governor package: got %v, want a 550 naming the missing regional CCU", err)
	} else {
		t.Logf("refusal: %s", se.Message)
	}
}
