package main

// Interoperability with the real OpenPGP implementations our partners run:
// GnuPG 2.2 and Sequoia's sq. These tests drive the built conduit binary,
// gpg and sq as separate processes; nothing is imitated.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var conduitBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "conduit-bin")
	if err != nil {
		panic(err)
	}
	conduitBin = filepath.Join(dir, "conduit")
	if out, err := exec.Command("go", "build", "-o", conduitBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build conduit: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireTool skips a test when a real peer is missing on a laptop, and
// fails it in CI, where a missing tool means a missing install step.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed; CI must install it (see test.sh)", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

type runResult struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, dir string, env []string, stdin []byte, name string, args ...string) runResult {
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
		t.Fatalf("run %s: %v", name, err)
	}
	return runResult{so.String(), se.String(), code}
}

func mustRun(t *testing.T, dir string, env []string, stdin []byte, name string, args ...string) string {
	t.Helper()
	r := run(t, dir, env, stdin, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: exit %d\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

const interopBody = "Intelligence: a member of staff is conveying mobile phones into wing C."

func interopMessage() []byte {
	return []byte("From: analyst@met.example\r\nTo: pio@northgate.example\r\nSubject: Conveyance\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n\r\n" + interopBody + "\r\n")
}

const interopLabel = `v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5; source=B; intelligence=2; handling=1; basis=assessment; subjects=suspected; purpose=corruption-prison; sanitised=yes; originator=met-pio; reference=MET-2026-7`

// conduitKeys makes the two agencies' keys with the conduit binary.
func conduitKeys(t *testing.T, dir string) (metFpr, ngFpr string) {
	out := mustRun(t, dir, nil, nil, conduitBin, "keys", "generate", "--agency", "met-pio", "--email", "conduit@met.example", "--out", "met")
	metFpr = strings.Fields(out)[2]
	out = mustRun(t, dir, nil, nil, conduitBin, "keys", "generate", "--agency", "hmp-northgate", "--email", "conduit@northgate.example", "--out", "ng")
	ngFpr = strings.Fields(out)[2]
	return
}

var armorRE = regexp.MustCompile(`(?s)-----BEGIN PGP MESSAGE-----.*?-----END PGP MESSAGE-----`)

// gnupgHome makes a throw-away GnuPG home; its path is short because
// gpg-agent's socket path is limited to about 100 bytes.
func gnupgHome(t *testing.T) []string {
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(home, 0o700)
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
		os.RemoveAll(home)
	})
	return []string{"GNUPGHOME=" + home}
}

func TestConduitSealedOpensWithGnuPG(t *testing.T) {
	gpg := requireTool(t, "gpg")
	dir := t.TempDir()
	metFpr, _ := conduitKeys(t, dir)
	env := gnupgHome(t)
	sealed := mustRun(t, dir, nil, interopMessage(), conduitBin, "seal", "--signer", "met.key", "--recipient", "ng.pub.asc", "--label", interopLabel)
	enc := armorRE.FindString(sealed)
	if enc == "" {
		t.Fatal("no armored message in the envelope")
	}
	mustRun(t, dir, env, nil, gpg, "--batch", "--import", "ng.key", "met.pub.asc")
	r := run(t, dir, env, []byte(enc), gpg, "--batch", "--status-fd", "2", "--decrypt")
	if r.code != 0 {
		t.Fatalf("gpg --decrypt: exit %d\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"[GNUPG:] DECRYPTION_OKAY", "[GNUPG:] GOODSIG", "[GNUPG:] VALIDSIG " + metFpr} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("gpg status lacks %q:\n%s", want, r.stderr)
		}
	}
	for _, want := range []string{interopBody, "Handling-Label: v=1; classification=OFFICIAL-SENSITIVE", `hp="cipher"`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("gpg plaintext lacks %q", want)
		}
	}
}

