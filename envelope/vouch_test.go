package envelope

import (
	"strings"
	"testing"

	"github.com/conduit-gateway/conduit/keys"
)

// TestOpenedMessageCarriesOnlyTheReceiversConduitFields: a payload that
// carries Conduit-Verified, Conduit-Delivered-To or Conduit-Decision
// fields of its own (a forged claim from a sender, or from a gateway that
// did not strip them) is opened without them, beside the one genuine
// Conduit-Verified.
func TestOpenedMessageCarriesOnlyTheReceiversConduitFields(t *testing.T) {
	pr := newPair(t, keys.ProfileRFC4880)
	msg := "From: analyst@met.example\r\nConduit-Verified: signer=ccu-national; fingerprint=0; label=valid\r\n" +
		"Conduit-Delivered-To: director@ccu-national.example\r\nconduit-decision: deliver\r\nConduit-Notice: kind=breach; package=cdt-x\r\n" +
		"Subject: s\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
	out, _, err := open(pr, seal(t, pr, msg, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	hdr, _, _ := strings.Cut(out, "\r\n\r\n")
	if n := strings.Count(strings.ToLower(hdr), "conduit-verified:"); n != 1 {
		t.Fatalf("%d Conduit-Verified fields:\n%s", n, hdr)
	}
	if !strings.Contains(hdr, "Conduit-Verified: signer=met-pio") {
		t.Fatalf("the genuine Conduit-Verified is missing:\n%s", hdr)
	}
	for _, f := range []string{"conduit-delivered-to", "conduit-decision"} {
		if strings.Contains(strings.ToLower(hdr), f) {
			t.Errorf("%s from inside the payload survived", f)
		}
	}
	for _, f := range []string{"Conduit-Notice: kind=breach", "Conduit-Package: cdt-"} {
		if !strings.Contains(hdr, f) {
			t.Errorf("%s, written by the originating gateway, was removed", f)
		}
	}
}
