package receipts

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/examples"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
)

// partners are the identities of the test: the prison's gateway seals
// receipts for the police and the CCU.
type partners struct {
	ids map[string]*keys.Identity
}

func newPartners(t *testing.T) *partners {
	t.Helper()
	p := &partners{ids: map[string]*keys.Identity{}}
	for _, a := range []string{"hmp-northgate", "northshire-pio", "ccu-national"} {
		id, err := keys.Generate(a, "conduit@"+a+".example", keys.ProfileRFC4880, time.Now())
		tcheck(t, err, "generate "+a)
		p.ids[a] = id
	}
	return p
}

func (p *partners) Ready(context.Context) error { return nil }
func (p *partners) Identity() *keys.Identity    { return p.ids["hmp-northgate"] }
func (p *partners) SealTarget(a string) (*keys.Cert, string, bool) {
	id, ok := p.ids[a]
	if !ok {
		return nil, "", false
	}
	c, err := id.Public()
	return c, "", err == nil
}

// open opens a receipt envelope as its destination does: every check.
func (p *partners) open(t *testing.T, to string, env []byte) (*envelope.Opened, []Body) {
	t.Helper()
	ps := keys.NewPartners()
	c, err := p.ids["hmp-northgate"].Public()
	tcheck(t, err, "public")
	tcheck(t, ps.Add(c, "hmp-northgate", ""), "pin")
	var out bytes.Buffer
	o, err := envelope.Open(context.Background(), &out, bytes.NewReader(env), envelope.OpenParams{Identity: p.ids[to], Partners: ps, Now: time.Now})
	tcheck(t, err, "open the receipt")
	_, body, _ := bytes.Cut(out.Bytes(), []byte("\r\n\r\n"))
	bs, err := Decode(body)
	tcheck(t, err, "decode the receipt")
	return o, bs
}

func tcheck(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func testBatcher(t *testing.T, st store.Store, p *partners, gather time.Duration, most int) *Batcher {
	t.Helper()
	d, err := config.LoadDirectory("directory.yaml", examples.Directory)
	tcheck(t, err, "directory")
	return New(Options{Agency: "hmp-northgate", Directory: d, Hostname: "hmp-northgate.example", Gather: gather, Most: most,
		Store: st, Keys: p, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now})
}

func openStore(t *testing.T, path string) *store.SQLite {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), path)
	tcheck(t, err, "open store")
	t.Cleanup(func() { st.Close() })
	return st
}

// pending records receipts as the delivery transaction does.
func pending(t *testing.T, st store.Store, originator, label string, pkgs ...string) {
	t.Helper()
	l, err := envelope.ParseLabel(strings.Replace(label, "northshire-pio", originator, 1))
	tcheck(t, err, "label")
	tcheck(t, st.Update(context.Background(), func(tx store.Tx) error {
		for i, pkg := range pkgs {
			l.Reference = "REF-" + pkg
			if err := tx.AddPendingReceipt(store.PendingReceipt{Originator: originator, PackageID: pkg, Label: l.Canonical(), Group: Group(l),
				Mailboxes: []string{"intel@hmp-northgate.example"}, Delivered: time.Now().UTC().Add(time.Duration(i))}); err != nil {
				return err
			}
		}
		return nil
	}), "record pending receipts")
}

// runUntil runs the batcher until the queue holds n items, and returns them.
func runUntil(t *testing.T, b *Batcher, st store.Store, n int) []store.Item {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		items, err := st.List(context.Background(), store.Filter{})
		tcheck(t, err, "list")
		if len(items) >= n {
			return items
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d items queued; want %d", len(items), n)
		}
		b.Nudge()
		time.Sleep(20 * time.Millisecond)
	}
}

func pkgNames(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, prefix+strings.Repeat("x", 3)+string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	return out
}

