package main

// Partners without Conduit: standard RFC 3156 PGP/MIME both ways, with the
// real gpg and sq playing the partner. The partner's key has an ordinary
// user ID; the pin says it is met-pio's.

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// plainMessage is a MIME entity as a PGP/MIME mail client encrypts it,
// with protected headers (RFC 9788 style: Subject, From, To, Date,
// Message-ID inside) and, when label is not empty, a Handling-Label.
func plainMessage(subject, label string, date time.Time) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "Content-Type: text/plain; charset=utf-8; protected-headers=\"v1\"\r\n")
	fmt.Fprintf(&b, "Subject: %s\r\nFrom: pio@met.example\r\nTo: intel@northgate.example\r\n", subject)
	fmt.Fprintf(&b, "Date: %s\r\nMessage-ID: <%d.plain@met.example>\r\n", date.Format(time.RFC1123Z), date.UnixNano())
	if label != "" {
		fmt.Fprintf(&b, "Handling-Label: %s\r\n", label)
	}
	fmt.Fprintf(&b, "\r\n%s\r\n", interopBody)
	return []byte(b.String())
}

// plainPGPMIME wraps an armored OpenPGP message as RFC 3156 section 4
// multipart/encrypted, with an outer header that names no Conduit field.
func plainPGPMIME(armored string) []byte {
	outer := "From: pio@met.example\r\nTo: intel@northgate.example\r\nSubject: ...\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"outer\"\r\n\r\n" +
		"--outer\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--outer\r\nContent-Type: application/octet-stream\r\n\r\n"
	return []byte(outer + strings.ReplaceAll(strings.ReplaceAll(armored, "\r\n", "\n"), "\n", "\r\n") + "\r\n--outer--\r\n")
}

