package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func tcheck(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// serve starts s on 127.0.0.1:0 and returns its base URL; the server is
// shut down, and Serve's return checked, at the end of the test.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	s.Addr = "127.0.0.1:0"
	ln, err := s.Listen()
	tcheck(t, err, "listen")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	tcheck(t, err, "get "+url)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	tcheck(t, err, "read "+url)
	return resp.StatusCode, string(b)
}

func TestMetricsShowCountersAfterCalls(t *testing.T) {
	m := New(nil)
	depth := map[string]int{"hmp-northgate": 3, "ne-ccu": 0}
	var mu sync.Mutex
	m.QueueDepthFunc(func(context.Context) (map[string]int, error) {
		mu.Lock()
		defer mu.Unlock()
		return depth, nil
	})
	m.OverdueFunc(func(context.Context) (map[string]int, error) { return map[string]int{"triage": 2}, nil })
	base := serve(t, &Server{Metrics: m})

	m.Refused("handling-code")
	m.Refused("handling-code")
	m.Refused("uk-eea-only")
	m.Delivery("hmp-northgate", Sent)
	m.Delivery("hmp-northgate", Deferred)
	m.Quarantined("signature")
	m.OverdueAlert("triage")
	m.AuditFailed()
	m.ObserveSeal(3 * time.Millisecond)
	m.ObserveOpen(40 * time.Millisecond)

	code, body := get(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	for _, want := range []string{
		`conduit_refusals_total{rule="handling-code"} 2`,
		`conduit_refusals_total{rule="uk-eea-only"} 1`,
		`conduit_deliveries_total{destination="hmp-northgate",outcome="sent"} 1`,
		`conduit_deliveries_total{destination="hmp-northgate",outcome="deferred"} 1`,
		`conduit_quarantined_total{check="signature"} 1`,
		`conduit_deadline_alerts_total{kind="triage"} 1`,
		`conduit_audit_append_failures_total 1`,
		`conduit_queue_depth{destination="hmp-northgate"} 3`,
		`conduit_queue_depth{destination="ne-ccu"} 0`,
		`conduit_deadlines_overdue{kind="triage"} 2`,
		`conduit_seal_duration_seconds_bucket{le="0.005"} 1`,
		`conduit_seal_duration_seconds_count 1`,
		`conduit_open_duration_seconds_bucket{le="0.025"} 0`,
		`conduit_open_duration_seconds_bucket{le="0.05"} 1`,
		`go_goroutines `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// The depth is read at each scrape.
	mu.Lock()
	depth = map[string]int{"hmp-northgate": 1}
	mu.Unlock()
	_, body = get(t, base+"/metrics")
	if !strings.Contains(body, `conduit_queue_depth{destination="hmp-northgate"} 1`) || strings.Contains(body, `destination="ne-ccu"} 0`) {
		t.Errorf("queue depth not read again:\n%s", body)
	}
}

func TestMetricsSurviveAFailingDepthFunc(t *testing.T) {
	m := New(nil)
	m.QueueDepthFunc(func(context.Context) (map[string]int, error) { return nil, errors.New("database is locked") })
	m.Refused("label-required")
	base := serve(t, &Server{Metrics: m})
	_, body := get(t, base+"/metrics")
	if !strings.Contains(body, `conduit_refusals_total{rule="label-required"} 1`) {
		t.Fatalf("a failing collector blanked the scrape:\n%s", body)
	}
}

// Two gateways in one process each have their own registry.
func TestTwoMetricsDoNotCollide(t *testing.T) {
	a, b := New(nil), New(nil)
	a.Refused("uk-eea-only")
	base := serve(t, &Server{Metrics: b})
	_, body := get(t, base+"/metrics")
	if strings.Contains(body, "uk-eea-only") {
		t.Fatalf("b shows a's refusal")
	}
	var nilm *Metrics // a gateway without metrics
	nilm.Refused("x")
	nilm.ObserveSeal(time.Second)
	nilm.QueueDepthFunc(nil)
}

func TestHealthz(t *testing.T) {
	s := &Server{}
	s.AddCheck("store", func(context.Context) error { return errors.New("down") })
	base := serve(t, s)
	code, body := get(t, base+"/healthz")
	if code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
}

func TestReadyzNamesTheFailingCheckAndRecovers(t *testing.T) {
	var keysDown atomic.Bool
	s := &Server{Metrics: New(nil), CheckTimeout: 200 * time.Millisecond}
	s.AddCheck("store", func(ctx context.Context) error { return nil })
	s.AddCheck("keys", func(ctx context.Context) error {
		if keysDown.Load() {
			return errors.New("vault: connection refused")
		}
		return nil
	})
	base := serve(t, s)

	code, body := get(t, base+"/readyz")
	if code != 200 || body != "ready\nkeys: ok\nstore: ok\n" {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	keysDown.Store(true)
	code, body = get(t, base+"/readyz")
	if code != 503 || !strings.Contains(body, "keys: failed: vault: connection refused") || !strings.Contains(body, "store: ok") {
		t.Fatalf("/readyz with keys down: %d %q", code, body)
	}
	keysDown.Store(false)
	code, body = get(t, base+"/readyz")
	if code != 200 {
		t.Fatalf("/readyz after recovery: %d %q", code, body)
	}
}

func TestReadyzTimesOutAHungCheck(t *testing.T) {
	s := &Server{CheckTimeout: 100 * time.Millisecond}
	release := make(chan struct{})
	defer close(release)
	s.AddCheck("store", func(ctx context.Context) error {
		<-release // ignores its context
		return nil
	})
	s.AddCheck("panics", func(ctx context.Context) error { panic("boom") })
	base := serve(t, s)
	start := time.Now()
	code, body := get(t, base+"/readyz")
	if code != 503 || !strings.Contains(body, "store: failed: no answer within 100ms") || !strings.Contains(body, "panics: failed: check panicked") {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("/readyz took %s", d)
	}
}

func TestRunStopsWhenContextIsDone(t *testing.T) {
	s := &Server{Addr: "127.0.0.1:0"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after its context was done")
	}
	// A taken address is an error, not a hang.
	s2 := &Server{Addr: "127.0.0.1:0"}
	ln, err := s2.Listen()
	tcheck(t, err, "listen")
	defer ln.Close()
	if err := (&Server{Addr: ln.Addr().String()}).Run(context.Background()); err == nil {
		t.Fatal("run on a taken address: no error")
	}
}

func TestDefaultAddrIsLoopback(t *testing.T) {
	if !strings.HasPrefix(DefaultAddr, "127.0.0.1:") {
		t.Fatalf("DefaultAddr %s", DefaultAddr)
	}
}
