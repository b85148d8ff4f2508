package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/testbed"
)

// TestCrashKilledGatewaysDeliverEveryAcceptedPackageOnce kills the sending
// and the receiving gateway with SIGKILL, alternately and at random
// moments, while clients submit 500 packages (retrying any submission that
// did not get its 250). After the last restart every package that was
// acknowledged with a 250 must be in the receiver's Maildir exactly once.
//
// A submission cut after the sender stored it but before its 250 reached
// the client is retried by the client under a new package id: SMTP cannot
// tell the two apart, so such an "orphan" may be delivered as well; it too
// must be delivered once, and it is counted in the log.
func TestCrashKilledGatewaysDeliverEveryAcceptedPackageOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: seconds of kills and restarts (runs without -short, as in test.sh)")
	}
	const (
		packages = 500
		clients  = 4
		sender   = "northshire-pio"
		receiver = "hmp-northgate"
	)
	b := newE2EBed(t, testbed.Options{RetryMin: "200ms", RetryMax: "1s"}, sender, receiver)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 42))
	start := time.Now()

	// The killer: every 100-400 ms, SIGKILL one gateway (sender and
	// receiver alternately) and start it again at once, while packages
	// are submitted and until 90% of them are delivered.
	stopKilling := make(chan struct{})
	killerDone := make(chan struct{})
	kills := map[string]int{}
	var killErr error
	go func() {
		defer close(killerDone)
		victims := []string{sender, receiver}
		for i := 0; ; i++ {
			timer := time.NewTimer(time.Duration(100+rng.IntN(300)) * time.Millisecond)
			select {
			case <-stopKilling:
				timer.Stop()
				return
			case <-timer.C:
			}
			v := victims[i%2]
			b.Kill(v)
			kills[v]++
			if err := b.Start(ctx, v); err != nil {
				killErr = fmt.Errorf("restart %s after kill %d: %w", v, kills[v], err)
				return
			}
		}
	}()

	// The clients: each package is submitted until it gets a 250.
	var mu sync.Mutex
	acked := map[string]int{} // package id → logical package
	attempts, failures := 0, 0
	next := make(chan int)
	go func() {
		defer close(next)
		for i := 0; i < packages; i++ {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				msg := e2eMessage(strings.Replace(e2eLabel, "NP-2026-0001", fmt.Sprintf("NP-CRASH-%04d", i), 1), fmt.Sprintf("Crash test package %d", i))
				for {
					if ctx.Err() != nil {
						return
					}
					mu.Lock()
					attempts++
					mu.Unlock()
					resp, err := b.Submit(ctx, sender, []string{ngIntel}, msg)
					if err == nil {
						mu.Lock()
						acked[packageOf(t, resp)] = i
						mu.Unlock()
						break
					}
					if code, text := smtpCode(err); code >= 500 {
						t.Errorf("package %d refused: %d %s", i, code, text)
						return
					}
					mu.Lock()
					failures++
					mu.Unlock()
					// The sender is down or was killed mid-session: wait
					// until it listens again, then retry.
					testbed.WaitFor(ctx, 10*time.Second, func() bool { return listening(b.Nodes[sender].Submission) })
				}
			}
		}()
	}
	wg.Wait()
	submitted := time.Since(start)
	// Keep killing while the queue drains, until most packages are in:
	// kills during relay and delivery are where duplicates would come from.
	testbed.WaitFor(ctx, 40*time.Second, func() bool {
		return len(b.Delivered(receiver, ngIntel)) >= packages*9/10
	})
	close(stopKilling)
	<-killerDone
	if killErr != nil {
		t.Fatal(killErr)
	}
	for _, id := range []string{sender, receiver} {
		if !b.Running(id) {
			if err := b.Start(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(acked) != packages {
		t.Fatalf("%d of %d packages acknowledged", len(acked), packages)
	}
	t.Logf("submitted in %s: %d packages acknowledged in %d attempts (%d cut by kills); kills until %s: %v", submitted.Round(time.Second), len(acked), attempts, failures, time.Since(start).Round(time.Second), kills)

	// Every acknowledged package must arrive.
	var per map[string]int
	ok := testbed.WaitFor(ctx, 60*time.Second, func() bool {
		per, _ = deliveredByPackage(b, receiver)
		for pkg := range acked {
			if per[pkg] == 0 {
				return false
			}
		}
		return true
	})
	if !ok {
		var missing []string
		for pkg, i := range acked {
			if per[pkg] == 0 {
				missing = append(missing, fmt.Sprintf("%s (#%d)", pkg, i))
			}
		}
		sort.Strings(missing)
		items, _ := b.Queue(context.Background(), sender, store.Filter{State: store.Queued})
		t.Fatalf("%d acknowledged packages never delivered: %v\nstill queued at the sender:%s", len(missing), missing, describeItems(items))
	}
	// And the sender's queue drains: nothing left to send twice later.
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool {
		items, err := b.Queue(ctx, sender, store.Filter{State: store.Queued})
		return err == nil && len(items) == 0
	}) {
		items, _ := b.Queue(ctx, sender, store.Filter{State: store.Queued})
		t.Fatalf("the sender's queue does not drain:%s", describeItems(items))
	}
	per, boxes := deliveredByPackage(b, receiver)
	orphans := 0
	for pkg, n := range per {
		if n != 1 {
			t.Errorf("package %s delivered %d times", pkg, n)
		}
		if _, ok := acked[pkg]; !ok {
			orphans++
		}
	}
	if per["(none)"] != 0 {
		t.Errorf("%d delivered messages carry no verified package id", per["(none)"])
	}
	failed, _ := b.Queue(ctx, sender, store.Filter{State: store.Failed})
	if len(failed) != 0 {
		t.Errorf("%d queue items failed:%s", len(failed), describeItems(failed))
	}
	// The receiver saw some envelopes again (its 250 lost to a kill of
	// either side) and acknowledged them without delivering twice.
	logData, _ := os.ReadFile(b.Nodes[receiver].Log)
	dups := strings.Count(string(logData), "duplicate package acknowledged")
	t.Logf("delivered after %s: %d acknowledged packages once each, %d orphans (stored, 250 lost to a kill, resubmitted), %d re-sent envelopes deduplicated by the receiver, mailboxes %v",
		time.Since(start).Round(time.Second), len(acked), orphans, dups, boxes)

	// The audit trail lost nothing to the kills (docs/design.md: every
	// arrow writes an audit event): every package the receiver has, the
	// acknowledged ones and the orphans, has its events in both gateways'
	// chains, and both chains verify. The events are written in the same
	// transactions as the state changes they record (the audit outbox), so
	// no kill can separate them.
	want := map[string][]audit.Kind{
		sender:   {audit.Received, audit.Sealed, audit.Queued, audit.Sent},
		receiver: {audit.Received, audit.Delivered},
	}
	for _, id := range []string{sender, receiver} {
		b.Stop(id)
		cfg := b.Nodes[id].Config
		if v := run(t, b.Dir, nil, nil, conduitBin, "audit", "verify", "--config", cfg); v.code != 0 || !strings.Contains(v.stdout, "chain intact") {
			t.Errorf("%s: audit verify: %s%s", id, v.stdout, v.stderr)
		}
		kinds := map[string]map[audit.Kind]bool{}
		out := mustRun(t, b.Dir, nil, nil, conduitBin, "audit", "export", "--config", cfg)
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var e audit.Event
			tcheck(t, json.Unmarshal([]byte(line), &e), "export line")
			if kinds[e.Package] == nil {
				kinds[e.Package] = map[audit.Kind]bool{}
			}
			kinds[e.Package][e.Kind] = true
		}
		missing := 0
		for pkg := range per {
			if pkg == "(none)" {
				continue
			}
			for _, k := range want[id] {
				if !kinds[pkg][k] {
					missing++
					if missing <= 5 {
						t.Errorf("%s: package %s (acknowledged: %v) has no %s event in the audit trail", id, pkg, hasKey(acked, pkg), k)
					}
				}
			}
		}
		if missing > 5 {
			t.Errorf("%s: %d events missing in all", id, missing)
		}
	}
}

func hasKey[V any](m map[string]V, k string) bool { _, ok := m[k]; return ok }

func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
