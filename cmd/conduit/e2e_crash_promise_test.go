package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/testbed"
)

var crashSeed = flag.Uint64("crash-seed", 0, "replay TestCrashKilledAroundThe250KeepsEveryPromise with this seed (0: a new one)")

// TestCrashKilledAroundThe250KeepsEveryPromise kills the sending gateway
// with SIGKILL a few milliseconds after a client has sent the end of its
// DATA, when the package is being sealed and stored or its 250 is on its
// way (and, in some rounds, the receiving gateway as well while it
// relays), over several rounds at seeded random moments (the seed is
// printed; -args -crash-seed=N replays it). Every package is an escape
// risk in a corruption report: the policy escalates it (an acknowledgement
// clock at the sender) and the prison triages it (a triage clock there).
//
// After the last restart, every package whose submission got a 250, and
// every package stored whose 250 a kill cut (an orphan, resubmitted by
// its client under a new id), must hold what the 250 promises:
//   - in the prison's Maildir once per mailbox it was sent to;
//   - at the sender: its queue items, all sent; its retention clock and
//     its acknowledgement clock, stopped by the prison's receipt; the
//     receipt; the audit events received, sealed, queued, sent, receipt;
//   - at the prison: its replay record, its receipt queued and sent back,
//     its triage and retention clocks, the audit events received,
//     delivered, receipt;
//   - and both audit chains verify.
func TestCrashKilledAroundThe250KeepsEveryPromise(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: kills and restarts (runs without -short, as in test.sh)")
	}
	const (
		rounds   = 4
		perRound = 8
		clients  = 4
		sender   = "northshire-pio"
		receiver = "hmp-northgate"
	)
	// The RPIU runs as well: the example policy may copy it in.
	b := newE2EBed(t, testbed.Options{RetryMin: "200ms", RetryMax: "1s"}, sender, receiver, "rpiu-north-east")
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay: go test ./cmd/conduit -run %s -args -crash-seed=%d)", seed, t.Name(), seed)
	rng := rand.New(rand.NewPCG(seed, 7))

	var mu sync.Mutex
	acked := map[string]string{} // package id → reference
	cut := 0                     // submissions that got no reply
	for round := range rounds {
		// The moment: the k-th end of DATA in this round, then a delay of
		// 0-20 ms (sealing and storing take a few ms: the kill lands before,
		// during or after the store write, or before the 250 is read).
		k, delay := 1+rng.IntN(perRound), time.Duration(rng.IntN(21))*time.Millisecond
		killReceiver := rng.IntN(2) == 0
		receiverDelay := time.Duration(rng.IntN(300)) * time.Millisecond
		t.Logf("round %d: SIGKILL %s %s after end of DATA #%d; %s too: %v (%s into the round)", round, sender, delay, k, receiver, killReceiver, receiverDelay)

		dataSent := make(chan struct{}, perRound*4)
		killerDone := make(chan error, 1)
		go func() {
			var rcvErr chan error
			if killReceiver {
				rcvErr = make(chan error, 1)
				go func() {
					time.Sleep(receiverDelay)
					b.Kill(receiver)
					rcvErr <- b.Start(ctx, receiver)
				}()
			}
			for range k {
				select {
				case <-dataSent:
				case <-ctx.Done():
					killerDone <- ctx.Err()
					return
				}
			}
			time.Sleep(delay)
			b.Kill(sender)
			err := b.Start(ctx, sender)
			if rcvErr != nil {
				if e := <-rcvErr; err == nil {
					err = e
				}
			}
			killerDone <- err
		}()

		next := make(chan int)
		go func() {
			defer close(next)
			for i := range perRound {
				select {
				case next <- round*perRound + i:
				case <-ctx.Done():
					return
				}
			}
		}()
		var wg sync.WaitGroup
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					ref := fmt.Sprintf("NP-PROMISE-%04d", i)
					msg := e2eMessage(strings.Replace(e2eLabel, "NP-2026-0001", ref, 1), fmt.Sprintf("Escape plan %d", i),
						"Conduit-Risk: escape", "Conduit-Topic: corruption")
					for ctx.Err() == nil {
						resp, err := submitSignalling(ctx, b, sender, ngIntel, msg, dataSent)
						if err == nil {
							pkg := packageIDRE.FindString(resp)
							mu.Lock()
							acked[pkg] = ref
							mu.Unlock()
							if pkg == "" {
								t.Errorf("%s: the 250 names no package: %q", ref, resp)
							}
							break
						}
						if code, text := smtpCode(err); code >= 500 {
							t.Errorf("%s refused: %d %s", ref, code, text)
							return
						}
						mu.Lock()
						cut++
						mu.Unlock()
						testbed.WaitFor(ctx, 10*time.Second, func() bool { return listening(b.Nodes[sender].Submission) })
					}
				}
			}()
		}
		wg.Wait()
		if err := <-killerDone; err != nil {
			t.Fatalf("round %d: restart after the kill: %v", round, err)
		}
	}
	if len(acked) != rounds*perRound {
		t.Fatalf("%d of %d packages acknowledged", len(acked), rounds*perRound)
	}

	// Every acknowledged package arrives, and both queues drain (the
	// packages at the sender, the receipts at the prison).
	var per map[string]int
	if !testbed.WaitFor(ctx, 60*time.Second, func() bool {
		per, _ = deliveredByPackage(b, receiver)
		for pkg := range acked {
			if per[pkg] == 0 {
				return false
			}
		}
		return true
	}) {
		var missing []string
		for pkg, ref := range acked {
			if per[pkg] == 0 {
				missing = append(missing, pkg+" ("+ref+")")
			}
		}
		items, _ := b.Queue(ctx, sender, store.Filter{State: store.Queued})
		t.Fatalf("%d acknowledged packages never delivered: %v\nstill queued at the sender:%s", len(missing), missing, describeItems(items))
	}
	// Drained: nothing queued, and no receipt recorded at a delivery and
	// still gathering for its batch (it is not a queue item until the
	// batch is sealed, up to queue.receipt-gather after the delivery, and
	// a queue seen empty before then drains no further once the gateways
	// stop).
	for _, id := range []string{sender, receiver, "rpiu-north-east"} {
		if !testbed.WaitFor(ctx, 30*time.Second, func() bool {
			items, err := b.Queue(ctx, id, store.Filter{State: store.Queued})
			return err == nil && len(items) == 0 && pendingReceipts(t, b, id) == 0
		}) {
			items, _ := b.Queue(ctx, id, store.Filter{State: store.Queued})
			t.Fatalf("the queue of %s does not drain:%s", id, describeItems(items))
		}
	}
	// The packages the prison has: the acknowledged ones and the orphans.
	var pkgs []string
	orphans := 0
	for pkg := range per {
		if pkg == "(none)" {
			t.Errorf("%d delivered messages carry no verified package id", per[pkg])
			continue
		}
		pkgs = append(pkgs, pkg)
		if _, ok := acked[pkg]; !ok {
			orphans++
		}
	}
	t.Logf("%d packages acknowledged, %d submissions cut by kills, %d orphans (stored, their 250 lost to a kill)", len(acked), cut, orphans)

	// Once per mailbox: the addressed one and the escalation copy.
	perBox := map[string]map[string]int{}
	for box, files := range readDeliveredFiles(t, b, receiver) {
		perBox[box] = map[string]int{}
		for _, hdr := range files {
			if m := verifiedPkgRE.FindStringSubmatch(hdr); m != nil {
				perBox[box][m[1]]++
			}
		}
	}
	duty := strings.ToLower(b.Directory.Agency(receiver).Escalation[0].Address)
	for _, pkg := range pkgs {
		for _, box := range []string{strings.ToLower(ngIntel), duty} {
			if n := perBox[box][pkg]; n != 1 {
				t.Errorf("package %s (%s) is in %s %d times; want once", pkg, acked[pkg], box, n)
			}
		}
	}
	for box, m := range perBox {
		for pkg, n := range m {
			if n != 1 {
				t.Errorf("package %s is in %s %d times", pkg, box, n)
			}
		}
	}

	// The stores, read with both gateways stopped (their audit outboxes
	// drained).
	b.Stop(sender)
	b.Stop(receiver)
	snd, rcv := readPromises(t, b, sender), readPromises(t, b, receiver)
	failures := 0
	fail := func(format string, args ...any) {
		failures++
		if failures <= 12 {
			t.Errorf(format, args...)
		}
	}
	for _, pkg := range pkgs {
		what := fmt.Sprintf("package %s (acknowledged: %v)", pkg, hasKey(acked, pkg))
		// The sender.
		items := snd.items[pkg]
		if len(items) == 0 {
			fail("%s: no queue item at the sender", what)
		}
		toPrison := false
		for _, it := range items {
			toPrison = toPrison || it.destination == receiver
			if it.state != string(store.Sent) {
				fail("%s: the sender's item for %s is %s", what, it.destination, it.state)
			}
		}
		if !toPrison {
			fail("%s: no queue item for %s at the sender", what, receiver)
		}
		if done, ok := snd.clocks[clockKey{pkg, "retention", sender}]; !ok || done {
			fail("%s: no open retention clock at the sender", what)
		}
		// The escalation's clocks: one for the prison at least, each
		// stopped by its destination's receipt.
		if _, ok := snd.clocks[clockKey{pkg, "acknowledge", receiver}]; !ok {
			fail("%s: no acknowledgement clock for %s at the sender", what, receiver)
		}
		for k, done := range snd.clocks {
			if k.pkg == pkg && k.kind == "acknowledge" && !done {
				fail("%s: the acknowledgement clock for %s was not stopped by a receipt", what, k.agency)
			}
		}
		if !snd.receipts[pkg] {
			fail("%s: no receipt from %s recorded at the sender", what, receiver)
		}
		for _, k := range []audit.Kind{audit.Received, audit.Sealed, audit.Queued, audit.Sent, audit.Receipt} {
			if !snd.events[pkg][k] {
				fail("%s: no %s event in the sender's audit trail", what, k)
			}
		}
		// The prison.
		if !rcv.delivered[pkg] {
			fail("%s: no replay record at the prison", what)
		}
		if its := rcv.items["rcpt-"+pkg]; len(its) != 1 || its[0].state != string(store.Sent) || its[0].destination != sender {
			fail("%s: the prison's receipt item: %+v; want one, sent to %s", what, its, sender)
		}
		for _, kind := range []string{"triage", "retention"} {
			if done, ok := rcv.clocks[clockKey{pkg, kind, sender}]; !ok || done {
				fail("%s: no open %s clock at the prison", what, kind)
			}
		}
		for _, k := range []audit.Kind{audit.Received, audit.Delivered, audit.Receipt} {
			if !rcv.events[pkg][k] {
				fail("%s: no %s event in the prison's audit trail", what, k)
			}
		}
	}
	if failures > 12 {
		t.Errorf("%d failures in all", failures)
	}
	for _, id := range []string{sender, receiver} {
		if v := run(t, b.Dir, nil, nil, conduitBin, "audit", "verify", "--config", b.Nodes[id].Config); v.code != 0 || !strings.Contains(v.stdout, "chain intact") {
			t.Errorf("%s: audit verify: %s%s", id, v.stdout, v.stderr)
		}
	}
}

