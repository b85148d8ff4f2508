package envelope

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/conduit-gateway/conduit/keys"
)

// TestSealedSizeBoundsRealEnvelopes: the bound holds for real envelopes of
// incompressible content, and is not wildly loose.
func TestSealedSizeBoundsRealEnvelopes(t *testing.T) {
	pr := newPair(t, keys.ProfileRFC4880)
	for _, n := range []int{0, 1000, 64 << 10, 1 << 20, 3 << 20} {
		raw := make([]byte, n*3/4)
		rand.Read(raw)
		body := base64.StdEncoding.EncodeToString(raw)
		var sb strings.Builder
		for len(body) > 76 {
			sb.WriteString(body[:76] + "\r\n")
			body = body[76:]
		}
		sb.WriteString(body + "\r\n")
		msg := "From: analyst@met.example\r\nSubject: s\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n" + sb.String()
		var out bytes.Buffer
		if _, err := Seal(context.Background(), &out, strings.NewReader(msg), SealParams{
			Signer: pr.sender, Recipients: []*keys.Cert{cert(t, pr.receiver)}, Label: testLabel(pr.sender.Agency),
		}); err != nil {
			t.Fatal(err)
		}
		bound := SealedSize(int64(len(msg)))
		if int64(out.Len()) > bound {
			t.Errorf("%d-byte message: envelope %d bytes, bound %d", len(msg), out.Len(), bound)
		}
		if slack := bound - int64(out.Len()); slack > 64<<10+int64(len(msg))/50 {
			t.Errorf("%d-byte message: bound %d is %d bytes over the envelope", len(msg), bound, slack)
		}
		t.Logf("%d-byte message: envelope %d bytes (x%.3f), bound %d", len(msg), out.Len(), float64(out.Len())/float64(max(len(msg), 1)), bound)
	}
}

func TestMaxPayloadFitsTheLimit(t *testing.T) {
	for _, limit := range []int64{0, 32 << 10, 1 << 20, 25 << 20, 1 << 30} {
		n := MaxPayload(limit)
		if n > 0 && SealedSize(n) > limit {
			t.Errorf("limit %d: payload %d seals to %d", limit, n, SealedSize(n))
		}
		if limit > 1<<20 && SealedSize(n+4096) <= limit {
			t.Errorf("limit %d: payload %d leaves more than 4 KiB unused", limit, n)
		}
	}
	if got := MaxPayload(25 << 20); got < 18<<20 || got > 19<<20 {
		t.Errorf("25 MiB partners: submission limit %d, want about 18.1 MiB", got)
	}
}
