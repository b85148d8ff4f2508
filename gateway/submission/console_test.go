package submission

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/policy"
)

// TestDecisionLogKeepsNoSubjectIdentity: what the dry runs read is the
// routing metadata only; a subject's identity never reaches the store.
func TestDecisionLogKeepsNoSubjectIdentity(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := testServer(t)
	srv.store, srv.log = st, slog.Default()
	m := &envelope.Manifest{From: "northshire-pio", To: []string{"hmp-northgate"}, Topic: "corruption",
		Subjects: []envelope.Subject{{Role: "prisoner", Establishment: "hmp-northgate", Flags: []string{"cat-a"}, ID: "A1234BC-IDENTITY"}},
		Body:     "body.txt", Attachments: []string{"secret.pdf"}}
	srv.recordDecision(ctx, srv.decided("cdt-aaaaaaaaaaaaaaaaaaaaaaaa", m, policy.Decision{Decision: policy.Deliver}))
	got, err := st.RecentDecided(ctx, 5)
	if err != nil || len(got) != 1 {
		t.Fatalf("decisions %v, %v", got, err)
	}
	js := string(got[0].Manifest)
	if strings.Contains(js, "A1234BC-IDENTITY") || strings.Contains(js, "secret.pdf") {
		t.Fatalf("the decision log holds more than routing metadata: %s", js)
	}
	if !strings.Contains(js, `"establishment":"hmp-northgate"`) || !strings.Contains(js, `"cat-a"`) || got[0].Outcome != "deliver" {
		t.Fatalf("the routing metadata is not all there: %s", js)
	}
	if m.Subjects[0].ID == "" {
		t.Fatal("recording changed the caller's manifest")
	}
}
