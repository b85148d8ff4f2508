package relay

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestConcurrencyGrowsUnderBacklogAndHalvesOnDeferral(t *testing.T) {
	c := newConcurrency(4)
	c.record(outcomeSent, false)
	if got := c.current(); got != 4 {
		t.Fatalf("after a send without backlog: %d, want 4", got)
	}
	for range 100 {
		c.record(outcomeSent, true)
	}
	if got := c.current(); got != 4*maxWorkersFactor {
		t.Fatalf("after a long backlog: %d, want the bound %d", got, 4*maxWorkersFactor)
	}
	c.record(outcomeDeferred, true)
	if got := c.current(); got != 2*maxWorkersFactor {
		t.Fatalf("after a deferral: %d, want half, %d", got, 2*maxWorkersFactor)
	}
	for range 10 {
		c.record(outcomeDeferred, false)
	}
	if got := c.current(); got != 4 {
		t.Fatalf("after deferrals: %d, want the configured 4", got)
	}
	c.record(outcomeOther, true)
	if got := c.current(); got != 4 {
		t.Fatalf("a permanent failure moved the limit: %d", got)
	}
}

func TestConcurrencyStaysAtWorkersForLargeEnvelopes(t *testing.T) {
	c := newConcurrency(4)
	for range 100 {
		c.sized(14 << 20) // a 10 MiB package, armored
		c.record(outcomeSent, true)
	}
	if got := c.current(); got != 4 {
		t.Fatalf("with 14 MiB envelopes: %d deliveries, want the configured 4", got)
	}
	for range 100 {
		c.sized(22 << 10)
	}
	if got := c.current(); got != 4*maxWorkersFactor {
		t.Fatalf("with 22 KiB envelopes: %d deliveries, want %d", got, 4*maxWorkersFactor)
	}
}

// benchRelayConcurrency relays items over pooled, verified sessions to
// an in-process peer that takes 2 ms per DATA (a receiver making the
// package durable), with deliveries in flight at once.
func benchRelayConcurrency(b *testing.B, inFlight int) {
	ca := newTestCA(b)
	peer := startRelayPeer(b, ca)
	peer.failData = func(string) error { time.Sleep(2 * time.Millisecond); return nil }
	r := testRelay(b, ca, peer.addr)
	pool := newRelayPool(inFlight, sessionIdle)
	defer pool.close()
	var n atomic.Int64
	sem := make(chan struct{}, inFlight)
	var wg sync.WaitGroup
	for b.Loop() {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := r.send(context.Background(), pool, relayItem(fmt.Sprint("bench-", n.Add(1))), nil); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "items/s")
}

func BenchmarkRelayFixed4(b *testing.B)     { benchRelayConcurrency(b, 4) }
func BenchmarkRelayInFlight32(b *testing.B) { benchRelayConcurrency(b, 32) }