// submitSignalling submits msg as the node's account, like Bed.Submit,
// and tells sent (without waiting) just before it sends the end of DATA.
func submitSignalling(ctx context.Context, b *testbed.Bed, id, rcpt string, msg []byte, sent chan<- struct{}) (string, error) {
	n := b.Nodes[id]
	c, err := smtp.DialStartTLS(n.Submission, b.ClientTLS())
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = 30*time.Second, 30*time.Second
	if err := c.Hello("crash.localhost"); err != nil {
		return "", err
	}
	if err := c.Auth(sasl.NewPlainClient("", n.User, n.Password)); err != nil {
		return "", err
	}
	if err := c.Mail(n.Address, nil); err != nil {
		return "", err
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return "", err
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write(msg); err != nil {
		return "", err
	}
	select {
	case sent <- struct{}{}:
	default:
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	c.Quit()
	return resp.StatusText, nil
}

// readDeliveredFiles returns the headers of a node's delivered messages,
// by mailbox.
func readDeliveredFiles(t *testing.T, b *testbed.Bed, agency string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for box, msgs := range readDelivered(t, b, agency) {
		for _, m := range msgs {
			hdr, _, _ := strings.Cut(m, "\r\n\r\n")
			out[box] = append(out[box], hdr)
		}
	}
	return out
}

type clockKey struct{ pkg, kind, agency string }

type itemRow struct{ destination, state string }

// promises is what a gateway's store and audit trail hold per package.
type promises struct {
	items     map[string][]itemRow
	clocks    map[clockKey]bool // open or stopped (true)
	receipts  map[string]bool
	delivered map[string]bool // the replay cache
	events    map[string]map[audit.Kind]bool
}

// pendingReceipts counts the receipts a node recorded at delivery that
// are not yet in a batch (read-only, while it runs).
func pendingReceipts(t *testing.T, b *testbed.Bed, id string) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+b.StorePath(id)+"?mode=ro")
	tcheck(t, err, "open the store of "+id)
	defer db.Close()
	var n int
	tcheck(t, db.QueryRow(`SELECT count(*) FROM pending_receipts`).Scan(&n), id+": pending receipts")
	return n
}

