package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func TestDecisionLogKeepsTheLastN(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	at := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	for i := range 7 {
		if err := s.RecordDecided(ctx, Decided{PackageID: fmt.Sprintf("cdt-%d", i), Decided: at.Add(time.Duration(i) * time.Minute),
			Manifest: []byte(`{"from":"a"}`), Outcome: "deliver"}, 5); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.RecentDecided(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 || got[0].PackageID != "cdt-6" || got[4].PackageID != "cdt-2" || !got[0].Decided.Equal(at.Add(6*time.Minute)) {
		t.Fatalf("kept %+v", got)
	}
	if got, _ := s.RecentDecided(ctx, 2); len(got) != 2 {
		t.Fatalf("RecentDecided(2) gave %d", len(got))
	}
}
