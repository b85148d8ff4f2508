package clocks

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/policy"
)

// TestRetentionWaitsForQueuedAndHeldItems: when a package's retention
// period runs out (retention rule; MoU Annex A, Description of method of
// sharing) its finished envelopes are crypto-shredded, but a package with
// an item still queued or held (a handling-code-5 hold nobody decided) is
// kept, reported as pending, until the item leaves the queue: the clock is
// never closed with an envelope left behind. A dry run destroys nothing.
func TestRetentionWaitsForQueuedAndHeldItems(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "conduit.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := &config.Config{Agency: "northshire-pio"}
	start := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	due := start.Add(24 * time.Hour)
	for _, p := range []struct {
		id    string
		state store.State
	}{{"cdt-sent", store.Queued}, {"cdt-held", store.OnHold}} {
		ids, err := st.Enqueue(ctx, []store.Item{{PackageID: p.id, Destination: "hmp-northgate", Recipients: []string{"intel@hmp.example"},
			Envelope: []byte("sealed"), State: p.state, Reason: "handling-code: refer to the originator"}})
		if err != nil {
			t.Fatal(err)
		}
		if p.state == store.Queued {
			if err := st.MarkSent(ctx, ids[0], "250"); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.AddDeadline(ctx, store.Deadline{PackageID: p.id, Kind: policy.DeadlineRetention, Agency: cfg.Agency, Started: start, Due: due}); err != nil {
			t.Fatal(err)
		}
	}
	type want struct{ envelopes, pending int }
	for _, step := range []struct {
		name string
		now  time.Time
		dry  bool
		act  func()
		want map[string]want
	}{
		{name: "before the period ends", now: due.Add(-time.Minute), want: map[string]want{}},
		{name: "dry run after it", now: due.Add(time.Minute), dry: true,
			want: map[string]want{"cdt-sent": {1, 0}, "cdt-held": {0, 1}}},
		{name: "purge after it", now: due.Add(time.Minute),
			want: map[string]want{"cdt-sent": {1, 0}, "cdt-held": {0, 1}}},
		{name: "once the held item is dropped", now: due.Add(2 * time.Minute), act: func() {
			items, _ := st.List(ctx, store.Filter{PackageID: "cdt-held"})
			if err := st.Drop(ctx, items[0].ID, "originator refused"); err != nil {
				t.Fatal(err)
			}
		}, want: map[string]want{"cdt-held": {1, 0}}},
		{name: "and afterwards", now: due.Add(3 * time.Minute), want: map[string]want{}},
	} {
		t.Run(step.name, func(t *testing.T) {
			if step.act != nil {
				step.act()
			}
			ps, err := PurgeExpired(ctx, cfg, st, nil, step.now, 0, step.dry)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]want{}
			for _, p := range ps {
				got[p.PackageID] = want{p.Envelopes, p.Pending}
			}
			if len(got) != len(step.want) {
				t.Fatalf("got %v, want %v", got, step.want)
			}
			for id, w := range step.want {
				if got[id] != w {
					t.Errorf("%s: got %+v, want %+v", id, got[id], w)
				}
			}
		})
	}
	if n, err := st.DataKeyCount(ctx); err != nil || n != 0 {
		t.Errorf("%d data keys left, %v", n, err)
	}
}