// readPromises reads a stopped node's store tables (read-only) and its
// audit trail (conduit audit export).
func readPromises(t *testing.T, b *testbed.Bed, id string) promises {
	t.Helper()
	p := promises{items: map[string][]itemRow{}, clocks: map[clockKey]bool{}, receipts: map[string]bool{},
		delivered: map[string]bool{}, events: map[string]map[audit.Kind]bool{}}
	db, err := sql.Open("sqlite", "file:"+b.StorePath(id)+"?mode=ro")
	tcheck(t, err, "open the store of "+id)
	defer db.Close()
	query := func(q string, scan func(*sql.Rows) error) {
		rows, err := db.Query(q)
		tcheck(t, err, id+": "+q)
		defer rows.Close()
		for rows.Next() {
			tcheck(t, scan(rows), id+": "+q)
		}
		tcheck(t, rows.Err(), id+": "+q)
	}
	query(`SELECT package_id, destination, state FROM queue`, func(r *sql.Rows) error {
		var pkg string
		var it itemRow
		err := r.Scan(&pkg, &it.destination, &it.state)
		p.items[pkg] = append(p.items[pkg], it)
		return err
	})
	query(`SELECT package_id, kind, agency, done FROM deadlines`, func(r *sql.Rows) error {
		var k clockKey
		var done int64
		err := r.Scan(&k.pkg, &k.kind, &k.agency, &done)
		p.clocks[k] = done != 0
		return err
	})
	query(`SELECT package_id FROM receipts`, func(r *sql.Rows) error {
		var pkg string
		err := r.Scan(&pkg)
		p.receipts[pkg] = true
		return err
	})
	query(`SELECT package_id FROM delivered`, func(r *sql.Rows) error {
		var pkg string
		err := r.Scan(&pkg)
		p.delivered[pkg] = true
		return err
	})
	out := mustRun(t, b.Dir, nil, nil, conduitBin, "audit", "export", "--config", b.Nodes[id].Config)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e audit.Event
		tcheck(t, json.Unmarshal([]byte(line), &e), "export line")
		if p.events[e.Package] == nil {
			p.events[e.Package] = map[audit.Kind]bool{}
		}
		p.events[e.Package][e.Kind] = true
	}
	return p
}
