package vaulttest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/ecdh"
	"github.com/ProtonMail/go-crypto/openpgp/eddsa"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/testbed"
	"github.com/conduit-gateway/conduit/vaulttest/vaultsrv"
)

var (
	buildOnce sync.Once
	binPath   string
	binErr    error
)

// buildConduit builds the product's binary once, from its own module (its
// own go.mod, not this test module's larger dependency graph).
func buildConduit(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..")
		dir, err := os.MkdirTemp("", "conduit-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "conduit")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/conduit")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("build conduit: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

func readyz(addr string) (int, string) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const (
	sender   = "northshire-pio"
	receiver = "hmp-northgate"
	e2eBody  = "A member of staff on wing C is conveying phones; the source is reliable."
)

func e2eMessage(to string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: pio@northshire-pio.example\r\nTo: %s\r\nSubject: vault fail-closed test\r\n", to)
	fmt.Fprintf(&b, "Message-ID: <%d@northshire-pio.example>\r\nDate: %s\r\n", time.Now().UnixNano(), time.Now().Format(time.RFC1123Z))
	b.WriteString("Handling-Label: v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5; source=B; intelligence=2; handling=1; basis=assessment; subjects=suspected; purpose=corruption-prison; sanitised=yes; originator=northshire-pio; reference=NP-VAULT-1\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n" + e2eBody + "\r\n")
	return []byte(b.String())
}

// TestSealedVaultHoldsWorkInQueuesAndDrainsOnceUnsealed runs two real
// gateway processes: the sender keeps its key in a file, the receiver in
// the in-process Vault (AppRole, gateway policy only). With Vault sealed,
// the receiver's own staff get 451, its /readyz says keys, and a partner's
// package waits in the partner's queue; after the unseal the queue drains
// and the package is delivered once.
func TestSealedVaultHoldsWorkInQueuesAndDrainsOnceUnsealed(t *testing.T) {
	s := vaultsrv.Start(t)
	ctx := context.Background()
	bin := buildConduit(t)
	bed, err := testbed.Create(t.TempDir(), bin, testbed.Options{RetryMin: "1s", RetryMax: "2s"})
	tcheck(t, err, "testbed")
	t.Cleanup(func() {
		bed.StopAll()
		if t.Failed() {
			for _, id := range []string{sender, receiver} {
				t.Logf("log of %s:\n%s", id, bed.Tail(id, 30))
			}
		}
	})
	n := bed.Nodes[receiver]

	// Move the receiver's key into Vault, as `conduit keys vault-import`
	// does, and delete the file: from now on the key is in Vault only.
	keyFile := filepath.Join(n.Dir, "keys", receiver+".key")
	id, err := (&keys.File{Path: keyFile}).Identity(ctx)
	tcheck(t, err, "read the receiver's key")
	op := operator(t, s, false)
	_, err = op.StoreAt(ctx, id, 0)
	tcheck(t, err, "store the receiver's key in vault")
	tcheck(t, os.Remove(keyFile), "remove the key file")
	roleID, secretID := s.AppRole(t, "northgate", time.Hour, 2*time.Hour)
	cfg, err := os.ReadFile(n.Config)
	tcheck(t, err, "read config")
	vaultCfg := strings.Replace(string(cfg), "keys: {secret: keys/"+receiver+".key, partners: ../certs}", "keys: {backend: vault, partners: ../certs}", 1)
	if vaultCfg == string(cfg) {
		t.Fatal("the testbed's keys line changed; update this test")
	}
	vaultCfg += fmt.Sprintf(`vault:
  address: %s
  ca-file: %s
  mount: %s
  path: %s
  auth: {method: approle, role-id: %s, secret-id-file: %s}
  timeout: 3s
  max-retries: 1
  retry-wait: 100ms
  check-interval: 1s
`, s.Addr, s.CAFile, vaultsrv.KVMount, vaultsrv.KVPath, roleID, s.WriteFile(t, "northgate.secret-id", secretID))
	tcheck(t, os.WriteFile(n.Config, []byte(vaultCfg), 0o600), "write the vault config")

	tcheck(t, bed.StartAll(ctx, sender, receiver), "start gateways")
	if code, body := readyz(n.Admin); code != http.StatusOK {
		t.Fatalf("/readyz before sealing: %d %s", code, body)
	}

	s.Seal(t)
	var code int
	var ready string
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool { code, ready = readyz(n.Admin); return code == http.StatusServiceUnavailable }) {
		t.Fatalf("/readyz with vault sealed: %d %s, want 503", code, ready)
	}
	if !strings.Contains(ready, "keys") {
		t.Errorf("/readyz does not name the keys check: %s", ready)
	}

	// The receiver's own staff: 451, nothing accepted.
	rcvTo := bed.Directory.Agency(sender).Mailboxes[0].Address
	if _, err := bed.Submit(ctx, receiver, []string{rcvTo}, e2eMessage(rcvTo)); err == nil || !strings.Contains(err.Error(), "451") {
		t.Fatalf("submission with vault sealed: %v, want a 451", err)
	} else if !strings.Contains(err.Error(), "Nothing was accepted") {
		t.Errorf("451 does not say nothing was accepted: %v", err)
	}

	// A partner's package: accepted by the sender (its key is a file),
	// refused with 451 by the receiver, so it waits in the sender's queue.
	to := bed.Directory.Agency(receiver).Mailboxes[0].Address
	resp, err := bed.Submit(ctx, sender, []string{to}, e2eMessage(to))
	tcheck(t, err, "submit at the sender")
	pkg := packageID(t, resp)
	var items []store.Item
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool {
		items, _ = bed.Queue(ctx, sender, store.Filter{PackageID: pkg, Destination: receiver})
		return len(items) == 1 && items[0].Attempts >= 2
	}) {
		t.Fatalf("the package did not wait in the sender's queue: %+v", items)
	}
	if items[0].State != store.Queued || !strings.Contains(items[0].LastError, "451") {
		t.Fatalf("queued item state %v, last error %q; want queued after a 451", items[0].State, items[0].LastError)
	}
	if got := bed.Delivered(receiver, to); len(got) != 0 {
		t.Fatalf("delivered while vault was sealed: %v", got)
	}

	s.Unseal(t)
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool { code, ready = readyz(n.Admin); return code == http.StatusOK }) {
		t.Fatalf("/readyz after unseal: %d %s", code, ready)
	}
	if !testbed.WaitFor(ctx, 60*time.Second, func() bool {
		items, _ = bed.Queue(ctx, sender, store.Filter{PackageID: pkg, Destination: receiver})
		return len(items) == 1 && items[0].State == store.Sent
	}) {
		t.Fatalf("the queue did not drain after unseal: %+v", items)
	}
	if got := bed.Delivered(receiver, to); len(got) != 1 {
		t.Fatalf("delivered %d times after unseal, want exactly once", len(got))
	}

	// A rotation written to Vault while the gateway runs: it loads the new
	// version at its next check, and packages sealed to the subkey the
	// partner has pinned still open.
	cur, err := op.Identity(ctx)
	tcheck(t, err, "read for rotation")
	tcheck(t, cur.Entity.AddEncryptionSubkey(keys.ProfileRFC4880.Config()), "add a subkey")
	tcheck(t, op.Store(ctx, cur), "store the rotation")
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool {
		b, _ := os.ReadFile(n.Log)
		// (the wording differs between the key gate's own reload and the
		// shared reload path on main: accept either)
		return bytes.Contains(b, []byte("agency key reloaded after a rotation")) || bytes.Contains(b, []byte("own key reloaded"))
	}) {
		t.Fatal("the running gateway did not load the rotated key")
	}
	_, err = bed.Submit(ctx, sender, []string{to}, e2eMessage(to))
	tcheck(t, err, "submit after the rotation")
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool { return len(bed.Delivered(receiver, to)) == 2 }) {
		t.Fatalf("package after the rotation not delivered: %d in the mailbox", len(bed.Delivered(receiver, to)))
	}
	bed.StopAll()

	// The alert and the recovery: in the log and in the audit trail.
	logData, err := os.ReadFile(n.Log)
	tcheck(t, err, "read log")
	for _, want := range []string{"admin alert: key backend unavailable", "key backend available again"} {
		if !bytes.Contains(logData, []byte(want)) {
			t.Errorf("receiver log lacks %q", want)
		}
	}
	trail, err := audit.OpenSQLite(ctx, bed.StorePath(receiver), nil)
	tcheck(t, err, "open the audit trail")
	evs, err := trail.Query(ctx, audit.Filter{Rule: "key-backend"})
	trail.Close()
	tcheck(t, err, "query the audit trail")
	var alerts []string
	for _, e := range evs {
		alerts = append(alerts, e.Detail)
	}
	joined := strings.Join(alerts, "\n")
	if !strings.Contains(joined, "key backend unavailable") || !strings.Contains(joined, "key backend available again") {
		t.Errorf("audit trail key-backend events: %q", alerts)
	}

	changes, err := auditKind(ctx, bed.StorePath(receiver), audit.KeyChange)
	tcheck(t, err, "key-change events")
	if !strings.Contains(strings.Join(changes, "\n"), "version 2") {
		t.Errorf("audit key-change events %q, want the reload of version 2", changes)
	}

	// The secret key never touched the receiver's disk: no armored secret
	// key and none of its secret scalars (the rotated subkey's included)
	// anywhere under its folder.
	noSecretOnDisk(t, n.Dir, cur)
}

