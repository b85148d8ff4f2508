package main

// Partners whose keys were made by GnuPG or Sequoia with ordinary user IDs
// ("Northshire Police PIO Unit <pio@met.example>"): the directory's pinned
// fingerprint, not the user ID, says which agency a key belongs to
// (DESIGN.md, Keys).

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// partnerKey is a partner agency's key made by a real tool.
type partnerKey struct {
	tool string
	cert string   // armored public certificate file (in dir)
	fpr  string   // primary key fingerprint
	env  []string // GnuPG home holding the secret key (gpg only)
	key  string   // secret key file (sq only)
}

var fprRE = regexp.MustCompile(`(?m)^fpr:::::::::([0-9A-F]{40}):`)

// gpgPartnerKey makes an RSA-3072 key with an encryption subkey, as an
// agency would with gpg --quick-gen-key and an ordinary user ID.
func gpgPartnerKey(t *testing.T, dir, uid, out string) partnerKey {
	gpg := requireTool(t, "gpg")
	env := gnupgHome(t)
	mustRun(t, dir, env, nil, gpg, "--batch", "--passphrase", "", "--quick-gen-key", uid, "rsa3072", "sign", "never")
	m := fprRE.FindStringSubmatch(mustRun(t, dir, env, nil, gpg, "--with-colons", "--list-keys", uid))
	if m == nil {
		t.Fatal("no fingerprint in gpg --list-keys")
	}
	mustRun(t, dir, env, nil, gpg, "--batch", "--passphrase", "", "--quick-add-key", m[1], "rsa3072", "encr", "never")
	pub := mustRun(t, dir, env, nil, gpg, "--armor", "--export", m[1])
	if err := os.WriteFile(filepath.Join(dir, out), []byte(pub), 0o644); err != nil {
		t.Fatal(err)
	}
	return partnerKey{tool: "gpg", cert: out, fpr: m[1], env: env}
}

// sqPartnerKey makes an Ed25519/Cv25519 key with sq and an ordinary user ID.
func sqPartnerKey(t *testing.T, dir, uid, out string) partnerKey {
	sq := requireTool(t, "sq")
	mustRun(t, dir, nil, nil, sq, "key", "generate", "--userid", uid, "--cipher-suite", "cv25519", "--export", out+".key")
	mustRun(t, dir, nil, nil, sq, "key", "extract-cert", "--output", out, out+".key")
	gpg := requireTool(t, "gpg")
	env := gnupgHome(t)
	mustRun(t, dir, env, nil, gpg, "--batch", "--import", out)
	m := fprRE.FindStringSubmatch(mustRun(t, dir, env, nil, gpg, "--with-colons", "--fingerprint", "--list-keys"))
	if m == nil {
		t.Fatal("no fingerprint for the sq key")
	}
	return partnerKey{tool: "sq", cert: out, fpr: m[1], key: out + ".key"}
}

// decryptAsPartner opens a Conduit envelope's encrypted part with the
// partner's own tool and checks the signature of signerCert.
func (pk partnerKey) decrypt(t *testing.T, dir, armored, signerCert, signerFpr string) string {
	t.Helper()
	switch pk.tool {
	case "gpg":
		gpg := requireTool(t, "gpg")
		mustRun(t, dir, pk.env, nil, gpg, "--batch", "--import", signerCert)
		r := run(t, dir, pk.env, []byte(armored), gpg, "--batch", "--status-fd", "2", "--decrypt")
		if r.code != 0 {
			t.Fatalf("gpg --decrypt: exit %d\n%s", r.code, r.stderr)
		}
		for _, want := range []string{"[GNUPG:] DECRYPTION_OKAY", "[GNUPG:] GOODSIG", "[GNUPG:] VALIDSIG " + signerFpr} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("gpg status lacks %q:\n%s", want, r.stderr)
			}
		}
		return r.stdout
	default:
		sq := requireTool(t, "sq")
		os.WriteFile(filepath.Join(dir, "enc.asc"), []byte(armored), 0o600)
		return mustRun(t, dir, nil, nil, sq, "decrypt", "--recipient-key", pk.key, "--signer-cert", signerCert, "enc.asc")
	}
}

// signEncrypt signs with the partner's key and encrypts to recipientCert.
func (pk partnerKey) signEncrypt(t *testing.T, dir string, plain []byte, recipientCert, recipientFpr string) string {
	t.Helper()
	switch pk.tool {
	case "gpg":
		gpg := requireTool(t, "gpg")
		mustRun(t, dir, pk.env, nil, gpg, "--batch", "--import", recipientCert)
		return mustRun(t, dir, pk.env, plain, gpg, "--batch", "--trust-model", "always", "--armor", "--sign", "--encrypt",
			"--local-user", pk.fpr, "--recipient", recipientFpr)
	default:
		sq := requireTool(t, "sq")
		os.WriteFile(filepath.Join(dir, "plain.eml"), plain, 0o600)
		return mustRun(t, dir, nil, nil, sq, "encrypt", "--recipient-cert", recipientCert, "--signer-key", pk.key, "plain.eml")
	}
}

