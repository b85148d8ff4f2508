package main

// End-to-end tests of the key lifecycle across real gateway processes: a rotation during traffic loses nothing; a partner's
// new key waits for an administrator and nothing is sealed to it before;
// an expired partner key holds delivery with its reason, and the held
// package goes once a usable key is approved.

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/testbed"
)

// sealedTo reads the key ids the newest queue item of a package at a
// gateway is encrypted to.
func sealedTo(t *testing.T, b *testbed.Bed, agency, pkg, dest string) []uint64 {
	t.Helper()
	ctx := context.Background()
	st, err := b.OpenStore(ctx, agency)
	tcheck(t, err, "open store")
	defer st.Close()
	items, err := st.List(ctx, store.Filter{PackageID: pkg, Destination: dest})
	if err != nil || len(items) != 1 {
		t.Fatalf("queue item of %s for %s at %s: %d items, %v", pkg, dest, agency, len(items), err)
	}
	it, err := st.Get(ctx, items[0].ID)
	tcheck(t, err, "get item")
	ids, err := envelope.RecipientKeyIDs(ctx, bytes.NewReader(it.Envelope))
	tcheck(t, err, "recipients")
	return ids
}

// writeCert writes a certificate file, as a partner would send it.
func writeCert(t *testing.T, id *keys.Identity) string {
	t.Helper()
	var buf bytes.Buffer
	tcheck(t, keys.WritePublic(&buf, id.Entity), "write cert")
	path := filepath.Join(t.TempDir(), id.Agency+"-"+id.Fingerprint()[:8]+".pub.asc")
	tcheck(t, os.WriteFile(path, buf.Bytes(), 0o644), "write cert")
	return path
}

// switchKey makes a stopped agency's gateway use a new key: its own copy
// of the directory pins the new fingerprint, while its partners' copies
// still pin the old one until their administrators approve the change.
func switchKey(t *testing.T, b *testbed.Bed, agency string, nid *keys.Identity) {
	t.Helper()
	n := b.Nodes[agency]
	old := bedIdentity(t, b, agency)
	var sec bytes.Buffer
	tcheck(t, nid.WriteSecret(&sec, nil), "secret")
	tcheck(t, os.WriteFile(filepath.Join(n.Dir, "keys", agency+".key"), sec.Bytes(), 0o600), "write key")
	dir, err := os.ReadFile(filepath.Join(b.Dir, "directory.yaml"))
	tcheck(t, err, "read directory")
	if !bytes.Contains(dir, []byte(old.Fingerprint())) {
		t.Fatalf("the directory does not pin %s", old.Fingerprint())
	}
	tcheck(t, os.WriteFile(filepath.Join(n.Dir, "directory.yaml"), bytes.ReplaceAll(dir, []byte(old.Fingerprint()), []byte(nid.Fingerprint())), 0o644), "own directory")
	cfg, err := os.ReadFile(n.Config)
	tcheck(t, err, "read config")
	tcheck(t, os.WriteFile(n.Config, bytes.Replace(cfg, []byte("directory: ../directory.yaml"), []byte("directory: directory.yaml"), 1), 0o600), "config")
}

// keyOfIs waits until `conduit keys list` at a gateway shows agency's key
// in force with the fingerprint and number of subkeys wanted.
func keyOfIs(t *testing.T, b *testbed.Bed, at, agency, fp string, subkeys string) bool {
	t.Helper()
	return testbed.WaitFor(context.Background(), 20*time.Second, func() bool {
		out := run(t, b.Dir, nil, nil, conduitBin, "keys", "list", "--config", b.Nodes[at].Config).stdout
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == agency && f[1] == fp && f[2] == subkeys {
				return true
			}
		}
		return false
	})
}

