package main

// The audit commands, driven through the built binary on a database
// written with the audit package's own API.

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/audit"
)

// auditBed writes a gateway config (the example directory and policy, a
// database beside the config) and opens the audit trail in that database
// with key (nil: unkeyed).
func auditBed(t *testing.T, key []byte) (dir, cfg string, a *audit.SQLite) {
	t.Helper()
	dir, cfg = writeStoreConfig(t)
	a, err := audit.OpenSQLite(context.Background(), filepath.Join(dir, "conduit.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return dir, cfg, a
}

var auditT0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// seedAudit appends the story of two packages.
func seedAudit(t *testing.T, a *audit.SQLite) {
	t.Helper()
	for i, e := range []audit.Event{
		{Kind: audit.Received, Package: "pkg-4f2a", Actor: "pio@northshire-pio.example"},
		{Kind: audit.Redirected, Package: "pkg-4f2a", Destination: "ne-ccu", Rule: "governor-to-regional-ccu", Detail: "the governing governor is a subject"},
		{Kind: audit.Sealed, Package: "pkg-4f2a", Destination: "ne-ccu"},
		{Kind: audit.Queued, Package: "pkg-4f2a", Destination: "ne-ccu"},
		{Kind: audit.Refused, Package: "pkg-77b0", Rule: "handling-code", Detail: "handling 4 never leaves the originating agency"},
		{Kind: audit.Sent, Package: "pkg-4f2a", Destination: "ne-ccu", Detail: "250 2.0.0 queued as 91AC"},
	} {
		e.Agency = "northshire-pio"
		e.Time = auditT0.Add(time.Duration(i) * time.Hour)
		if _, err := a.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
}

// tamper runs SQL on the database as someone with the file would, after
// dropping the append-only triggers.
func tamper(t *testing.T, dir string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, "conduit.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	stmts = append([]string{`DROP TRIGGER IF EXISTS audit_events_no_update`, `DROP TRIGGER IF EXISTS audit_events_no_delete`}, stmts...)
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func TestAuditVerifyIntact(t *testing.T) {
	dir, cfg, a := auditBed(t, nil)
	seedAudit(t, a)
	out := mustRun(t, dir, nil, nil, conduitBin, "audit", "verify", "--config", cfg)
	if !strings.HasPrefix(out, "6 entries, chain intact\n") || !strings.Contains(out, "head: entry 6, hash ") {
		t.Fatalf("verify: %q", out)
	}
}

func TestAuditVerifyNamesTheBadEntry(t *testing.T) {
	for _, c := range []struct {
		name  string
		stmts []string
		want  string
	}{
		{"edited", []string{`UPDATE audit_events SET rule = 'no-rule' WHERE seq = 2`}, "entry 2: edited"},
		{"deleted", []string{`DELETE FROM audit_events WHERE seq = 3`}, "entry 3: deleted"},
		{"reordered", []string{
			`UPDATE audit_events SET seq = -1 WHERE seq = 4`,
			`UPDATE audit_events SET seq = 4 WHERE seq = 5`,
			`UPDATE audit_events SET seq = 5 WHERE seq = -1`,
		}, "entry 4: reordered"},
		{"truncated", []string{`DELETE FROM audit_events WHERE seq = 6`}, "entry 6: deleted"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir, cfg, a := auditBed(t, nil)
			seedAudit(t, a)
			tamper(t, dir, c.stmts...)
			r := run(t, dir, nil, nil, conduitBin, "audit", "verify", "--config", cfg)
			if r.code != exitCheck || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("verify: exit %d, stdout %q, stderr %q; want exit %d naming %q", r.code, r.stdout, r.stderr, exitCheck, c.want)
			}
			t.Logf("%s", strings.TrimSpace(r.stderr))
		})
	}
}

func TestAuditVerifyWithKey(t *testing.T) {
	key := []byte("k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y")
	dir, cfg, a := auditBed(t, key)
	seedAudit(t, a)
	keyFile := filepath.Join(dir, "audit.key")
	if err := os.WriteFile(keyFile, append(key, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, dir, nil, nil, conduitBin, "audit", "verify", "--config", cfg, "--key-file", keyFile)
	if !strings.HasPrefix(out, "6 entries, chain intact\n") || !strings.Contains(out, "(keyed)") {
		t.Fatalf("verify: %q", out)
	}
	// The key from the environment.
	out = mustRun(t, dir, []string{"CONDUIT_AUDIT_KEY_FILE=" + keyFile}, nil, conduitBin, "audit", "verify", "--config", cfg)
	if !strings.HasPrefix(out, "6 entries, chain intact\n") {
		t.Fatalf("verify: %q", out)
	}
	// The key the gateway's config names (store.audit-key-file).
	src, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	keyedCfg := filepath.Join(dir, "keyed.yaml")
	if err := os.WriteFile(keyedCfg, []byte(strings.Replace(string(src), "store: {path: conduit.db}", "store: {path: conduit.db, audit-key-file: audit.key}", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out = mustRun(t, dir, nil, nil, conduitBin, "audit", "verify", "--config", keyedCfg)
	if !strings.HasPrefix(out, "6 entries, chain intact\n") {
		t.Fatalf("verify with the config's key: %q", out)
	}
	// Without the key: a usage error that says what is needed.
	r := run(t, dir, nil, nil, conduitBin, "audit", "verify", "--config", cfg)
	if r.code != exitUsage || !strings.Contains(r.stderr, "keyed") {
		t.Fatalf("verify without the key: exit %d, %q", r.code, r.stderr)
	}
	// The wrong key: the chain is not proven.
	other := filepath.Join(dir, "other.key")
	if err := os.WriteFile(other, []byte("another-key-another-key"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = run(t, dir, nil, nil, conduitBin, "audit", "verify", "--config", cfg, "--key-file", other)
	if r.code != exitCheck || strings.Contains(r.stderr, "another-key") {
		t.Fatalf("verify with another key: exit %d, %q", r.code, r.stderr)
	}
	// A world-readable key file is refused.
	if err := os.Chmod(other, 0o644); err != nil {
		t.Fatal(err)
	}
	r = run(t, dir, nil, nil, conduitBin, "audit", "verify", "--config", cfg, "--key-file", other)
	if r.code != exitUsage || !strings.Contains(r.stderr, "chmod 600") {
		t.Fatalf("verify with a readable key file: exit %d, %q", r.code, r.stderr)
	}
	// An edit with the key file present is found.
	tamper(t, dir, `UPDATE audit_events SET detail = 'nothing to see' WHERE seq = 5`)
	r = run(t, dir, nil, nil, conduitBin, "audit", "verify", "--config", cfg, "--key-file", keyFile)
	if r.code != exitCheck || !strings.Contains(r.stderr, "entry 5: edited") {
		t.Fatalf("verify after an edit: exit %d, %q", r.code, r.stderr)
	}
}

func TestAuditQuery(t *testing.T) {
	dir, cfg, a := auditBed(t, nil)
	seedAudit(t, a)
	out := mustRun(t, dir, nil, nil, conduitBin, "audit", "query", "--config", cfg, "--package", "pkg-4f2a")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 6 || !strings.HasPrefix(lines[0], "SEQ") || !strings.Contains(lines[2], "governor-to-regional-ccu") || strings.Contains(out, "pkg-77b0") {
		t.Fatalf("query --package:\n%s", out)
	}
	out = mustRun(t, dir, nil, nil, conduitBin, "audit", "query", "--config", cfg, "--rule", "handling-code")
	if !strings.Contains(out, "pkg-77b0") || strings.Count(out, "\n") != 2 {
		t.Fatalf("query --rule:\n%s", out)
	}
	out = mustRun(t, dir, nil, nil, conduitBin, "audit", "query", "--config", cfg, "--since", auditT0.Add(4*time.Hour).Format(time.RFC3339), "--json")
	var seqs []int64
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var e audit.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		seqs = append(seqs, e.Seq)
	}
	if fmt.Sprint(seqs) != "[5 6]" {
		t.Fatalf("query --since --json: %v\n%s", seqs, out)
	}
	for _, args := range [][]string{
		{"--since", "last tuesday"},
		{"--kind", "exploded"},
		{}, // no filter
	} {
		r := run(t, dir, nil, nil, conduitBin, append([]string{"audit", "query", "--config", cfg}, args...)...)
		if r.code != exitUsage {
			t.Errorf("query %v: exit %d, %q", args, r.code, r.stderr)
		}
	}
}

func TestAuditExport(t *testing.T) {
	dir, cfg, a := auditBed(t, nil)
	seedAudit(t, a)
	out := mustRun(t, dir, nil, nil, conduitBin, "audit", "export", "--config", cfg)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 6 {
		t.Fatalf("export: %d lines\n%s", len(lines), out)
	}
	var e audit.Event
	if err := json.Unmarshal([]byte(lines[5]), &e); err != nil || e.Seq != 6 || e.Kind != audit.Sent || len(e.Hash) != audit.HashSize {
		t.Fatalf("last line %q: %+v %v", lines[5], e, err)
	}
	// The export verifies on its own, to the database's head; an edited
	// copy does not.
	file := filepath.Join(dir, "events.jsonl")
	if err := os.WriteFile(file, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	dbHead := mustRun(t, dir, nil, nil, conduitBin, "audit", "verify", "--config", cfg)
	fileHead := mustRun(t, dir, nil, nil, conduitBin, "audit", "verify", "--config", cfg, "--file", file)
	if fileHead != dbHead {
		t.Fatalf("verify --file: %q, database: %q", fileHead, dbHead)
	}
	edited := strings.Replace(out, "handling 4 never leaves", "handling 1 may leave", 1)
	r := run(t, dir, nil, []byte(edited), conduitBin, "audit", "verify", "--config", cfg, "--file", "-")
	if r.code != exitCheck || !strings.Contains(r.stderr, "entry 5: edited") {
		t.Fatalf("verify --file of an edited export: exit %d, %q", r.code, r.stderr)
	}
	out = mustRun(t, dir, nil, nil, conduitBin, "audit", "export", "--config", cfg, "--since", "2026-11-23T13:00:00Z")
	if n := strings.Count(out, "\n"); n != 3 {
		t.Fatalf("export --since: %d lines\n%s", n, out)
	}
	out = mustRun(t, dir, nil, nil, conduitBin, "audit", "export", "--config", cfg, "--after-seq", "4")
	if n := strings.Count(out, "\n"); n != 2 {
		t.Fatalf("export --after-seq: %d lines\n%s", n, out)
	}
}

func TestAuditRefusesMissingDatabase(t *testing.T) {
	dir, cfg, _ := auditBed(t, nil)
	if err := os.Remove(filepath.Join(dir, "conduit.db")); err != nil {
		t.Fatal(err)
	}
	r := run(t, dir, nil, nil, conduitBin, "audit", "verify", "--config", cfg)
	if r.code == 0 || !strings.Contains(r.stderr, "no database") {
		t.Fatalf("verify without a database: exit %d, %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "conduit.db")); err == nil {
		t.Fatalf("verify created a database")
	}
}
