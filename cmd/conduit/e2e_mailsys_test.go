package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/pki"
	"github.com/conduit-gateway/conduit/testbed"
	"github.com/conduit-gateway/conduit/testbed/mailsys"
)

// requireMailSystem skips on a laptop without Postfix and Dovecot (or
// without root, which they need), and fails under CI=true.
func requireMailSystem(t *testing.T) {
	t.Helper()
	for _, tool := range mailsys.Tools {
		requireTool(t, tool)
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("Postfix and Dovecot need root")
		}
		t.Skip("Postfix and Dovecot need root")
	}
}

// initFolder runs conduit init for one agency of a test.
func initFolder(t *testing.T, root string, a *initAgency, extra ...string) {
	t.Helper()
	a.dir = filepath.Join(root, a.id)
	a.inbound, a.submission, a.adm = freeAddr(t), freeAddr(t), freeAddr(t)
	args := append([]string{"init", a.dir, "--agency", a.id, "--host", "localhost",
		"--inbound", a.inbound, "--submission", a.submission, "--admin", a.adm,
		"--trained", time.Now().AddDate(0, -1, 0).Format("2006-01-02"),
		"--ca-cert", filepath.Join(root, "ca.crt"), "--ca-key", filepath.Join(root, "ca.key")}, a.args...)
	args = append(args, extra...)
	if out, err := exec.Command(conduitBin, args...).CombinedOutput(); err != nil {
		t.Fatalf("conduit init %s: %v\n%s", a.id, err, out)
	}
}

