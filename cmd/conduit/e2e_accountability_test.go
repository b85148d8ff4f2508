package main

// End-to-end tests of accountability (deadlines, triage by reply,
// retention by crypto-shredding), across real gateway processes whose
// clocks the tests move (testbed.ClockEnv).

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/testbed"
)

// TestHandlingCode5HoldClockAlertsWhenTheOriginatorDoesNotDecide: a
// package graded 5x5x5 handling code 5 ("no further dissemination: refer
// to the originator"; docs/design.md handling codes, NIM grading as the
// Statement of Common Principles cites it in 000_8d469ee3e549c8f4.txt) is
// held, and its hold clock starts (handling-code.hold-hours: the seeds set
// no period, default 72 hours). Releasing or dropping the held item stops
// its clock; the one left waiting raises the overdue alert (log, audit and
// a notice to the escalation contacts) once the clock is moved 73 hours on.
func TestHandlingCode5HoldClockAlertsWhenTheOriginatorDoesNotDecide(t *testing.T) {
	b := newBed(t, testbed.Options{}, "northshire-pio")
	ctx := context.Background()
	cfg := b.Nodes["northshire-pio"].Config
	label := strings.Replace(e2eLabel, "handling=1", "handling=5", 1)
	held := map[string]string{} // what happens to it -> package id
	for _, what := range []string{"released", "dropped", "left"} {
		resp, err := b.Submit(ctx, "northshire-pio", []string{mailboxOf(t, b, "hmp-northgate")},
			e2eMessage(strings.Replace(label, "NP-2026-0001", "NP-H5-"+what, 1), "Refer to originator"))
		tcheck(t, err, "submit "+what)
		held[what] = packageOf(t, resp)
	}
	list := mustRun(t, b.Dir, nil, nil, conduitBin, "deadlines", "--config", cfg)
	for what, pkg := range held {
		if !strings.Contains(list, pkg+"  hold") {
			t.Fatalf("no hold clock for the %s package %s:\n%s", what, pkg, list)
		}
	}
	itemOf := func(pkg string) string {
		items, err := b.Queue(ctx, "northshire-pio", store.Filter{PackageID: pkg})
		tcheck(t, err, "queue")
		if len(items) != 1 || items[0].State != store.OnHold {
			t.Fatalf("package %s: %s", pkg, describeItems(items))
		}
		return itoa(items[0].ID)
	}
	mustRun(t, b.Dir, nil, nil, conduitBin, "queue", "release", itemOf(held["released"]), "--reason", "originator consented, NP-C-9", "--config", cfg)
	mustRun(t, b.Dir, nil, nil, conduitBin, "queue", "drop", itemOf(held["dropped"]), "--reason", "originator refused", "--config", cfg)
	list = mustRun(t, b.Dir, nil, nil, conduitBin, "deadlines", "--config", cfg)
	if strings.Contains(list, held["released"]+"  hold") || strings.Contains(list, held["dropped"]+"  hold") || !strings.Contains(list, held["left"]+"  hold") {
		t.Fatalf("release and drop should stop their hold clocks, and only theirs:\n%s", list)
	}

	tcheck(t, b.MoveClock("northshire-pio", 73*time.Hour), "move clock")
	contact := b.Directory.Agency("northshire-pio").Escalation[0].Address
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool { return len(b.Delivered("northshire-pio", contact)) > 0 }) {
		t.Fatalf("no overdue alert to %s:\n%s", contact, b.Tail("northshire-pio", 8))
	}
	files := b.Delivered("northshire-pio", contact)
	if len(files) != 1 {
		t.Fatalf("%d alerts, want 1 (released and dropped items raise none)", len(files))
	}
	alert, _ := os.ReadFile(files[0])
	for _, want := range []string{"Overdue: hold, package " + held["left"], "handling code 5", "originator's decision"} {
		if !strings.Contains(string(alert), want) {
			t.Errorf("alert lacks %q:\n%s", want, alert)
		}
	}
	if !strings.Contains(b.Tail("northshire-pio", 40), `"admin alert: deadline overdue"`) {
		t.Errorf("no overdue alert in the log:\n%s", b.Tail("northshire-pio", 10))
	}
	q := mustRun(t, b.Dir, nil, nil, conduitBin, "audit", "query", "--kind", "alert", "--config", cfg)
	if !strings.Contains(q, held["left"]) || strings.Contains(q, held["released"]) {
		t.Errorf("the audit trail should hold the alert for %s only:\n%s", held["left"], q)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestRetentionCryptoShredsEveryStoredCopyWithAMovedClock: with a one-day
// retention period (retention rule; MoU Annex A, Description of method of
// sharing: data is kept "for the period necessary" and then destroyed "in
// a secure manner"), a package sent by the PIO, delivered at the prison,
// and a message quarantined at the prison are all destroyed once both
// gateways' clocks are moved 25 hours on: afterwards no file under either
// gateway's directory (database, WAL, Maildir, log) holds the package's
// content, a stored copy's data key, or a stretch of its ciphertext, and
// the audit trail of each records the purge.
func TestRetentionCryptoShredsEveryStoredCopyWithAMovedClock(t *testing.T) {
	const from, to = "days: 2190", "days: 1"
	pol := e2ePolicy(t)
	if !bytes.Contains(pol, []byte(from)) {
		t.Fatalf("the example policy no longer says %q", from)
	}
	b := newBed(t, testbed.Options{Policy: bytes.Replace(pol, []byte(from), []byte(to), 1)}, "northshire-pio", "hmp-northgate", "rpiu-north-east")
	ctx := context.Background()
	resp, err := b.Submit(ctx, "northshire-pio", []string{mailboxOf(t, b, "hmp-northgate")}, e2eMessage(e2eLabel, "Wing C conveyance"))
	tcheck(t, err, "submit")
	pkg := packageOf(t, resp)
	if _, ok := waitQueue(t, b, "northshire-pio", pkg, 30*time.Second, allSent); !ok {
		t.Fatalf("package not sent:\n%s", b.Tail("northshire-pio", 8))
	}
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool { return len(b.AllDelivered("hmp-northgate")) > 0 }) {
		t.Fatalf("nothing delivered at hmp-northgate")
	}
	// A message in clear that fails every check, from the partner's
	// gateway (its client certificate): quarantined at the prison, kept
	// under a data key of its own. (From a client with no partner
	// certificate it would be refused and not kept at all.)
	const qCanary = "QUARANTINE-CANARY-5d1e: a forged report in clear"
	_, err = b.InjectAs(ctx, "hmp-northgate", "northshire-pio", pioFrom, []string{ngIntel},
		[]byte("From: <conduit@northshire-pio.example>\r\nSubject: report\r\n\r\n"+qCanary+"\r\n"))
	if code, _ := smtpCode(err); code != 550 {
		t.Fatalf("the message in clear was not refused: %v", err)
	}

	// What must be gone afterwards: each stored copy's data key and a
	// stretch of its ciphertext, read from the databases now.
	secrets := map[string][]string{} // node -> byte strings
	for _, id := range []string{"northshire-pio", "hmp-northgate"} {
		db, err := sql.Open("sqlite", b.StorePath(id)+"?_pragma=query_only(1)&_pragma=busy_timeout(10000)")
		tcheck(t, err, "open "+id)
		for _, q := range []string{`SELECT key FROM data_keys`, `SELECT substr(data, 40, 48) FROM queue_chunk`,
			`SELECT substr(raw, 20, 48) FROM quarantine WHERE length(raw) > 0`} {
			rows, err := db.QueryContext(ctx, q)
			tcheck(t, err, q)
			for rows.Next() {
				var v []byte
				tcheck(t, rows.Scan(&v), q)
				secrets[id] = append(secrets[id], string(v))
			}
			rows.Close()
		}
		db.Close()
	}
	if len(secrets["northshire-pio"]) < 2 || len(secrets["hmp-northgate"]) < 2 {
		t.Fatalf("expected data keys and ciphertext at both gateways, got %d and %d", len(secrets["northshire-pio"]), len(secrets["hmp-northgate"]))
	}

	for _, id := range []string{"northshire-pio", "hmp-northgate"} {
		tcheck(t, b.MoveClock(id, 25*time.Hour), "move clock "+id)
	}
	purged := func(id, want string) bool {
		out := run(t, b.Dir, nil, nil, conduitBin, "audit", "query", "--kind", "purged", "--config", b.Nodes[id].Config).stdout
		return strings.Contains(out, want)
	}
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool {
		return purged("northshire-pio", pkg) && purged("hmp-northgate", pkg) && purged("hmp-northgate", "crypto-shredded (data key and bytes destroyed)")
	}) {
		t.Fatalf("the purges are not in the audit trails:\n%s\n%s", b.Tail("northshire-pio", 6), b.Tail("hmp-northgate", 6))
	}
	for _, id := range []string{"northshire-pio", "hmp-northgate"} {
		st, err := b.OpenStore(ctx, id)
		tcheck(t, err, "store "+id)
		n, err := st.DataKeyCount(ctx)
		st.Close()
		if err != nil || n != 0 {
			t.Errorf("%s keeps %d data keys after the retention period (%v)", id, n, err)
		}
		if v := mustRun(t, b.Dir, nil, nil, conduitBin, "audit", "verify", "--config", b.Nodes[id].Config); !strings.Contains(v, "chain intact") {
			t.Errorf("%s: audit verify: %s", id, v)
		}
	}
	if n := len(b.AllDelivered("hmp-northgate")); n != 0 {
		t.Errorf("%d delivered copies left at hmp-northgate", n)
	}
	// Nothing readable remains, in any file of either gateway, running.
	for _, id := range []string{"northshire-pio", "hmp-northgate"} {
		canaries := append([]string{e2eBody, qCanary, e2eSubjectID}, secrets[id]...)
		for _, s := range secrets[id] {
			canaries = append(canaries, hex.EncodeToString([]byte(s)), base64.StdEncoding.EncodeToString([]byte(s)))
		}
		filepath.WalkDir(b.Nodes[id].Dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return nil
			}
			for i, c := range canaries {
				if bytes.Contains(data, []byte(c)) {
					t.Errorf("%s: %s still holds secret %d (%d bytes) after the retention period", id, path, i, len(c))
				}
			}
			return nil
		})
	}
}

