package main

// End-to-end tests of issue 5's accountability (deadlines, triage by reply,
// retention by crypto-shredding), across real gateway processes whose
// clocks the tests move (gateway.TestClockEnv).

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/testbed"
)

// TestHandlingCode5HoldClockAlertsWhenTheOriginatorDoesNotDecide: a
// package graded 5x5x5 handling code 5 ("no further dissemination: refer
// to the originator"; DESIGN.md handling codes, NIM grading as the
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