func TestPlainPGPMIMEPartner(t *testing.T) {
	for _, tool := range []string{"gpg", "sq"} {
		t.Run(tool, func(t *testing.T) {
			dir := t.TempDir()
			_, ngFpr := conduitKeys(t, dir)
			const uid = "Northshire Police PIO Unit <pio@met.example>"
			var pk partnerKey
			if tool == "gpg" {
				pk = gpgPartnerKey(t, dir, uid, "partner.asc")
			} else {
				pk = sqPartnerKey(t, dir, uid, "partner.asc")
			}

			// Conduit to the partner: standard PGP/MIME, the label in the
			// protected headers, the marking in the subject, no manifest.
			label := strings.Replace(interopLabel, "originator=met-pio", "originator=hmp-northgate", 1)
			sealed := mustRun(t, dir, nil, interopMessage(), conduitBin, "seal", "--plain", "--signer", "ng.key", "--recipient", pk.cert, "--agency", "met-pio", "--label", label)
			if !strings.Contains(sealed, `Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"`) {
				t.Errorf("not RFC 3156 multipart/encrypted:\n%.400s", sealed)
			}
			plain := pk.decrypt(t, dir, armorRE.FindString(sealed), "ng.pub.asc", ngFpr)
			for _, want := range []string{interopBody, "Handling-Label: v=1; classification=OFFICIAL-SENSITIVE", "Subject: [OFFICIAL-SENSITIVE] Conveyance", `hp="cipher"`} {
				if !strings.Contains(plain, want) {
					t.Errorf("%s plaintext lacks %q:\n%s", tool, want, plain)
				}
			}
			if strings.Contains(plain, "conduit-manifest.json") || strings.Contains(plain, "application/vnd.conduit.manifest") {
				t.Errorf("a manifest part went to a partner without Conduit:\n%s", plain)
			}

			now := time.Now().Add(-time.Minute).Truncate(time.Second)
			// The partner to Conduit: signed and encrypted by its own tool,
			// the full label inside the encrypted part.
			full := plainPGPMIME(pk.signEncrypt(t, dir, plainMessage("[OFFICIAL-SENSITIVE] Conveyance", interopLabel, now), "ng.pub.asc", ngFpr))
			r := run(t, dir, nil, full, conduitBin, "open", "--plain", "--key", "ng.key", "--sender", pk.cert, "--sender-agency", "met-pio")
			if r.code != 0 || !strings.Contains(r.stdout, "Conduit-Verified: signer=met-pio; fingerprint="+pk.fpr+"; label=valid; format=pgp-mime") ||
				!strings.Contains(r.stdout, interopBody) || strings.Contains(r.stderr, "incomplete") {
				t.Fatalf("open a %s PGP/MIME message: exit %d\nstderr: %s\nstdout: %.500s", tool, r.code, r.stderr, r.stdout)
			}

			// The subject marking alone: opened and attributed, the label
			// incomplete for the inbound policy to judge.
			subj := plainPGPMIME(pk.signEncrypt(t, dir, plainMessage("OFFICIAL-SENSITIVE PERSONAL: Conveyance", "", now.Add(time.Second)), "ng.pub.asc", ngFpr))
			r = run(t, dir, nil, subj, conduitBin, "open", "--plain", "--key", "ng.key", "--sender", pk.cert, "--sender-agency", "met-pio")
			if r.code != 0 || !strings.Contains(r.stdout, "label=incomplete") || !strings.Contains(r.stderr, "label OFFICIAL-SENSITIVE PERSONAL") {
				t.Errorf("subject-marked message: exit %d\nstderr: %s", r.code, r.stderr)
			}

			// RFC 3156 section 6.1: a multipart/signed entity (detached
			// signature) inside an unsigned encryption, as some clients
			// and gateways send; the signed part's header carries the label.
			part := strings.Replace(string(plainMessage("[OFFICIAL-SENSITIVE] Conveyance", interopLabel, now.Add(2*time.Second))),
				"Content-Type: text/plain; charset=utf-8; protected-headers=\"v1\"\r\n", "Content-Type: text/plain; charset=utf-8\r\n", 1)
			sig := pk.detachSign(t, dir, []byte(part))
			nested := func(signedPart string) []byte {
				return []byte("Content-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=\"sig\"\r\n\r\n" +
					"--sig\r\n" + signedPart + "\r\n--sig\r\nContent-Type: application/pgp-signature; name=\"signature.asc\"\r\n\r\n" +
					strings.ReplaceAll(strings.ReplaceAll(sig, "\r\n", "\n"), "\n", "\r\n") + "\r\n--sig--\r\n")
			}
			r = run(t, dir, nil, plainPGPMIME(pk.encryptOnly(t, dir, nested(part), "ng.pub.asc", ngFpr)), conduitBin, "open", "--plain", "--key", "ng.key", "--sender", pk.cert, "--sender-agency", "met-pio")
			if r.code != 0 || !strings.Contains(r.stdout, "Conduit-Verified: signer=met-pio; fingerprint="+pk.fpr+"; label=valid") {
				t.Errorf("RFC 3156 6.1 message: exit %d\nstderr: %s", r.code, r.stderr)
			}
			// The signed part altered after signing: refused.
			altered := strings.Replace(part, "wing C", "wing D", 1)
			r = run(t, dir, nil, plainPGPMIME(pk.encryptOnly(t, dir, nested(altered), "ng.pub.asc", ngFpr)), conduitBin, "open", "--plain", "--key", "ng.key", "--sender", pk.cert, "--sender-agency", "met-pio")
			if r.code != exitCheck || !strings.Contains(r.stderr, "signature does not verify") || r.stdout != "" {
				t.Errorf("altered 6.1 message: exit %d, stdout %d bytes, stderr %q", r.code, len(r.stdout), r.stderr)
			}

			// Signed by a key that is not the pinned one: refused, nothing out.
			r = run(t, dir, nil, full, conduitBin, "open", "--plain", "--key", "ng.key", "--sender", "met.pub.asc", "--sender-agency", "met-pio")
			if r.code != exitCheck || !strings.Contains(r.stderr, "pinned") || r.stdout != "" {
				t.Errorf("unpinned signer: exit %d, stdout %d bytes, stderr %q", r.code, len(r.stdout), r.stderr)
			}
		})
	}
}

// An unsigned message from a partner without Conduit is refused.
func TestPlainPGPMIMEUnsignedIsRefused(t *testing.T) {
	gpg := requireTool(t, "gpg")
	dir := t.TempDir()
	_, ngFpr := conduitKeys(t, dir)
	pk := gpgPartnerKey(t, dir, "Northshire Police PIO Unit <pio@met.example>", "partner.asc")
	mustRun(t, dir, pk.env, nil, gpg, "--batch", "--import", "ng.pub.asc")
	enc := mustRun(t, dir, pk.env, plainMessage("[OFFICIAL] x", interopLabel, time.Now().Truncate(time.Second)), gpg,
		"--batch", "--trust-model", "always", "--armor", "--encrypt", "--recipient", ngFpr)
	r := run(t, dir, nil, plainPGPMIME(enc), conduitBin, "open", "--plain", "--key", "ng.key", "--sender", pk.cert, "--sender-agency", "met-pio")
	if r.code != exitCheck || !strings.Contains(r.stderr, "not signed") || r.stdout != "" {
		t.Errorf("unsigned message: exit %d, stdout %d bytes, stderr %q", r.code, len(r.stdout), r.stderr)
	}
}