func TestKeyRotationDuringTrafficLosesNothing(t *testing.T) {
	b := newBed(t, testbed.Options{}, "northshire-pio", "hmp-northgate", "rpiu-north-east")
	ctx := context.Background()
	to := mailboxOf(t, b, "hmp-northgate")
	ng := b.Nodes["hmp-northgate"]
	before := bedIdentity(t, b, "hmp-northgate")

	const n = 24
	var mu sync.Mutex
	var pkgs []string
	submitted := make(chan int, n)
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			resp, err := b.Submit(ctx, "northshire-pio", []string{to}, e2eMessage(e2eLabel, "Rotation traffic", "Conduit-Topic: corruption"))
			if err != nil {
				errc <- err
				return
			}
			mu.Lock()
			pkgs = append(pkgs, packageIDRE.FindString(resp))
			mu.Unlock()
			submitted <- i
			time.Sleep(40 * time.Millisecond)
		}
		errc <- nil
	}()
	for i := range submitted {
		if i == n/3 {
			break
		}
	}
	// The prison's administrator rotates while packages are in flight.
	out := mustRun(t, b.Dir, nil, nil, conduitBin, "keys", "rotate", "--config", ng.Config)
	if !strings.Contains(out, "2 encryption subkeys kept") || !strings.Contains(out, "sent SIGHUP") {
		t.Fatalf("keys rotate:\n%s", out)
	}
	tcheck(t, <-errc, "submit")
	rotated := bedIdentity(t, b, "hmp-northgate")
	if rotated.Fingerprint() != before.Fingerprint() || len(rotated.Entity.Subkeys) != 2 {
		t.Fatalf("after rotation: %s with %d subkeys", rotated.Fingerprint(), len(rotated.Entity.Subkeys))
	}
	// The PIO's gateway takes the update the pinned key signed, without an
	// administrator.
	if !keyOfIs(t, b, "northshire-pio", "hmp-northgate", before.Fingerprint(), "2") {
		t.Fatalf("the sender never took the rotated certificate:\n%s\n%s", b.Tail("hmp-northgate", 10), b.Tail("northshire-pio", 10))
	}
	resp, err := b.Submit(ctx, "northshire-pio", []string{to}, e2eMessage(e2eLabel, "After the rotation", "Conduit-Topic: corruption"))
	tcheck(t, err, "submit after")
	last := packageOf(t, resp)
	pkgs = append(pkgs, last)

	if !testbed.WaitFor(ctx, 60*time.Second, func() bool {
		got, _ := deliveredByPackage(b, "hmp-northgate")
		return !slices.ContainsFunc(pkgs, func(p string) bool { return got[p] == 0 })
	}) {
		got, _ := deliveredByPackage(b, "hmp-northgate")
		t.Fatalf("not every package delivered after the rotation: %v\n%s", got, b.Tail("hmp-northgate", 15))
	}
	if q, err := b.Quarantined(ctx, "hmp-northgate"); err != nil || len(q) != 0 {
		t.Fatalf("quarantined at the prison during the rotation: %d %v", len(q), err)
	}
	newSub := rotated.Entity.Subkeys[1].PublicKey.KeyId
	if ids := sealedTo(t, b, "northshire-pio", last, "hmp-northgate"); !slices.Contains(ids, newSub) {
		t.Errorf("the package after the rotation is sealed to %x, not the new subkey %x", ids, newSub)
	}
	if ids := sealedTo(t, b, "northshire-pio", pkgs[0], "hmp-northgate"); slices.Contains(ids, newSub) {
		t.Errorf("the first package is sealed to the new subkey, which did not exist yet")
	}
	q := mustRun(t, b.Dir, nil, nil, conduitBin, "audit", "query", "--rule", "update", "--config", b.Nodes["northshire-pio"].Config)
	if !strings.Contains(q, "signed by the key itself") {
		t.Errorf("the sender's audit trail does not show the key update:\n%s", q)
	}
}

