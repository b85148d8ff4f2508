package keyring

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
)

// The last look before a send reads the key ids from the envelope's
// first packets and gives back the envelope it opened, whole and from its
// start, however many chunks it spans: what is sent is byte for byte what
// was stored and looked at.
func TestRecipientKeyIDsGivesBackTheWholeEnvelope(t *testing.T) {
	r, _ := testRing(t)
	ctx := context.Background()
	st := r.store.(*store.SQLite)
	self := r.Identity()
	cert, err := self.Public()
	if err != nil {
		t.Fatal(err)
	}
	label, err := envelope.ParseLabel(`v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5; source=B; intelligence=2; handling=1; basis=assessment; subjects=suspected; purpose=prison-security; sanitised=yes; originator=northshire-pio; reference=LOOK-1; created=` + time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{100, 700 << 10} {
		msg := "From: <pio@northshire-pio.example>\r\nTo: <intel@northgate.hmpps.example>\r\nSubject: look\r\nContent-Type: text/plain\r\n\r\n" +
			strings.Repeat("line of the package body\r\n", size/26+1)
		var buf bytes.Buffer
		if _, err := envelope.Seal(ctx, &buf, strings.NewReader(msg), envelope.SealParams{Signer: self, Recipients: []*keys.Cert{cert}, Label: label,
			Manifest: &envelope.Manifest{From: "northshire-pio", To: []string{"hmp-northgate"}}, Now: time.Now}); err != nil {
			t.Fatal(err)
		}
		pkg := envelope.NewPackageID()
		if _, err := st.Enqueue(ctx, []store.Item{{PackageID: pkg, Destination: "hmp-northgate", Recipients: []string{"intel@northgate.hmpps.example"},
			MailFrom: "conduit@northshire-pio.example", Envelope: buf.Bytes()}}); err != nil {
			t.Fatal(err)
		}
		claimed, err := st.Claim(ctx, time.Now().Add(time.Hour), 1, time.Minute)
		if err != nil || len(claimed) != 1 {
			t.Fatalf("claim: %d items, %v", len(claimed), err)
		}
		ids, rc, err := r.recipientKeyIDs(ctx, claimed[0])
		if err != nil {
			t.Fatalf("%d bytes: %v", buf.Len(), err)
		}
		if len(ids) == 0 || !keys.HasKeyID(self.Entity, ids[0]) {
			t.Errorf("%d bytes: key ids %x, not this gateway's", buf.Len(), ids)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, buf.Bytes()) {
			t.Fatalf("%d bytes stored: read back %d, %v", buf.Len(), len(got), err)
		}
	}
}