func TestConduitSealedOpensWithSequoia(t *testing.T) {
	sq := requireTool(t, "sq")
	dir := t.TempDir()
	conduitKeys(t, dir)
	sealed := mustRun(t, dir, nil, interopMessage(), conduitBin, "seal", "--signer", "met.key", "--recipient", "ng.pub.asc", "--label", interopLabel)
	os.WriteFile(filepath.Join(dir, "enc.asc"), []byte(armorRE.FindString(sealed)), 0o600)

	out := mustRun(t, dir, nil, nil, sq, "decrypt", "--recipient-key", "ng.key", "--signer-cert", "met.pub.asc", "enc.asc")
	if !strings.Contains(out, interopBody) {
		t.Errorf("sq plaintext lacks the body:\n%s", out)
	}
	// The same message against the wrong signer must fail in sq too:
	// otherwise the check above proves nothing about the signature.
	r := run(t, dir, nil, nil, sq, "decrypt", "--recipient-key", "ng.key", "--signer-cert", "ng.pub.asc", "enc.asc")
	if r.code == 0 {
		t.Error("sq accepted the signature against the wrong signer certificate")
	}
}

// innerEntity writes the protected payload of a Conduit envelope the way
// any implementation of the wire format (README, "Wire format") must: the
// protected headers with the label and HP-Outer records, a manifest part,
// then the content.
func innerEntity(pkgID string, created time.Time) (inner []byte, outerHeader string) {
	return innerEntityWith(pkgID, created, interopBody)
}

// innerEntityWith is innerEntity with the given content.
func innerEntityWith(pkgID string, created time.Time, body string) (inner []byte, outerHeader string) {
	label := interopLabel + `; created="` + created.UTC().Format(time.RFC3339) + `"`
	subj := "[OFFICIAL-SENSITIVE] Conduit package " + pkgID
	sio := `marking=OFFICIAL-SENSITIVE`
	manifest := fmt.Sprintf(`{"from":"met-pio","to":["hmp-northgate"],"label":%q}`, label)
	var b strings.Builder
	fmt.Fprintf(&b, "MIME-Version: 1.0\r\nFrom: analyst@met.example\r\nTo: pio@northgate.example\r\n")
	fmt.Fprintf(&b, "Subject: [OFFICIAL-SENSITIVE] Conveyance\r\nDate: %s\r\nMessage-ID: <%s.inner@met.example>\r\n", created.Format(time.RFC1123Z), pkgID)
	fmt.Fprintf(&b, "Handling-Label: %s\r\nConduit-Package: %s\r\n", label, pkgID)
	fmt.Fprintf(&b, "HP-Outer: Subject: %s\r\nHP-Outer: SIO-Label: %s\r\nHP-Outer: Conduit-Package: %s\r\n", subj, sio, pkgID)
	fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"b1\"; hp=\"cipher\"\r\n\r\n")
	fmt.Fprintf(&b, "--b1\r\nContent-Type: application/vnd.conduit.manifest+json\r\n\r\n%s\r\n", manifest)
	fmt.Fprintf(&b, "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n--b1--\r\n", body)
	outer := fmt.Sprintf("From: <gw@met.example>\r\nTo: <conduit@northgate.example>\r\nSubject: %s\r\nSIO-Label: %s\r\nConduit-Package: %s\r\n"+
		"MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"outer\"\r\n\r\n"+
		"--outer\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--outer\r\nContent-Type: application/octet-stream\r\n\r\n",
		subj, sio, pkgID)
	return []byte(b.String()), outer
}

func wrapPGPMIME(outerHeader, armored string) []byte {
	return []byte(outerHeader + strings.ReplaceAll(strings.ReplaceAll(armored, "\r\n", "\n"), "\n", "\r\n") + "\r\n--outer--\r\n")
}