func TestPartnerKeyChangeIsPendingUntilApproved(t *testing.T) {
	b := newBed(t, testbed.Options{}, "northshire-pio", "hmp-northgate", "rpiu-north-east")
	ctx := context.Background()
	pio := b.Nodes["northshire-pio"]
	old := bedIdentity(t, b, "hmp-northgate")
	to := mailboxOf(t, b, "hmp-northgate")

	// HMP Northgate's administrators made a new key (not a rotation: a new
	// primary key) and emailed the certificate.
	nid, err := keys.Generate("hmp-northgate", "conduit@hmp-northgate.example", keys.ProfileRFC4880, time.Now().Add(-time.Minute))
	tcheck(t, err, "generate")
	out := mustRun(t, b.Dir, nil, nil, conduitBin, "keys", "offer", writeCert(t, nid), "--config", pio.Config)
	if !strings.Contains(out, "is pending") {
		t.Fatalf("keys offer:\n%s", out)
	}
	pending := mustRun(t, b.Dir, nil, nil, conduitBin, "keys", "pending", "--config", pio.Config)
	if !strings.Contains(pending, nid.Fingerprint()) || !strings.Contains(pending, old.Fingerprint()) {
		t.Fatalf("keys pending does not show the change:\n%s", pending)
	}
	if q := mustRun(t, b.Dir, nil, nil, conduitBin, "audit", "query", "--rule", "pending", "--config", pio.Config); !strings.Contains(q, nid.Fingerprint()) {
		t.Errorf("the pending change is not in the audit trail:\n%s", q)
	}

	// Nothing is sealed to the new key while it is pending.
	resp, err := b.Submit(ctx, "northshire-pio", []string{to}, e2eMessage(e2eLabel, "While pending", "Conduit-Topic: corruption"))
	tcheck(t, err, "submit")
	p1 := packageOf(t, resp)
	if _, ok := waitQueue(t, b, "northshire-pio", p1, 20*time.Second, allSent); !ok {
		t.Fatal("the package to the pinned key was not sent")
	}
	for _, id := range sealedTo(t, b, "northshire-pio", p1, "hmp-northgate") {
		if keys.HasKeyID(nid.Entity, id) || !keys.HasKeyID(old.Entity, id) {
			t.Fatalf("a package was sealed to %x while the new key was pending", id)
		}
	}

	// A second, unexpected key is rejected and stays rejected.
	rogue, err := keys.Generate("hmp-northgate", "conduit@hmp-northgate.example", keys.ProfileRFC4880, time.Now())
	tcheck(t, err, "generate")
	roguePath := writeCert(t, rogue)
	mustRun(t, b.Dir, nil, nil, conduitBin, "keys", "offer", roguePath, "--config", pio.Config)
	r := run(t, b.Dir, nil, nil, conduitBin, "keys", "reject", "hmp-northgate", rogue.Fingerprint(), "--config", pio.Config)
	if r.code != exitUsage || !strings.Contains(r.stderr, "--reason") {
		t.Errorf("reject without a reason: exit %d %s", r.code, r.stderr)
	}
	mustRun(t, b.Dir, nil, nil, conduitBin, "keys", "reject", "hmp-northgate", rogue.Fingerprint(), "--reason", "Northgate knows nothing of it", "--config", pio.Config)
	if out := mustRun(t, b.Dir, nil, nil, conduitBin, "keys", "offer", roguePath, "--config", pio.Config); !strings.Contains(out, "is rejected") {
		t.Errorf("a rejected key offered again:\n%s", out)
	}

	// Northgate moves to its new key; the PIO's administrator checks the
	// fingerprint by phone and approves it.
	tcheck(t, b.Stop("hmp-northgate"), "stop")
	switchKey(t, b, "hmp-northgate", nid)
	tcheck(t, b.Start(ctx, "hmp-northgate"), "start with the new key")
	mustRun(t, b.Dir, nil, nil, conduitBin, "keys", "approve", "hmp-northgate", nid.Fingerprint(), "--reason", "fingerprint read back by the Northgate duty governor", "--config", pio.Config)
	if !keyOfIs(t, b, "northshire-pio", "hmp-northgate", nid.Fingerprint(), "1") {
		t.Fatal("the approved key is not in force at the sender")
	}
	resp, err = b.Submit(ctx, "northshire-pio", []string{to}, e2eMessage(e2eLabel, "After approval", "Conduit-Topic: corruption"))
	tcheck(t, err, "submit after approval")
	p2 := packageOf(t, resp)
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool { got, _ := deliveredByPackage(b, "hmp-northgate"); return got[p2] > 0 }) {
		t.Fatalf("not delivered to the new key:\n%s", b.Tail("hmp-northgate", 10))
	}
	if ids := sealedTo(t, b, "northshire-pio", p2, "hmp-northgate"); !slices.ContainsFunc(ids, func(id uint64) bool { return keys.HasKeyID(nid.Entity, id) }) {
		t.Errorf("after approval the package is sealed to %x, not the new key", ids)
	}
	q := mustRun(t, b.Dir, nil, nil, conduitBin, "audit", "query", "--rule", "approve", "--config", pio.Config)
	if !strings.Contains(q, nid.Fingerprint()) || !strings.Contains(q, "duty governor") {
		t.Errorf("the approval is not in the audit trail:\n%s", q)
	}
}

