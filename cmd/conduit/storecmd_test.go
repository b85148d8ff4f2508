package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/pgtest"
	"github.com/conduit-gateway/conduit/testbed"
)

// TestStoreMigrateMovesAnAgencyToPostgres runs a sender on SQLite, sends
// packages, moves its store to PostgreSQL with conduit store migrate, and
// runs it again on PostgreSQL: the copy is checked (counts, the same chain
// head), the history is there (queue, receipts, audit events) and the
// gateway carries on, chaining new events onto the copied chain.
func TestStoreMigrateMovesAnAgencyToPostgres(t *testing.T) {
	const sender, receiver = "northshire-pio", "hmp-northgate"
	pg := pgtest.Start(t)
	dsn := pgtest.NewDB(t, pg)
	b := newE2EBed(t, testbed.Options{RetryMin: "200ms", RetryMax: "1s"}, sender, receiver)
	ctx := context.Background()
	var before []string
	for range 3 {
		resp, err := b.Submit(ctx, sender, []string{ngIntel}, e2eMessage(e2eLabel, "Before the move"))
		tcheck(t, err, "submit")
		before = append(before, packageOf(t, resp))
	}
	sst, err := b.OpenStore(ctx, sender)
	tcheck(t, err, "store")
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool {
		for _, p := range before {
			if r, _ := sst.Receipts(ctx, p); len(r) == 0 {
				return false
			}
		}
		return true
	}) {
		t.Fatal("receipts did not come back before the move")
	}
	sst.Close()
	tcheck(t, b.Stop(sender), "stop")

	// Refused without the target, and into a database already in use.
	if r := run(t, b.Dir, nil, nil, conduitBin, "store", "migrate", "--from", b.StorePath(sender)); r.code == 0 {
		t.Fatal("migrate without --to succeeded")
	}
	out := mustRun(t, b.Dir, nil, nil, conduitBin, "store", "migrate", "--from", b.StorePath(sender), "--to", dsn)
	if !strings.Contains(out, "chain intact") || !strings.Contains(out, "the same as in") {
		t.Fatalf("migrate said:\n%s", out)
	}
	if r := run(t, b.Dir, nil, nil, conduitBin, "store", "migrate", "--from", b.StorePath(sender), "--to", dsn); r.code == 0 || !strings.Contains(r.stderr, "not empty") {
		t.Fatalf("a second migrate into the same database: %d %s", r.code, r.stderr)
	}

	// The sender on PostgreSQL now.
	cfgPath := b.Nodes[sender].Config
	cfg, err := os.ReadFile(cfgPath)
	tcheck(t, err, "config")
	moved := strings.Replace(string(cfg), "store: {path: conduit.db}", `store: {postgres: "`+dsn+`"}`, 1)
	if moved == string(cfg) {
		t.Fatal("the bed's store line changed; update the test")
	}
	tcheck(t, os.WriteFile(cfgPath, []byte(moved), 0o600), "config")
	tcheck(t, os.Rename(b.StorePath(sender), b.StorePath(sender)+".moved"), "move the old file away")
	tcheck(t, b.Start(ctx, sender), "start on postgres")
	resp, err := b.Submit(ctx, sender, []string{ngIntel}, e2eMessage(e2eLabel, "After the move"))
	tcheck(t, err, "submit after the move")
	after := packageOf(t, resp)

	pst, err := store.OpenPostgres(ctx, dsn)
	tcheck(t, err, "postgres store")
	defer pst.Close()
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool {
		r, _ := pst.Receipts(ctx, after)
		return len(r) == 1
	}) {
		t.Fatal("no receipt for the package sent after the move")
	}
	for _, p := range before {
		items, err := pst.List(ctx, store.Filter{PackageID: p})
		tcheck(t, err, "list")
		r, _ := pst.Receipts(ctx, p)
		if len(items) != 1 || items[0].State != store.Sent || len(r) != 1 {
			t.Errorf("package %s after the move: items %+v, receipts %v", p, items, r)
		}
	}
	tcheck(t, b.Stop(sender), "stop")
	kinds := auditKinds(t, b, sender)
	for _, p := range append(before, after) {
		if kinds[p]["sent"] == 0 || kinds[p]["receipt"] == 0 {
			t.Errorf("package %s: events %v", p, kinds[p])
		}
	}
	// The list commands read the moved store.
	if out := mustRun(t, b.Dir, nil, nil, conduitBin, "queue", "list", "--config", cfgPath, "--state", "sent"); !strings.Contains(out, after) {
		t.Errorf("queue list on PostgreSQL:\n%s", out)
	}
}