func auditKind(ctx context.Context, db string, k audit.Kind) ([]string, error) {
	trail, err := audit.OpenSQLite(ctx, db, nil)
	if err != nil {
		return nil, err
	}
	defer trail.Close()
	evs, err := trail.Query(ctx, audit.Filter{Kind: k})
	var out []string
	for _, e := range evs {
		out = append(out, e.Actor+": "+e.Detail)
	}
	return out, err
}

func packageID(t *testing.T, resp string) string {
	t.Helper()
	for _, f := range strings.Fields(resp) {
		if strings.HasPrefix(f, "cdt-") {
			return f
		}
	}
	t.Fatalf("no package id in %q", resp)
	return ""
}

// secretScalars are the identity's secret key numbers, as they would
// appear in any file that held the key in any form.
func secretScalars(t *testing.T, id *keys.Identity) [][]byte {
	t.Helper()
	var out [][]byte
	add := func(k any) {
		switch p := k.(type) {
		case *eddsa.PrivateKey:
			out = append(out, p.D)
		case *ecdh.PrivateKey:
			out = append(out, p.D)
		default:
			t.Fatalf("unexpected secret key type %T", k)
		}
	}
	add(id.Entity.PrivateKey.PrivateKey)
	for _, s := range id.Entity.Subkeys {
		add(s.PrivateKey.PrivateKey)
	}
	return out
}

func noSecretOnDisk(t *testing.T, dir string, id *keys.Identity) {
	t.Helper()
	scalars := secretScalars(t, id)
	files := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		files++
		if bytes.Contains(data, []byte("PGP PRIVATE KEY BLOCK")) {
			t.Errorf("%s holds an armored secret key", p)
		}
		for _, sc := range scalars {
			if len(sc) >= 16 && bytes.Contains(data, sc) {
				t.Errorf("%s holds secret key material", p)
			}
		}
		return nil
	})
	if files < 3 {
		t.Fatalf("only %d files under %s: the walk saw nothing", files, dir)
	}
}