// TestTriageByReplyStopsTheClock: at the regional CCU (which receives a
// report naming the governing governor: governor-to-regional-ccu, MoU 6.1
// police responsibilities, bullet 5), the delivered report starts the
// 72-hour triage clock (triage-72h, MoU 6.1 prison responsibilities) and
// names the triage address in its Conduit-Triage header. A member of the
// CCU's staff replies to it over the CCU gateway's submission port
// (STARTTLS, AUTH PLAIN) addressed to the triage address: the clock stops,
// the audit trail records the triage with the member of staff as actor,
// and the reply's content is kept nowhere. Replies that name no package,
// a package not received there, or one already triaged are refused with
// the reason; so is a triage reply mixed with other recipients.
func TestTriageByReplyStopsTheClock(t *testing.T) {
	b := newBed(t, testbed.Options{}, "northshire-pio", "ccu-north", "rpiu-north-east")
	ctx := context.Background()
	gov := "Conduit-Subject: role=governing-governor; establishment=hmp-northgate"
	resp, err := b.Submit(ctx, "northshire-pio", []string{mailboxOf(t, b, "hmp-northgate")},
		e2eMessage(strings.Replace(e2eLabel, "NP-2026-0001", "NP-TR-1", 1), "Governor report", "Conduit-Topic: corruption", gov))
	tcheck(t, err, "submit")
	pkg := packageOf(t, resp)
	ccu := b.Nodes["ccu-north"]
	var delivered []byte
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool {
		for _, files := range b.AllDelivered("ccu-north") {
			delivered, _ = os.ReadFile(files[0])
			return true
		}
		return false
	}) {
		t.Fatalf("nothing delivered at ccu-north:\n%s", b.Tail("ccu-north", 6))
	}
	hdr := string(delivered[:bytes.Index(delivered, []byte("\r\n\r\n"))])
	triage := regexp.MustCompile(`(?m)^Conduit-Triage: reply to <([^>]+)> when triaged \(package (cdt-[a-z0-9]+)`).FindStringSubmatch(hdr)
	msgID := regexp.MustCompile(`(?mi)^Message-ID: *(<[^>]+>)`).FindStringSubmatch(hdr)
	if triage == nil || triage[2] != pkg || msgID == nil {
		t.Fatalf("the delivered copy names no triage address for %s, or has no Message-ID:\n%s", pkg, hdr)
	}
	triageAddr := triage[1]
	const replyCanary = "REPLY-CANARY-41b7: banding 2, source checked on Mercury"
	replyMsg := func(extra string) []byte {
		return []byte("From: " + ccu.Address + "\r\nTo: " + triageAddr + "\r\nSubject: Re: [OFFICIAL-SENSITIVE] Governor report\r\n" +
			extra + "Content-Type: text/plain\r\n\r\n" + replyCanary + "\r\n")
	}
	other := strings.Replace(pkg, pkg[4:8], "zzzz", 1)
	for _, tc := range []struct {
		name  string
		rcpts []string
		msg   []byte
		code  int
		want  string
	}{
		{"a reply naming no package", []string{triageAddr}, replyMsg(""), 554, "names no package"},
		{"a reply to a message not received here", []string{triageAddr}, replyMsg("In-Reply-To: <nobody@nowhere.example>\r\n"), 554, "names no package"},
		{"a package id with no clock here", []string{triageAddr}, replyMsg("Conduit-Package: " + other + "\r\n"), 550, "no open triage clock"},
		{"mixed with another recipient", []string{triageAddr, mailboxOf(t, b, "northshire-pio")}, replyMsg(""), 550, "alone"},
		{"the reply to the delivered copy", []string{triageAddr}, replyMsg("In-Reply-To: " + msgID[1] + "\r\nReferences: " + msgID[1] + "\r\n"), 250, "Triage of package " + pkg + " recorded"},
		{"the same reply again", []string{triageAddr}, replyMsg("In-Reply-To: " + msgID[1] + "\r\n"), 550, "no open triage clock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := b.Submit(ctx, "ccu-north", tc.rcpts, tc.msg)
			code, text := 250, resp
			if err != nil {
				code, text = smtpCode(err)
			}
			if code != tc.code || !strings.Contains(text, tc.want) {
				t.Fatalf("got %d %s; want %d ...%s...", code, text, tc.code, tc.want)
			}
		})
	}
	if list := mustRun(t, b.Dir, nil, nil, conduitBin, "deadlines", "--config", ccu.Config); strings.Contains(list, "triage") {
		t.Errorf("the triage clock is still open after the reply:\n%s", list)
	}
	q := mustRun(t, b.Dir, nil, nil, conduitBin, "audit", "query", "--kind", "triaged", "--config", ccu.Config)
	if !strings.Contains(q, pkg) || !strings.Contains(q, ccu.Address) || strings.Count(q, "triaged:") != 1 {
		t.Errorf("the audit trail should record one triage of %s by %s:\n%s", pkg, ccu.Address, q)
	}
	// The reply went nowhere and its content is kept nowhere.
	b.StopAll()
	for _, id := range b.IDs {
		if items, _ := b.Queue(ctx, id, store.Filter{PackageID: ""}); id == "ccu-north" && len(items) > 1 {
			t.Errorf("ccu-north queued %d items; only the receipt should be there:%s", len(items), describeItems(items))
		}
	}
	noPlaintextAtRest(t, b, replyCanary)
	if strings.Contains(string(fileOrEmpty(b.Nodes["ccu-north"].Log)), "REPLY-CANARY") {
		t.Error("the reply's content is in the log")
	}
}

func fileOrEmpty(path string) []byte { b, _ := os.ReadFile(path); return b }