func TestGnuPGSealedOpensWithConduit(t *testing.T) {
	gpg := requireTool(t, "gpg")
	dir := t.TempDir()
	_, ngFpr := conduitKeys(t, dir)
	env := gnupgHome(t)
	// The sending agency's key is GnuPG's own, not one Conduit made.
	mustRun(t, dir, env, nil, gpg, "--batch", "--passphrase", "", "--quick-gen-key", "met-pio <gw@met.example>", "ed25519", "sign", "never")
	mustRun(t, dir, env, nil, gpg, "--batch", "--import", "ng.pub.asc")
	pub := mustRun(t, dir, env, nil, gpg, "--armor", "--export", "gw@met.example")
	os.WriteFile(filepath.Join(dir, "gpg-met.asc"), []byte(pub), 0o644)

	inner, outer := innerEntity("cdt-gpg0000000000000000000001", time.Now().Add(-time.Minute).Truncate(time.Second))
	enc := mustRun(t, dir, env, inner, gpg, "--batch", "--trust-model", "always", "--armor", "--sign", "--encrypt",
		"--local-user", "gw@met.example", "--recipient", ngFpr)
	envl := wrapPGPMIME(outer, enc)

	out := mustRun(t, dir, nil, envl, conduitBin, "open", "--key", "ng.key", "--sender", "gpg-met.asc")
	if !strings.Contains(out, interopBody) || !strings.Contains(out, "Conduit-Verified: signer=met-pio") {
		t.Errorf("opened message:\n%s", out)
	}

	// Not pinned: the same envelope against another agency's certificate.
	r := run(t, dir, nil, envl, conduitBin, "open", "--key", "ng.key", "--sender", "met.pub.asc")
	if r.code != exitCheck || !strings.Contains(r.stderr, "not signed by the pinned key") || r.stdout != "" {
		t.Errorf("open with the signer not pinned: exit %d, stdout %d bytes, stderr %q", r.code, len(r.stdout), r.stderr)
	}
}

func TestSequoiaSealedOpensWithConduit(t *testing.T) {
	sq := requireTool(t, "sq")
	dir := t.TempDir()
	conduitKeys(t, dir)
	mustRun(t, dir, nil, nil, sq, "key", "generate", "--userid", "met-pio <gw@met.example>", "--cannot-encrypt", "--export", "sq-met.key")
	mustRun(t, dir, nil, nil, sq, "key", "extract-cert", "--output", "sq-met.asc", "sq-met.key")

	inner, outer := innerEntity("cdt-sq00000000000000000000001", time.Now().Add(-time.Minute).Truncate(time.Second))
	os.WriteFile(filepath.Join(dir, "inner.eml"), inner, 0o600)
	enc := mustRun(t, dir, nil, nil, sq, "encrypt", "--recipient-cert", "ng.pub.asc", "--signer-key", "sq-met.key", "inner.eml")
	envl := wrapPGPMIME(outer, enc)

	out := mustRun(t, dir, nil, envl, conduitBin, "open", "--key", "ng.key", "--sender", "sq-met.asc")
	if !strings.Contains(out, interopBody) || !strings.Contains(out, "Conduit-Verified: signer=met-pio") {
		t.Errorf("opened message:\n%s", out)
	}
	r := run(t, dir, nil, envl, conduitBin, "open", "--key", "ng.key", "--sender", "met.pub.asc")
	if r.code != exitCheck || !strings.Contains(r.stderr, "not signed by the pinned key") || r.stdout != "" {
		t.Errorf("open with the signer not pinned: exit %d, stdout %d bytes, stderr %q", r.code, len(r.stdout), r.stderr)
	}
}

// largeBody is a package of about 1.5 MiB that does not compress to
// nothing: many partial-length packets, many armor lines.
func largeBody() string {
	var b strings.Builder
	x := uint64(1)
	for b.Len() < 3<<19 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		fmt.Fprintf(&b, "%016x %016x intelligence line\r\n", x, x*0x9e3779b97f4a7c15)
	}
	return b.String() + interopBody
}