func readAll(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	tcheck(t, err, "read")
	return b
}

func TestExpiredPartnerKeyHoldsDeliveryWithItsReason(t *testing.T) {
	const admin = "keys-admin@northshire-pio.example"
	b, err := testbed.Create(t.TempDir(), conduitBin, testbed.Options{Policy: e2ePolicy(t), Extra: "alerts: {administrators: [" + admin + "]}\n"})
	tcheck(t, err, "bed")
	t.Cleanup(func() { b.StopAll(); noPlaintextAtRest(t, b, e2eBody, e2eSubjectID) })
	ctx := context.Background()
	// HMP Northgate's key is valid for two days: within the warning period.
	short, err := keys.GenerateFor("hmp-northgate", "conduit@hmp-northgate.example", keys.ProfileRFC4880, time.Now().Add(-time.Hour), 48*time.Hour)
	tcheck(t, err, "generate")
	old := bedIdentity(t, b, "hmp-northgate")
	switchKey(t, b, "hmp-northgate", short)
	dir := readAll(t, filepath.Join(b.Dir, "directory.yaml"))
	tcheck(t, os.WriteFile(filepath.Join(b.Dir, "directory.yaml"), bytes.ReplaceAll(dir, []byte(old.Fingerprint()), []byte(short.Fingerprint())), 0o644), "directory")
	tcheck(t, os.WriteFile(filepath.Join(b.Dir, "certs", "hmp-northgate.pub.asc"), readAll(t, writeCert(t, short)), 0o644), "cert")
	tcheck(t, b.StartAll(ctx, "northshire-pio", "hmp-northgate", "rpiu-north-east"), "start")
	pio := b.Nodes["northshire-pio"]

	// The warning: log, metric, mail to the administrators.
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool { return len(b.Delivered("northshire-pio", admin)) > 0 }) {
		t.Fatalf("no expiry warning mailed:\n%s", b.Tail("northshire-pio", 10))
	}
	warn := string(readAll(t, b.Delivered("northshire-pio", admin)[0]))
	if !strings.Contains(warn, short.Fingerprint()) || !strings.Contains(warn, "hmp-northgate") || !strings.Contains(warn, "expires on") {
		t.Errorf("expiry warning:\n%s", warn)
	}
	if !strings.Contains(readLog(t, pio.Log), "admin alert: key expiry") {
		t.Error("no expiry warning in the log")
	}
	res, err := http.Get("http://" + pio.Admin + "/metrics")
	tcheck(t, err, "metrics")
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), `conduit_key_expiry_seconds{agency="hmp-northgate"}`) {
		t.Error("no key expiry metric for the partner")
	}

	// Three days on, the key has expired: a package for Northgate is held
	// with the reason, sealed to the PIO gateway's own key; nothing is sent.
	for _, id := range []string{"northshire-pio", "hmp-northgate", "rpiu-north-east"} {
		tcheck(t, b.MoveClock(id, 72*time.Hour), "move clock")
	}
	resp, err := b.Submit(ctx, "northshire-pio", []string{mailboxOf(t, b, "hmp-northgate")}, e2eMessage(e2eLabel, "To an expired key", "Conduit-Topic: corruption"))
	tcheck(t, err, "submit")
	if !strings.Contains(resp, "held for hmp-northgate: its key cannot be used") {
		t.Errorf("the sender is not told of the hold: %s", resp)
	}
	pkg := packageOf(t, resp)
	time.Sleep(3 * time.Second) // a few relay rounds: it must stay held
	items, err := b.Queue(ctx, "northshire-pio", store.Filter{PackageID: pkg, Destination: "hmp-northgate"})
	if err != nil || len(items) != 1 || items[0].State != store.OnHold || items[0].Attempts != 0 ||
		!strings.Contains(items[0].Reason, "expired on "+time.Now().Add(47*time.Hour).UTC().Format("2006-01-02")) {
		t.Fatalf("the package for the expired key: %s", describeItems(items))
	}
	self := bedIdentity(t, b, "northshire-pio")
	for _, id := range sealedTo(t, b, "northshire-pio", pkg, "hmp-northgate") {
		if !keys.HasKeyID(self.Entity, id) {
			t.Errorf("the held package is sealed to %x, not to the gateway's own key", id)
		}
	}
	if got, _ := deliveredByPackage(b, "hmp-northgate"); got[pkg] != 0 {
		t.Fatal("the package reached the prison with its key expired")
	}

	// Northgate sends a new key; approved, the hold lifts, the package is
	// sealed again to the new key and delivered.
	nid, err := keys.Generate("hmp-northgate", "conduit@hmp-northgate.example", keys.ProfileRFC4880, time.Now())
	tcheck(t, err, "generate")
	tcheck(t, b.Stop("hmp-northgate"), "stop")
	switchKey(t, b, "hmp-northgate", nid)
	tcheck(t, b.Start(ctx, "hmp-northgate"), "restart")
	mustRun(t, b.Dir, nil, nil, conduitBin, "keys", "offer", writeCert(t, nid), "--config", pio.Config)
	mustRun(t, b.Dir, nil, nil, conduitBin, "keys", "approve", "hmp-northgate", nid.Fingerprint(), "--reason", "new key after expiry, checked by phone", "--config", pio.Config)
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool { got, _ := deliveredByPackage(b, "hmp-northgate"); return got[pkg] > 0 }) {
		items, _ := b.Queue(ctx, "northshire-pio", store.Filter{PackageID: pkg})
		t.Fatalf("the held package was not delivered after approval: %s\n%s", describeItems(items), b.Tail("northshire-pio", 10))
	}
	if ids := sealedTo(t, b, "northshire-pio", pkg, "hmp-northgate"); !slices.ContainsFunc(ids, func(id uint64) bool { return keys.HasKeyID(nid.Entity, id) }) {
		t.Errorf("the released package is sealed to %x, not the approved key", ids)
	}
}