// addPartner adds a partner's entry and certificate to an agency's folder,
// as its administrator would.
func addPartner(t *testing.T, to, p *initAgency) {
	t.Helper()
	entry, err := os.ReadFile(filepath.Join(p.dir, p.id+".entry.yaml"))
	tcheck(t, err, "entry")
	f, err := os.OpenFile(filepath.Join(to.dir, "directory.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	tcheck(t, err, "directory")
	_, err = f.Write(entry)
	tcheck(t, errors.Join(err, f.Close()), "append entry")
	cert, err := os.ReadFile(filepath.Join(p.dir, p.id+".pub.asc"))
	tcheck(t, err, "certificate")
	tcheck(t, os.WriteFile(filepath.Join(to.dir, "partners", p.id+".pub.asc"), cert, 0o644), "certificate")
}

// sendVia submits a message to an MTA as a staff mail client or cron does:
// plain SMTP on loopback, no AUTH.
func sendVia(addr, from string, to []string, msg []byte) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("workstation.northshire-pio.example"); err != nil {
		return err
	}
	if err := c.SendMail(from, to, bytes.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

func staffMessage(from, to, subject, label, body string, extra ...string) []byte {
	var b strings.Builder
	b.WriteString("From: " + from + "\r\nTo: " + to + "\r\nSubject: " + subject + "\r\n")
	b.WriteString("Date: " + time.Now().Format(time.RFC1123Z) + "\r\n")
	b.WriteString("Handling-Label: " + label + "\r\n")
	for _, e := range extra {
		b.WriteString(e + "\r\n")
	}
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n")
	return []byte(b.String())
}

// maildirFiles returns the messages in a gateway's Maildir for a mailbox.
func maildirFiles(dir, mailbox string) [][]byte {
	var out [][]byte
	files, _ := filepath.Glob(filepath.Join(dir, "var", "maildir", mailbox, "new", "*"))
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			out = append(out, b)
		}
	}
	return out
}

// waitMessage waits until one of the messages list returns contains all of
// want, and returns it.
func waitMessage(t *testing.T, what string, list func() [][]byte, want ...string) []byte {
	t.Helper()
	var found []byte
	ok := testbed.WaitFor(context.Background(), 60*time.Second, func() bool {
		for _, m := range list() {
			all := true
			for _, w := range want {
				all = all && bytes.Contains(m, []byte(w))
			}
			if all {
				found = m
				return true
			}
		}
		return false
	})
	if !ok {
		var got []string
		for _, m := range list() {
			got = append(got, string(m))
		}
		t.Fatalf("%s: no message containing %q; have:\n%s", what, want, strings.Join(got, "\n-----\n"))
	}
	return found
}

// The PIO unit's mail system is a real Postfix, relaying all its mail
// through its Conduit gateway with the relay account (by AUTH LOGIN, as
// Postfix's SASL client does when told to); the prison's mail store is a
// real Dovecot, taking packages from its gateway by LMTP and serving them
// over IMAP. Two staff members send through Postfix; Postfix's own bounce
// of a refused package comes back to its sender; a redirected package
// tells its sender where it went; a mailbox Dovecot no longer has fails at
// once, with a notice to the sender.
func TestPostfixAndDovecotAroundTwoGateways(t *testing.T) {
	requireMailSystem(t)
	ctx := context.Background()
	root := t.TempDir()
	ca, err := pki.NewCA("Agencies' test CA", time.Now())
	tcheck(t, err, "CA")
	caKey, err := ca.KeyPEM()
	tcheck(t, err, "CA key")
	tcheck(t, os.WriteFile(filepath.Join(root, "ca.crt"), ca.PEM, 0o644), "ca.crt")
	tcheck(t, os.WriteFile(filepath.Join(root, "ca.key"), caKey, 0o600), "ca.key")

	// HMP Northgate's Dovecot: the intake and the governor are users.
	dove, err := mailsys.StartDovecot(ctx, "postmaster@hmp-northgate.example", map[string]string{
		"intake@hmp-northgate.example": "intake-pw", "governor@hmp-northgate.example": "governor-pw"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Dovecot log:\n%s", dove.Log())
		}
		dove.Close()
	})

	pio := &initAgency{id: "northshire-pio", args: []string{"--kind", "pio", "--serves", "hmp-northgate",
		"--mailbox", "pio@northshire-pio.example", "--mailbox", "analyst=analyst@northshire-pio.example", "--relay-account", "postfix"}}
	prison := &initAgency{id: "hmp-northgate", args: []string{"--kind", "prison", "--region", "north-east",
		"--mailbox", "intake@hmp-northgate.example", "--mailbox", "governing-governor=governor@hmp-northgate.example",
		"--lmtp", dove.LMTP}}
	ccu := &initAgency{id: "ccu-north", args: []string{"--kind", "ccu-regional", "--covers", "north-east",
		"--mailbox", "rcca@ccu-north.example"}}
	for _, a := range []*initAgency{pio, prison, ccu} {
		initFolder(t, root, a)
	}
	addPartner(t, pio, prison)
	addPartner(t, prison, pio)
	addPartner(t, pio, ccu) // on Conduit, but not running: its packages wait in the queue
	prisonLog := serveProcess(t, filepath.Join(prison.dir, "conduit.yaml"), prison.inbound, prison.submission)
	serveProcess(t, filepath.Join(pio.dir, "conduit.yaml"), pio.inbound, pio.submission)

	pf, err := mailsys.StartPostfix(ctx, mailsys.PostfixOptions{
		Hostname: "mail.northshire-pio.example", Domain: "northshire-pio.example",
		Relayhost: pio.submission, RelayUser: "postfix", RelayPassword: password(t, pio.dir, "postfix"),
		CAFile: filepath.Join(root, "ca.crt"), TLSName: "localhost", SASLMechanisms: "login",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Postfix log:\n%s\nqueue:\n%s", pf.Log(), pf.Queue(context.Background()))
		}
		pf.Close()
	})

	label := func(ref, sanitised string) string {
		return "v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5; source=B; intelligence=2; handling=1; basis=assessment; subjects=suspected; purpose=corruption-prison; sanitised=" + sanitised + "; originator=northshire-pio; reference=" + ref
	}
	imap := func(user, pass string) func() [][]byte {
		return func() [][]byte {
			msgs, err := dove.Fetch(ctx, user, pass)
			if err != nil {
				t.Logf("IMAP: %v", err)
			}
			return msgs
		}
	}

	// 1. A routine package from one member of staff, through Postfix,
	// read back from Dovecot over IMAP.
	tcheck(t, sendVia(pf.SMTP, "pio@northshire-pio.example", []string{"intake@hmp-northgate.example"},
		staffMessage("pio@northshire-pio.example", "intake@hmp-northgate.example", "[OFFICIAL-SENSITIVE] Conveyance on wing C",
			label("NP-2026-0101", "yes"), "Phones are being conveyed on wing C.")), "send through Postfix")
	got := waitMessage(t, "the routine package in Dovecot", imap("intake@hmp-northgate.example", "intake-pw"), "Phones are being conveyed on wing C.")
	hdr := string(got[:bytes.Index(got, []byte("\r\n\r\n"))])
	for _, want := range []string{"Handling-Label: v=1; classification=OFFICIAL-SENSITIVE", "Conduit-Verified: signer=northshire-pio",
		"Conduit-Delivered-To: intake@hmp-northgate.example"} {
		if !strings.Contains(hdr, want) {
			t.Errorf("delivered header lacks %q:\n%s", want, hdr)
		}
	}
	if subj := regexp.MustCompile(`(?m)^Subject: (.*)$`).FindStringSubmatch(hdr); subj == nil || strings.Count(subj[1], "OFFICIAL-SENSITIVE") != 1 {
		t.Errorf("the subject does not carry the marking once: %q", subj)
	}
	if rp := regexp.MustCompile(`(?m)^Return-Path: <([^>]*)>`).FindStringSubmatch(hdr); rp == nil || !strings.Contains(rp[1], "@") {
		t.Errorf("Return-Path is %q, want the originator's or the gateway's address", rp)
	}
	body := string(got[len(hdr):])
	banner := strings.Index(body, "==== OFFICIAL-SENSITIVE | intelligence package cdt-")
	if banner < 0 || banner > strings.Index(body, "Phones are being conveyed") {
		t.Errorf("the body does not start with the banner:\n%s", body)
	}
	for _, want := range []string{"From northshire-pio, reference NP-2026-0101", "source B (mostly reliable)",
		"Handling 1: may be disseminated to law enforcement", "What to do:"} {
		if !strings.Contains(body, want) {
			t.Errorf("the banner lacks %q", want)
		}
	}

	// 2. Another member of staff sends a package about the governor: the
	// policy redirects it to the regional CCU, and the sender is told so
	// in their mailbox, by a notice marked like the package.
	tcheck(t, sendVia(pf.SMTP, "analyst@northshire-pio.example", []string{"intake@hmp-northgate.example"},
		staffMessage("analyst@northshire-pio.example", "intake@hmp-northgate.example", "Allegation concerning the governor",
			label("NP-2026-0102", "yes"), "The governor is said to take payments.",
			"Conduit-Subject: role=governing-governor; establishment=hmp-northgate")), "send the governor package")
	notice := waitMessage(t, "the redirect notice", func() [][]byte { return maildirFiles(pio.dir, "analyst@northshire-pio.example") },
		"ccu-north", "governor-to-regional-ccu")
	if !bytes.Contains(notice, []byte("Subject: [OFFICIAL-SENSITIVE]")) || bytes.Contains(notice, []byte("The governor is said")) {
		t.Errorf("the notice is not marked like the package, or carries its content:\n%s", notice)
	}

	// 3. An unsanitised package is refused; Postfix bounces it to its
	// sender through the same relay account, with a null sender, and the
	// bounce is delivered to the sender's mailbox.
	tcheck(t, sendVia(pf.SMTP, "pio@northshire-pio.example", []string{"intake@hmp-northgate.example"},
		staffMessage("pio@northshire-pio.example", "intake@hmp-northgate.example", "Unsanitised report",
			label("NP-2026-0103", "no"), "Source material not yet sanitised.")), "send the unsanitised package")
	waitMessage(t, "Postfix's bounce", func() [][]byte { return maildirFiles(pio.dir, "pio@northshire-pio.example") },
		"MAILER-DAEMON", "not marked sanitised")

	// 4. The intake mailbox is removed from Dovecot: the next package is
	// refused by LMTP for good, so it fails at once, the prison's
	// administrators are alerted, and the sender gets a notice.
	passwd := filepath.Join(dove.Dir, "passwd")
	pw, err := os.ReadFile(passwd)
	tcheck(t, err, "passwd")
	var keep []string
	for _, l := range strings.Split(string(pw), "\n") {
		if !strings.HasPrefix(l, "intake@") {
			keep = append(keep, l)
		}
	}
	tcheck(t, os.WriteFile(passwd, []byte(strings.Join(keep, "\n")), 0o644), "passwd")
	start := time.Now()
	tcheck(t, sendVia(pf.SMTP, "pio@northshire-pio.example", []string{"intake@hmp-northgate.example"},
		staffMessage("pio@northshire-pio.example", "intake@hmp-northgate.example", "Second report",
			label("NP-2026-0104", "yes"), "A second report.")), "send to a removed mailbox")
	waitMessage(t, "the failure notice", func() [][]byte { return maildirFiles(pio.dir, "pio@northshire-pio.example") },
		"Undelivered", "intake@hmp-northgate.example", "permanently")
	if took := time.Since(start); took > 45*time.Second {
		t.Errorf("the permanent refusal took %s: it was retried", took)
	}
	if b, _ := os.ReadFile(prisonLog.Name()); !bytes.Contains(b, []byte("admin alert")) || !bytes.Contains(b, []byte("intake@hmp-northgate.example")) {
		t.Errorf("the prison's gateway did not alert its administrators:\n%s", b)
	}
}