// Conduit's own armor and symmetric layer, on a large package, read by
// GnuPG and Sequoia.
func TestConduitSealedLargeOpensWithGnuPGAndSequoia(t *testing.T) {
	gpg, sq := requireTool(t, "gpg"), requireTool(t, "sq")
	dir := t.TempDir()
	metFpr, _ := conduitKeys(t, dir)
	body := largeBody()
	msg := "From: analyst@met.example\r\nTo: pio@northgate.example\r\nSubject: Conveyance\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n"
	sealed := mustRun(t, dir, nil, []byte(msg), conduitBin, "seal", "--signer", "met.key", "--recipient", "ng.pub.asc", "--label", interopLabel)
	enc := armorRE.FindString(sealed)
	if enc == "" {
		t.Fatal("no armored message in the envelope")
	}

	env := gnupgHome(t)
	mustRun(t, dir, env, nil, gpg, "--batch", "--import", "ng.key", "met.pub.asc")
	r := run(t, dir, env, []byte(enc), gpg, "--batch", "--status-fd", "2", "--decrypt")
	if r.code != 0 {
		t.Fatalf("gpg --decrypt: exit %d\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"[GNUPG:] DECRYPTION_OKAY", "[GNUPG:] GOODMDC", "[GNUPG:] GOODSIG", "[GNUPG:] VALIDSIG " + metFpr} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("gpg status lacks %q:\n%s", want, r.stderr)
		}
	}
	if !strings.Contains(r.stdout, body) {
		t.Error("gpg plaintext lacks the body")
	}

	os.WriteFile(filepath.Join(dir, "enc.asc"), []byte(enc), 0o600)
	out := mustRun(t, dir, nil, nil, sq, "decrypt", "--recipient-key", "ng.key", "--signer-cert", "met.pub.asc", "enc.asc")
	if !strings.Contains(out, body) {
		t.Error("sq plaintext lacks the body")
	}
}

// GnuPG's and Sequoia's large messages (compressed by GnuPG, not by sq),
// read by Conduit's armor reader and symmetric layer.
func TestLargeGnuPGAndSequoiaSealedOpenWithConduit(t *testing.T) {
	gpg, sq := requireTool(t, "gpg"), requireTool(t, "sq")
	dir := t.TempDir()
	_, ngFpr := conduitKeys(t, dir)
	body := largeBody()

	env := gnupgHome(t)
	mustRun(t, dir, env, nil, gpg, "--batch", "--passphrase", "", "--quick-gen-key", "met-pio <gw@met.example>", "ed25519", "sign", "never")
	mustRun(t, dir, env, nil, gpg, "--batch", "--import", "ng.pub.asc")
	pub := mustRun(t, dir, env, nil, gpg, "--armor", "--export", "gw@met.example")
	os.WriteFile(filepath.Join(dir, "gpg-met.asc"), []byte(pub), 0o644)
	inner, outer := innerEntityWith("cdt-gpg0000000000000000000002", time.Now().Add(-time.Minute).Truncate(time.Second), body)
	enc := mustRun(t, dir, env, inner, gpg, "--batch", "--trust-model", "always", "--armor", "--sign", "--encrypt",
		"--local-user", "gw@met.example", "--recipient", ngFpr)
	out := mustRun(t, dir, nil, wrapPGPMIME(outer, enc), conduitBin, "open", "--key", "ng.key", "--sender", "gpg-met.asc")
	if !strings.Contains(out, body) || !strings.Contains(out, "Conduit-Verified: signer=met-pio") {
		t.Errorf("opened GnuPG message: %d bytes, body present %v", len(out), strings.Contains(out, body))
	}

	mustRun(t, dir, nil, nil, sq, "key", "generate", "--userid", "met-pio <gw@met.example>", "--cannot-encrypt", "--export", "sq-met.key")
	mustRun(t, dir, nil, nil, sq, "key", "extract-cert", "--output", "sq-met.asc", "sq-met.key")
	inner, outer = innerEntityWith("cdt-sq00000000000000000000002", time.Now().Add(-time.Minute).Truncate(time.Second), body)
	os.WriteFile(filepath.Join(dir, "inner.eml"), inner, 0o600)
	enc = mustRun(t, dir, nil, nil, sq, "encrypt", "--recipient-cert", "ng.pub.asc", "--signer-key", "sq-met.key", "inner.eml")
	out = mustRun(t, dir, nil, wrapPGPMIME(outer, enc), conduitBin, "open", "--key", "ng.key", "--sender", "sq-met.asc")
	if !strings.Contains(out, body) || !strings.Contains(out, "Conduit-Verified: signer=met-pio") {
		t.Errorf("opened Sequoia message: %d bytes, body present %v", len(out), strings.Contains(out, body))
	}
}
