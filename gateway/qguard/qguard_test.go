package qguard

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestQuotaRefusesPastTheLimit(t *testing.T) {
	g := New(Config{QuotaBytes: 1000})
	if err := g.Admit(netip.MustParseAddr("192.0.2.1"), 400, 500); err != nil {
		t.Fatalf("within quota: %v", err)
	}
	var r *Refusal
	if err := g.Admit(netip.MustParseAddr("192.0.2.1"), 600, 500); !errors.As(err, &r) || r.Reason != "quota" {
		t.Fatalf("past the quota: %v", err)
	}
}

func TestRatePerSourceSlidesOverAnHour(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	g := New(Config{PerSourceHour: 3})
	g.Now = func() time.Time { return now }
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for i := 0; i < 3; i++ {
		if err := g.Admit(a, 1, 0); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		now = now.Add(10 * time.Minute)
	}
	var r *Refusal
	if err := g.Admit(a, 1, 0); !errors.As(err, &r) || r.Reason != "rate" {
		t.Fatalf("fourth in the hour: %v", err)
	}
	if err := g.Admit(b, 1, 0); err != nil {
		t.Fatalf("another source: %v", err)
	}
	now = now.Add(31 * time.Minute) // the first has left the hour
	if err := g.Admit(a, 1, 0); err != nil {
		t.Fatalf("after the hour slid: %v", err)
	}
}

func TestAlertsGroupAFloodIntoOneAlertAndOneSummary(t *testing.T) {
	var mu sync.Mutex
	var got []Alert
	done := make(chan struct{}, 4)
	a := NewAlerts(50*time.Millisecond, func(al Alert) {
		mu.Lock()
		got = append(got, al)
		mu.Unlock()
		done <- struct{}{}
	})
	defer a.Close()
	if !a.Add("malformed") {
		t.Fatal("the first was not raised at once")
	}
	for i := 0; i < 7; i++ {
		if a.Add("malformed") {
			t.Fatal("a follower was raised on its own")
		}
	}
	a.Add("tampered")
	<-done
	<-done // the summary, when the interval ends
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || !got[0].First || got[1].Count != 8 || got[1].ByCheck["malformed"] != 7 || got[1].ByCheck["tampered"] != 1 {
		t.Fatalf("alerts %+v", got)
	}
	if s := got[1].Summary(); s == "" {
		t.Fatal("empty summary")
	}
}

func TestCloseRaisesWhatIsPending(t *testing.T) {
	var got []Alert
	a := NewAlerts(time.Hour, func(al Alert) { got = append(got, al) })
	a.Add("x")
	a.Add("y")
	a.Close()
	if len(got) != 2 || got[1].Count != 1 {
		t.Fatalf("alerts %+v", got)
	}
}