func TestPartnerKeysWithOrdinaryUserIDs(t *testing.T) {
	for _, tool := range []string{"gpg", "sq"} {
		t.Run(tool, func(t *testing.T) {
			dir := t.TempDir()
			_, ngFpr := conduitKeys(t, dir)
			// met-pio is the partner here; its key is the tool's own, with
			// a user ID that names no agency id.
			const uid = "Northshire Police PIO Unit <pio@met.example>"
			var pk partnerKey
			if tool == "gpg" {
				pk = gpgPartnerKey(t, dir, uid, "partner.asc")
			} else {
				pk = sqPartnerKey(t, dir, uid, "partner.asc")
			}

			// Sealed to them: any encryption-capable certificate, --agency
			// saying whose it is.
			label := strings.Replace(interopLabel, "originator=met-pio", "originator=hmp-northgate", 1)
			r := run(t, dir, nil, interopMessage(), conduitBin, "seal", "--signer", "ng.key", "--recipient", pk.cert, "--agency", "met-pio", "--label", label)
			if r.code != 0 {
				t.Fatalf("seal to a %s key with an ordinary user ID: exit %d: %s", tool, r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, "for met-pio") {
				t.Errorf("seal did not name the agency given: %s", r.stderr)
			}
			plain := pk.decrypt(t, dir, armorRE.FindString(r.stdout), "ng.pub.asc", ngFpr)
			for _, want := range []string{interopBody, "originator=hmp-northgate"} {
				if !strings.Contains(plain, want) {
					t.Errorf("%s plaintext lacks %q", tool, want)
				}
			}

			// Their signed envelope, attributed to met-pio through the pin.
			inner, outer := innerEntity("cdt-"+tool+"-ordinary-uid-000000001", time.Now().Add(-time.Minute).Truncate(time.Second))
			envl := wrapPGPMIME(outer, pk.signEncrypt(t, dir, inner, "ng.pub.asc", ngFpr))
			r = run(t, dir, nil, envl, conduitBin, "open", "--key", "ng.key", "--sender", pk.cert, "--sender-agency", "met-pio")
			if r.code != 0 || !strings.Contains(r.stdout, "Conduit-Verified: signer=met-pio") || !strings.Contains(r.stderr, "signed by met-pio ("+pk.fpr+")") {
				t.Fatalf("open a %s-signed envelope: exit %d\nstderr: %s\nstdout: %.300s", tool, r.code, r.stderr, r.stdout)
			}

			// The user ID is not a binding: without the agency there is
			// nothing to pin the key for.
			r = run(t, dir, nil, envl, conduitBin, "open", "--key", "ng.key", "--sender", pk.cert)
			if r.code != exitUsage || !strings.Contains(r.stderr, "--sender-agency") || r.stdout != "" {
				t.Errorf("open with no agency for the key: exit %d, stderr %q", r.code, r.stderr)
			}
			// A key that is not the pinned one is still refused: the same
			// envelope, met-pio pinned to the Conduit-made met key.
			r = run(t, dir, nil, envl, conduitBin, "open", "--key", "ng.key", "--sender", "met.pub.asc", "--sender-agency", "met-pio")
			if r.code != exitCheck || !strings.Contains(r.stderr, "not signed by the pinned key") || r.stdout != "" {
				t.Errorf("open with the signer not pinned: exit %d, stdout %d bytes, stderr %q", r.code, len(r.stdout), r.stderr)
			}
		})
	}
}

// A user ID that names another agency is a warning, not a refusal: the
// pin decides whose key it is.
func TestUserIDNamingAnotherAgencyIsAWarning(t *testing.T) {
	gpg := requireTool(t, "gpg")
	dir := t.TempDir()
	_, ngFpr := conduitKeys(t, dir)
	pk := gpgPartnerKey(t, dir, "hmp-ravensby <intel@met.example>", "partner.asc")
	inner, outer := innerEntity("cdt-gpg-other-uid-0000000000001", time.Now().Add(-time.Minute).Truncate(time.Second))
	envl := wrapPGPMIME(outer, pk.signEncrypt(t, dir, inner, "ng.pub.asc", ngFpr))
	r := run(t, dir, nil, envl, conduitBin, "open", "--key", "ng.key", "--sender", pk.cert, "--sender-agency", "met-pio")
	if r.code != 0 || !strings.Contains(r.stdout, "Conduit-Verified: signer=met-pio") {
		t.Fatalf("open: exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, `warning: certificate `+pk.fpr+` is pinned for met-pio but its user ID names "hmp-ravensby"`) {
		t.Errorf("no warning about the user ID: %s", r.stderr)
	}
	_ = gpg
}

// detachSign makes an armored detached signature with the partner's key.
func (pk partnerKey) detachSign(t *testing.T, dir string, data []byte) string {
	t.Helper()
	switch pk.tool {
	case "gpg":
		gpg := requireTool(t, "gpg")
		return mustRun(t, dir, pk.env, data, gpg, "--batch", "--armor", "--detach-sign", "--local-user", pk.fpr)
	default:
		sq := requireTool(t, "sq")
		os.WriteFile(filepath.Join(dir, "tosign.eml"), data, 0o600)
		return mustRun(t, dir, nil, nil, sq, "sign", "--detached", "--signer-key", pk.key, "tosign.eml")
	}
}

// encryptOnly encrypts to recipientCert with the partner's tool, unsigned.
func (pk partnerKey) encryptOnly(t *testing.T, dir string, plain []byte, recipientCert, recipientFpr string) string {
	t.Helper()
	switch pk.tool {
	case "gpg":
		gpg := requireTool(t, "gpg")
		mustRun(t, dir, pk.env, nil, gpg, "--batch", "--import", recipientCert)
		return mustRun(t, dir, pk.env, plain, gpg, "--batch", "--trust-model", "always", "--armor", "--encrypt", "--recipient", recipientFpr)
	default:
		sq := requireTool(t, "sq")
		os.WriteFile(filepath.Join(dir, "plain.eml"), plain, 0o600)
		return mustRun(t, dir, nil, nil, sq, "encrypt", "--recipient-cert", recipientCert, "plain.eml")
	}
}
