package main

// The queue and quarantine commands, driven through the built binary on a
// database seeded with the store's own API.

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/conduit-gateway/conduit/gateway/store"
)

// writeStoreConfig writes a gateway config in a new folder: the example
// directory and policy, and a database beside the config (not created).
func writeStoreConfig(t *testing.T) (dir, cfg string) {
	t.Helper()
	dir = t.TempDir()
	abs := func(p string) string {
		a, err := filepath.Abs(filepath.Join("..", "..", "examples", p))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	cfg = filepath.Join(dir, "conduit.yaml")
	src := "agency: northshire-pio\n" +
		"directory: " + strconv.Quote(abs("directory.yaml")) + "\n" +
		"policy: " + strconv.Quote(abs("policy.yaml")) + "\n" +
		"store: {path: conduit.db}\n"
	if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

// storeBed writes a gateway config (the example directory and policy, a
// database beside the config) and opens the store it names.
func storeBed(t *testing.T) (dir, cfg string, st *store.SQLite) {
	t.Helper()
	dir, cfg = writeStoreConfig(t)
	st, err := store.OpenSQLite(context.Background(), filepath.Join(dir, "conduit.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return dir, cfg, st
}

const envelopeMarker = "ENVELOPE-BYTES-MUST-NOT-SHOW"

func seedQueue(t *testing.T, st *store.SQLite) []int64 {
	t.Helper()
	var items []store.Item
	for _, d := range []string{"hmp-northgate", "ne-ccu"} {
		items = append(items, store.Item{
			PackageID: "pkg-4f2a", Destination: d, Recipients: []string{"pio@" + d + ".example"},
			MailFrom: "conduit@northshire-pio.example", Submitter: "pio@northshire-pio.example",
			Marking: "OFFICIAL-SENSITIVE", Envelope: []byte("-----BEGIN PGP MESSAGE-----\n" + envelopeMarker + "\n"),
		})
	}
	ids, err := st.Enqueue(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestQueueListShowsItemsWithoutTheirEnvelopes(t *testing.T) {
	dir, cfg, st := storeBed(t)
	ids := seedQueue(t, st)
	out := mustRun(t, dir, nil, nil, conduitBin, "queue", "list", "--config", cfg)
	for _, want := range []string{"pkg-4f2a", "hmp-northgate", "ne-ccu", "queued", "OFFICIAL-SENSITIVE", "DESTINATION"} {
		if !strings.Contains(out, want) {
			t.Errorf("queue list lacks %q:\n%s", want, out)
		}
	}
	var l []itemJSON
	js := mustRun(t, dir, nil, nil, conduitBin, "queue", "list", "--config", cfg, "--destination", "ne-ccu", "--json")
	if err := json.Unmarshal([]byte(js), &l); err != nil {
		t.Fatalf("list --json is not one JSON document: %v\n%s", err, js)
	}
	if len(l) != 1 || l[0].ID != ids[1] || l[0].State != "queued" || l[0].Size == 0 {
		t.Fatalf("list --json --destination ne-ccu: %+v", l)
	}
	show := mustRun(t, dir, nil, nil, conduitBin, "queue", "show", "--config", cfg, strconv.FormatInt(ids[0], 10))
	showJSON := mustRun(t, dir, nil, nil, conduitBin, "queue", "show", "--json", "--config", cfg, strconv.FormatInt(ids[0], 10))
	for _, o := range []string{out, js, show, showJSON} {
		if strings.Contains(o, envelopeMarker) {
			t.Fatalf("envelope bytes printed without --raw:\n%s", o)
		}
	}
	if !strings.Contains(show, "hmp-northgate") || !strings.Contains(show, "pio@hmp-northgate.example") {
		t.Errorf("queue show:\n%s", show)
	}
	raw := mustRun(t, dir, nil, nil, conduitBin, "queue", "show", "--raw", "--config", cfg, strconv.FormatInt(ids[0], 10))
	if !strings.Contains(raw, envelopeMarker) || strings.Contains(raw, "destination") {
		t.Errorf("queue show --raw wrote %q, want the envelope alone", raw)
	}
}

func TestQueueDropNeedsAReason(t *testing.T) {
	dir, cfg, st := storeBed(t)
	ids := seedQueue(t, st)
	id := strconv.FormatInt(ids[0], 10)
	for _, args := range [][]string{{"drop", id}, {"drop", id, "--reason", "  "}} {
		r := run(t, dir, nil, nil, conduitBin, append([]string{"queue", "--config", cfg}, args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, "--reason") {
			t.Fatalf("drop %v: exit %d, stderr %q; want a refusal naming --reason", args, r.code, r.stderr)
		}
	}
	it, err := st.Get(context.Background(), ids[0])
	if err != nil || it.State != store.Queued {
		t.Fatalf("after refused drops: %v, state %s", err, it.State)
	}
}

func TestQueueDropWithAReasonDropsAndSaysSo(t *testing.T) {
	dir, cfg, st := storeBed(t)
	ids := seedQueue(t, st)
	id := strconv.FormatInt(ids[0], 10)
	out := mustRun(t, dir, nil, nil, conduitBin, "queue", "drop", id, "--config", cfg, "--reason", "sent to the wrong unit")
	if !strings.Contains(out, "dropped queue item "+id) || !strings.Contains(out, "sent to the wrong unit") {
		t.Errorf("drop printed %q", out)
	}
	list := mustRun(t, dir, nil, nil, conduitBin, "queue", "list", "--config", cfg, "--state", "dropped")
	if !strings.Contains(list, "dropped") || !strings.Contains(list, "sent to the wrong unit") || strings.Contains(list, "ne-ccu") {
		t.Errorf("list --state dropped:\n%s", list)
	}
	it, err := st.Get(context.Background(), ids[0])
	if err != nil || it.State != store.Dropped || !strings.HasSuffix(it.Reason, ": sent to the wrong unit") {
		t.Fatalf("stored: %v %s %q", err, it.State, it.Reason)
	}
	// Dropping again is refused: it is no longer queued.
	r := run(t, dir, nil, nil, conduitBin, "queue", "drop", id, "--config", cfg, "--reason", "again")
	if r.code == 0 || !strings.Contains(r.stderr, "dropped") {
		t.Errorf("second drop: exit %d, %q", r.code, r.stderr)
	}
}

func TestQueueRetryAndUnknownIDs(t *testing.T) {
	dir, cfg, st := storeBed(t)
	ids := seedQueue(t, st)
	ctx := context.Background()
	if err := st.MarkFailed(ctx, ids[1], "maximum age reached"); err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, dir, nil, nil, conduitBin, "queue", "retry", strconv.FormatInt(ids[1], 10), "--config", cfg)
	if !strings.Contains(out, "due now") {
		t.Errorf("retry printed %q", out)
	}
	if it, _ := st.Get(ctx, ids[1]); it.State != store.Queued {
		t.Fatalf("after retry: %s", it.State)
	}
	for _, args := range [][]string{
		{"queue", "show", "999"}, {"queue", "retry", "999"}, {"queue", "drop", "999", "--reason", "x"},
		{"quarantine", "show", "999"}, {"quarantine", "purge", "999", "--reason", "x"},
	} {
		r := run(t, dir, nil, nil, conduitBin, append(args, "--config", cfg)...)
		if r.code == 0 || !strings.Contains(r.stderr, "999 does not exist") {
			t.Errorf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	r := run(t, dir, nil, nil, conduitBin, "queue", "show", "abc", "--config", cfg)
	if r.code != exitUsage {
		t.Errorf("show abc: exit %d, %q", r.code, r.stderr)
	}
}

func TestStoreCommandsDoNotCreateADatabase(t *testing.T) {
	dir, cfg, st := storeBed(t)
	st.Close()
	for _, f := range []string{"conduit.db", "conduit.db-wal", "conduit.db-shm"} {
		os.Remove(filepath.Join(dir, f))
	}
	r := run(t, dir, nil, nil, conduitBin, "queue", "list", "--config", cfg)
	if r.code == 0 || !strings.Contains(r.stderr, "no database") {
		t.Fatalf("list without a database: exit %d, %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "conduit.db")); err == nil {
		t.Fatal("queue list created a database")
	}
}

func TestQuarantinePurgeDestroysTheMessage(t *testing.T) {
	dir, cfg, st := storeBed(t)
	ctx := context.Background()
	raw := []byte("Received: from gw.rpiu.example\r\nSubject: x\r\n\r\nQUARANTINED-BYTES\r\n")
	id, err := st.Quarantine(ctx, store.QItem{RemoteAddr: "127.0.0.1:40001", Helo: "gw.rpiu.example",
		MailFrom: "conduit@rpiu.example", Recipients: []string{"pio@northshire-pio.example"},
		Check: "tampered", Reason: "the signature does not verify", PackageID: "pkg-9", Raw: raw})
	if err != nil {
		t.Fatal(err)
	}
	sid := strconv.FormatInt(id, 10)
	list := mustRun(t, dir, nil, nil, conduitBin, "quarantine", "list", "--config", cfg)
	show := mustRun(t, dir, nil, nil, conduitBin, "quarantine", "show", sid, "--config", cfg)
	for _, o := range []string{list, show} {
		if !strings.Contains(o, "tampered") || !strings.Contains(o, "held") || bytes.Contains([]byte(o), []byte("QUARANTINED-BYTES")) {
			t.Fatalf("quarantine list/show:\n%s", o)
		}
	}
	if got := mustRun(t, dir, nil, nil, conduitBin, "quarantine", "show", sid, "--raw", "--config", cfg); got != string(raw) {
		t.Fatalf("show --raw: %q", got)
	}
	r := run(t, dir, nil, nil, conduitBin, "quarantine", "purge", sid, "--config", cfg)
	if r.code == 0 || !strings.Contains(r.stderr, "--reason") {
		t.Fatalf("purge without reason: exit %d, %q", r.code, r.stderr)
	}
	out := mustRun(t, dir, nil, nil, conduitBin, "quarantine", "purge", sid, "--config", cfg, "--reason", "junk from a test peer")
	if !strings.Contains(out, "purged quarantined message "+sid) {
		t.Errorf("purge printed %q", out)
	}
	r = run(t, dir, nil, nil, conduitBin, "quarantine", "show", sid, "--raw", "--config", cfg)
	if r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, "purged") {
		t.Fatalf("show --raw after purge: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	q, err := st.GetQuarantine(ctx, id)
	if err != nil || q.State != store.Purged || q.Raw != nil || q.Check != "tampered" || !strings.Contains(q.Note, "junk from a test peer") {
		t.Fatalf("after purge: %v %+v", err, q)
	}
	var l []qItemJSON
	js := mustRun(t, dir, nil, nil, conduitBin, "quarantine", "list", "--state", "purged", "--json", "--config", cfg)
	if err := json.Unmarshal([]byte(js), &l); err != nil || len(l) != 1 || l[0].State != "purged" || l[0].Size != int64(len(raw)) {
		t.Fatalf("list --state purged --json: %v %s", err, js)
	}
}

func TestQuarantineReleaseMarksItReleased(t *testing.T) {
	dir, cfg, st := storeBed(t)
	ctx := context.Background()
	id, err := st.Quarantine(ctx, store.QItem{Check: "signer-not-pinned", Reason: "unknown signer", Raw: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	sid := strconv.FormatInt(id, 10)
	r := run(t, dir, nil, nil, conduitBin, "quarantine", "release", sid, "--config", cfg)
	if r.code == 0 || !strings.Contains(r.stderr, "--reason") {
		t.Fatalf("release without reason: exit %d, %q", r.code, r.stderr)
	}
	out := mustRun(t, dir, nil, nil, conduitBin, "quarantine", "release", sid, "--config", cfg, "--reason", "certificate pinned")
	if !strings.Contains(out, "re-process") {
		t.Errorf("release printed %q", out)
	}
	l := mustRun(t, dir, nil, nil, conduitBin, "quarantine", "list", "--state", "released", "--config", cfg)
	if !strings.Contains(l, "signer-not-pinned") || !strings.Contains(l, "certificate pinned") {
		t.Errorf("list --state released:\n%s", l)
	}
	r = run(t, dir, nil, nil, conduitBin, "quarantine", "release", sid, "--config", cfg, "--reason", "again")
	if r.code == 0 {
		t.Errorf("second release succeeded: %q", r.stdout)
	}
}
