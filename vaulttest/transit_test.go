package vaulttest

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

	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/vaulttest/vaultsrv"
)

// requireTool finds a peer program; in CI (CI=true) a missing one fails
// the test, since it means a missing install step (test.sh installs gpg).
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed; CI must install it (see test.sh)", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

var armorRE = regexp.MustCompile(`(?s)-----BEGIN PGP MESSAGE-----.*?-----END PGP MESSAGE-----`)

// transitBackend is the gateway's backend with Transit signing, logging in
// with an AppRole that holds the gateway policy only.
func transitBackend(t *testing.T, s *vaultsrv.Server, role string) *keys.Vault {
	t.Helper()
	cfg := backendConfig(t, s, role)
	cfg.Transit = &keys.TransitConfig{Mount: vaultsrv.TransitMount, Key: vaultsrv.TransitKey}
	return newVault(t, cfg)
}

func TestTransitSignsPackagesThatGoCryptoAndGnuPGVerify(t *testing.T) {
	gpg := requireTool(t, "gpg")
	for _, typ := range []string{keys.TransitECDSAP384, keys.TransitRSA3072} {
		t.Run(typ, func(t *testing.T) {
			s := vaultsrv.Start(t)
			ctx := context.Background()
			op := operator(t, s, true)
			tcheck(t, op.EnsureTransitKey(ctx, typ), "create the transit key")
			made, err := op.GenerateTransit(ctx, "hmp-northgate", "conduit@hmp-northgate.example", time.Now())
			tcheck(t, err, "generate the identity on the transit key")
			_, err = op.StoreAt(ctx, made, 0)
			tcheck(t, err, "store")

			// The KV secret holds the certificate and the encryption
			// subkey, never a primary secret key: that stays in Transit.
			raw, err := s.Root.KVv2(vaultsrv.KVMount).Get(ctx, vaultsrv.KVPath)
			tcheck(t, err, "read the raw secret")
			if _, ok := raw.Data["secret-key"]; ok {
				t.Fatal("a Transit identity stored a whole secret key in KV")
			}

			gw := transitBackend(t, s, "gw")
			id, err := gw.Identity(ctx)
			tcheck(t, err, "gateway loads the transit identity")
			if !keys.TransitSigned(id) {
				t.Fatal("the loaded identity does not sign through Transit")
			}
			if id.Fingerprint() != made.Fingerprint() {
				t.Fatalf("fingerprint %s after loading, %s when made", id.Fingerprint(), made.Fingerprint())
			}
			met := identity(t, "met-pio")
			sealed := seal(t, id, pub(t, met))

			// go-crypto: the receiving side's checks, signer pinned.
			o, err := open(met, pub(t, id), sealed)
			tcheck(t, err, "open the transit-signed package with go-crypto")
			if o.Signer.Fingerprint != id.Fingerprint() {
				t.Fatalf("signed by %s, want %s", o.Signer.Fingerprint, id.Fingerprint())
			}
			// And in: a package sealed to the KV-held subkey opens.
			_, err = open(id, pub(t, met), seal(t, met, pub(t, id)))
			tcheck(t, err, "open a package sealed to the transit identity")

			// GnuPG: decrypts as met and verifies the Transit signature.
			dir := t.TempDir()
			var metSec, ngPub bytes.Buffer
			tcheck(t, met.WriteSecret(&metSec, nil), "met secret")
			tcheck(t, keys.WritePublic(&ngPub, id.Entity), "ng public")
			tcheck(t, os.WriteFile(filepath.Join(dir, "met.key"), metSec.Bytes(), 0o600), "write")
			tcheck(t, os.WriteFile(filepath.Join(dir, "ng.pub.asc"), ngPub.Bytes(), 0o644), "write")
			env := gnupgHome(t)
			runCmd(t, dir, env, nil, gpg, "--batch", "--import", "met.key", "ng.pub.asc")
			stdout, stderr, code := runCmdCode(t, dir, env, []byte(armorRE.FindString(string(sealed))), gpg, "--batch", "--status-fd", "2", "--decrypt")
			if code != 0 {
				t.Fatalf("gpg --decrypt: exit %d\n%s", code, stderr)
			}
			for _, want := range []string{"[GNUPG:] DECRYPTION_OKAY", "[GNUPG:] GOODSIG", "[GNUPG:] VALIDSIG " + id.Fingerprint()} {
				if !strings.Contains(stderr, want) {
					t.Errorf("gpg status lacks %q:\n%s", want, stderr)
				}
			}
			if !strings.Contains(stdout, "The intelligence.") {
				t.Error("gpg plaintext lacks the body")
			}

			// Restart: a new backend (a new process) derives the same key.
			again, err := transitBackend(t, s, "gw2").Identity(ctx)
			tcheck(t, err, "load after a restart")
			if again.Fingerprint() != made.Fingerprint() {
				t.Fatalf("fingerprint changed across restarts: %s, then %s", made.Fingerprint(), again.Fingerprint())
			}
			remade, err := op.GenerateTransit(ctx, "hmp-northgate", "conduit@hmp-northgate.example", time.Now())
			tcheck(t, err, "derive again")
			if remade.Fingerprint() != made.Fingerprint() {
				t.Fatalf("the same Transit key gave fingerprint %s, then %s", made.Fingerprint(), remade.Fingerprint())
			}

			// Fail closed: with Vault sealed, signing fails; nothing is
			// sealed unsigned. With ECDSA the error is ErrUnavailable
			// itself; go-crypto v1.5.2 drops an RSA signer's error (a
			// shadowed err in packet.Signature.Sign) and fails later, so
			// there the backend's own check tells why (the gateway's
			// intake asks its key gate the same way).
			s.Seal(t)
			var out bytes.Buffer
			err = sealErr(id, pub(t, met), &out)
			if err == nil {
				t.Fatal("sealed a package with Vault sealed")
			}
			if typ == keys.TransitECDSAP384 && !errors.Is(err, keys.ErrUnavailable) {
				t.Fatalf("seal with Vault sealed: %v, want ErrUnavailable", err)
			}
			if cerr := gw.Check(ctx); !errors.Is(cerr, keys.ErrUnavailable) {
				t.Fatalf("check with Vault sealed: %v", cerr)
			}
			if bytes.Contains(out.Bytes(), []byte("The intelligence.")) {
				t.Fatal("plaintext written while signing failed")
			}
		})
	}
}

// gnupgHome makes a throw-away GnuPG home with a short path (gpg-agent's
// socket path is limited to about 100 bytes).
func gnupgHome(t *testing.T) []string {
	home, err := os.MkdirTemp("", "gpg")
	tcheck(t, err, "gnupg home")
	os.Chmod(home, 0o700)
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
		os.RemoveAll(home)
	})
	return []string{"GNUPGHOME=" + home}
}

func runCmdCode(t *testing.T, dir string, env []string, stdin []byte, name string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return so.String(), se.String(), code
}

func runCmd(t *testing.T, dir string, env []string, stdin []byte, name string, args ...string) string {
	t.Helper()
	so, se, code := runCmdCode(t, dir, env, stdin, name, args...)
	if code != 0 {
		t.Fatalf("%s %v: exit %d\n%s", name, args, code, se)
	}
	return so
}