func readLog(t *testing.T, path string) string { return string(readAll(t, path)) }

// TestRevokedKeyIsAnnouncedAndSignsNothingMore: an agency revokes its key;
// the revocation reaches its partners signed while the key was valid (they
// keep it pinned and unusable, so deliveries to it are held like those to
// an expired key), and the agency's own gateway accepts nothing it can no
// longer sign.
func TestRevokedKeyIsAnnouncedAndSignsNothingMore(t *testing.T) {
	b := newBed(t, testbed.Options{}, "northshire-pio", "hmp-northgate", "rpiu-north-east")
	ctx := context.Background()
	pio, ng := b.Nodes["northshire-pio"], b.Nodes["hmp-northgate"]
	self := bedIdentity(t, b, "northshire-pio")
	r := run(t, b.Dir, nil, nil, conduitBin, "keys", "revoke", "--config", pio.Config)
	if r.code != exitUsage || !strings.Contains(r.stderr, "--reason") {
		t.Fatalf("revoke without a reason: exit %d %s", r.code, r.stderr)
	}
	out := mustRun(t, b.Dir, nil, nil, conduitBin, "keys", "revoke", "--reason", "force restructure: key retired", "--config", pio.Config)
	if !strings.Contains(out, "revoked; the revocation is queued for") || !strings.Contains(out, "hmp-northgate") {
		t.Fatalf("keys revoke:\n%s", out)
	}
	// The partner takes the revocation: the key stays pinned, unusable.
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool {
		list := run(t, b.Dir, nil, nil, conduitBin, "keys", "list", "--config", ng.Config).stdout
		return strings.Contains(list, self.Fingerprint()) && strings.Contains(list, "force restructure: key retired")
	}) {
		t.Fatalf("the revocation did not reach the prison:\n%s\n%s", b.Tail("northshire-pio", 8), b.Tail("hmp-northgate", 8))
	}
	// The revoked gateway accepts nothing it cannot sign.
	_, err := b.Submit(ctx, "northshire-pio", []string{mailboxOf(t, b, "hmp-northgate")}, e2eMessage(e2eLabel, "After revocation"))
	if err == nil || !strings.Contains(err.Error(), "451") || !strings.Contains(err.Error(), "own key cannot sign") {
		t.Fatalf("a submission to the revoked gateway: %v", err)
	}
	q := mustRun(t, b.Dir, nil, nil, conduitBin, "audit", "query", "--rule", "update", "--config", ng.Config)
	if !strings.Contains(q, "revoked") {
		t.Errorf("the prison's audit trail does not show the revocation:\n%s", q)
	}
}

