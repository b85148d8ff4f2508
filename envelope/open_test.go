package envelope

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/conduit-gateway/conduit/keys"
)

// TestReleaseReadsOnPastTheHeaderLimit: checkInner reads the header
// section and the manifest under maxHeaderBytes, and release reads on from
// where it stopped with the bound lifted. However the manifest's end falls
// against the bound (the read buffer may have reached it, and been
// refused more, while the manifest still read complete), what checkInner
// accepts, release reads to its end.
func TestReleaseReadsOnPastTheHeaderLimit(t *testing.T) {
	pr := newPair(t, keys.ProfileRFC4880)
	body := strings.Repeat("line of the content part\r\n", 20_000)
	sealed := seal(t, pr, "Subject: s\r\nContent-Type: text/plain\r\n\r\n"+body, nil)
	p := OpenParams{Identity: pr.receiver, Partners: pr.partners}
	pl, err := openPayload(context.Background(), bytes.NewReader(sealed), &p)
	tcheck(t, err, "open payload")
	defer pl.sp.Close()
	sr, err := pl.sp.reader()
	tcheck(t, err, "spool reader")
	payload, err := io.ReadAll(sr)
	tcheck(t, err, "read payload")

	// The end of the manifest part: the line end before the content
	// part's delimiter, and the delimiter's dashes and boundary.
	first := bytes.Index(payload, []byte("\r\n--conduit-"))
	bd := payload[first+2 : first+2+bytes.IndexAny(payload[first+2:], "\r\n")]
	second := bytes.Index(payload[first+1:], append([]byte("\r\n"), bd...)) + first + 1
	manifestEnd := second + 2 + len(bd)

	accepted := 0
	for end := maxHeaderBytes - 40; end <= maxHeaderBytes+2; end++ {
		// A header field that moves the manifest's end to end.
		pad := end - manifestEnd - len("X-Pad: \r\n")
		padded := append([]byte("X-Pad: "+strings.Repeat("p", pad)+"\r\n"), payload...)
		sp, err := newSpool(t.TempDir(), 0)
		tcheck(t, err, "spool")
		_, err = sp.Write(padded)
		tcheck(t, err, "spool write")
		tcheck(t, sp.finish(), "spool finish")
		res, in, err := checkInner(sp, pl.outer, pl.signer, DefaultLegacyMarkings)
		if err != nil {
			sp.Close()
			continue
		}
		accepted++
		res.Signer = pl.signer
		var out bytes.Buffer
		if err := release(&out, in, res); err != nil {
			t.Fatalf("manifest ending at %d (bound %d): checkInner accepted, release: %v", end, maxHeaderBytes, err)
		}
		if !strings.HasSuffix(out.String(), body) {
			t.Fatalf("manifest ending at %d: the content part was not released whole", end)
		}
		sp.Close()
	}
	if accepted == 0 {
		t.Fatal("checkInner accepted no payload near the bound: the test proves nothing")
	}
}

// TestOpenReadsAnOuterHeaderUpToTheLimit: the envelope's header section is
// read under maxHeaderBytes, then the bound is lifted for the parts; a
// header that ends at the bound opens, one a byte over it does not.
func TestOpenReadsAnOuterHeaderUpToTheLimit(t *testing.T) {
	pr := newPair(t, keys.ProfileRFC4880)
	sealed := seal(t, pr, sampleMessage(), nil)
	headerEnd := bytes.Index(sealed, []byte("\r\n\r\n")) + 4
	for end := maxHeaderBytes - 3; end <= maxHeaderBytes+1; end++ {
		pad := end - headerEnd - len("X-Pad: \r\n")
		padded := append([]byte("X-Pad: "+strings.Repeat("p", pad)+"\r\n"), sealed...)
		out, _, err := open(pr, padded, nil)
		if end <= maxHeaderBytes && (err != nil || !strings.Contains(out, secretBody)) {
			t.Fatalf("header of %d bytes (bound %d): %v", end, maxHeaderBytes, err)
		}
		if end > maxHeaderBytes && err == nil {
			t.Fatalf("header of %d bytes (bound %d) was read", end, maxHeaderBytes)
		}
	}
}