func TestManyReceiptsToOnePartnerShareOneEnvelopePerLabel(t *testing.T) {
	p := newPartners(t)
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"))
	police := pkgNames("cdt-p", 30)
	pending(t, st, "northshire-pio", baseLabel, police...)
	pending(t, st, "northshire-pio", strings.Replace(baseLabel, "OFFICIAL-SENSITIVE", "OFFICIAL", 1), "cdt-o1", "cdt-o2")
	pending(t, st, "ccu-national", baseLabel, "cdt-c1")
	items := runUntil(t, testBatcher(t, st, p, 50*time.Millisecond, 200), st, 3)
	if len(items) != 3 {
		t.Fatalf("%d envelopes for 33 receipts in 3 groups; want 3", len(items))
	}
	for _, c := range []struct {
		id, to, marking string
		pkgs            []string
	}{
		{BatchID(police[0]), "northshire-pio", "OFFICIAL-SENSITIVE", police},
		{BatchID("cdt-o1"), "northshire-pio", "OFFICIAL", []string{"cdt-o1", "cdt-o2"}},
		{store.ReceiptID("cdt-c1"), "ccu-national", "OFFICIAL-SENSITIVE", []string{"cdt-c1"}},
	} {
		its, err := st.List(context.Background(), store.Filter{PackageID: c.id, Destination: c.to})
		tcheck(t, err, "list")
		if len(its) != 1 {
			t.Fatalf("no item %s for %s: %d", c.id, c.to, len(its))
		}
		it, err := st.Get(context.Background(), its[0].ID)
		tcheck(t, err, "get")
		o, bs := p.open(t, c.to, it.Envelope)
		if o.Label.Originator != "hmp-northgate" || o.Label.Marking() != c.marking || it.Marking != c.marking || o.Manifest.Kind != envelope.KindReceipt {
			t.Errorf("%s: label %s, item marking %s, kind %s", c.id, o.Label.Canonical(), it.Marking, o.Manifest.Kind)
		}
		if len(c.pkgs) == 1 && o.Label.Reference != "REF-"+c.pkgs[0] {
			t.Errorf("a receipt alone carries its package's own label; reference %s", o.Label.Reference)
		}
		var got []string
		for _, b := range bs {
			got = append(got, b.Package)
			if b.Agency != "hmp-northgate" || len(b.Mailboxes) != 1 || b.Delivered.IsZero() {
				t.Errorf("entry %+v", b)
			}
		}
		if strings.Join(got, ",") != strings.Join(c.pkgs, ",") {
			t.Errorf("%s lists %v; want %v", c.id, got, c.pkgs)
		}
	}
	if rest, wait, err := st.ClaimReceipts(context.Background(), 0, 10, time.Minute); err != nil || len(rest) != 0 || wait != 0 {
		t.Fatalf("pending receipts left: %d, wait %s, %v", len(rest), wait, err)
	}
}

func TestABatchHoldsAtMostTheConfiguredNumber(t *testing.T) {
	p := newPartners(t)
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"))
	pending(t, st, "northshire-pio", baseLabel, pkgNames("cdt-p", 5)...)
	runUntil(t, testBatcher(t, st, p, time.Hour, 2), st, 2)
	// Two full batches go at once, without waiting out the gathering
	// time; the fifth waits for it (an hour here).
	time.Sleep(100 * time.Millisecond)
	items, err := st.List(context.Background(), store.Filter{})
	tcheck(t, err, "list")
	if len(items) != 2 {
		t.Fatalf("%d envelopes; want the 2 full batches", len(items))
	}
	rest, wait, err := st.ClaimReceipts(context.Background(), time.Hour, 2, time.Minute)
	if err != nil || len(rest) != 0 || wait <= 0 {
		t.Fatalf("the fifth receipt: claimed %d, wait %s, %v; want it waiting", len(rest), wait, err)
	}
}

// TestPendingReceiptsSurviveACrashBeforeTheirBatch: the gateway died
// after recording deliveries (their receipts pending) and before its
// batcher queued them; the restarted gateway sends them. A batcher that
// died holding the lease is the store suite's (PendingReceiptsLease).
func TestPendingReceiptsSurviveACrashBeforeTheirBatch(t *testing.T) {
	p := newPartners(t)
	path := filepath.Join(t.TempDir(), "s.db")
	first, err := store.OpenSQLite(context.Background(), path)
	tcheck(t, err, "open")
	pending(t, first, "northshire-pio", baseLabel, "cdt-a", "cdt-b", "cdt-c")
	first.Close() // the process is gone; nothing else was written
	st := openStore(t, path)
	items := runUntil(t, testBatcher(t, st, p, 10*time.Millisecond, 200), st, 1)
	it, err := st.Get(context.Background(), items[0].ID)
	tcheck(t, err, "get")
	if _, bs := p.open(t, "northshire-pio", it.Envelope); len(bs) != 3 {
		t.Fatalf("the restarted gateway's receipt lists %d packages; want 3", len(bs))
	}
}