// TestKeyChangeNoticeWithANewFingerprintIsPending: a partner's key-change
// message, signed by its pinned key, offering a different key (a new
// primary key, not a rotation) is recorded as pending, not used; the same
// offer signed by the new key itself is quarantined (its signer is not
// pinned).
func TestKeyChangeNoticeWithANewFingerprintIsPending(t *testing.T) {
	b := newBed(t, testbed.Options{}, "northshire-pio")
	ctx := context.Background()
	pio := b.Nodes["northshire-pio"]
	old := bedIdentity(t, b, "hmp-northgate")
	nid, err := keys.Generate("hmp-northgate", "conduit@hmp-northgate.example", keys.ProfileRFC4880, time.Now().Add(-time.Minute))
	tcheck(t, err, "generate")
	offer := func(signer *keys.Identity) (string, error) {
		var cert bytes.Buffer
		tcheck(t, keys.WritePublic(&cert, nid.Entity), "cert")
		l, err := envelope.ParseLabel(`v=1; classification=OFFICIAL; grading=3x5x2; source=1; intelligence=A; handling=P; basis=fact; subjects=other; purpose=prison-security; sanitised=no; originator=hmp-northgate; reference=keys-1; created="` + time.Now().UTC().Format(time.RFC3339) + `"`)
		tcheck(t, err, "label")
		msg := "From: <conduit@hmp-northgate.example>\r\nTo: <" + mailboxOf(t, b, "northshire-pio") + ">\r\nSubject: Key change\r\nContent-Type: application/pgp-keys\r\n\r\n" + cert.String()
		var env bytes.Buffer
		_, err = envelope.Seal(ctx, &env, strings.NewReader(msg), envelope.SealParams{
			Signer: signer, Recipients: []*keys.Cert{bedCert(t, b, "northshire-pio")}, Label: l, Now: time.Now,
			Manifest: &envelope.Manifest{From: "hmp-northgate", To: []string{"northshire-pio"}, Kind: envelope.KindKeyChange},
		})
		tcheck(t, err, "seal")
		return b.Inject(ctx, "northshire-pio", "conduit@hmp-northgate.example", []string{mailboxOf(t, b, "northshire-pio")}, env.Bytes())
	}
	if _, err := offer(nid); err == nil || !strings.Contains(err.Error(), "quarantined") {
		t.Fatalf("an offer signed by the unpinned new key: %v", err)
	}
	resp, err := offer(old)
	if err != nil || !strings.Contains(resp, "is pending here until an administrator") {
		t.Fatalf("an offer signed by the pinned key: %q %v", resp, err)
	}
	pending := mustRun(t, b.Dir, nil, nil, conduitBin, "keys", "pending", "--config", pio.Config)
	if !strings.Contains(pending, nid.Fingerprint()) || !strings.Contains(pending, "key-change notice") {
		t.Fatalf("keys pending:\n%s", pending)
	}
	if !keyOfIs(t, b, "northshire-pio", "hmp-northgate", old.Fingerprint(), "1") {
		t.Error("the pinned key is no longer in force after an offer")
	}
}
