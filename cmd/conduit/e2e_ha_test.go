package main

// Several gateways of one agency on one PostgreSQL database: real conduit
// processes, a real PostgreSQL server (pgtest), real SMTP with TLS.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/pgtest"
	"github.com/conduit-gateway/conduit/testbed"
)

// haPackages is how many packages the multi-gateway crash test sends:
// CONDUIT_HA_PACKAGES, default 300 (about a minute on a 2-core machine
// with four gateways and the database on it).
func haPackages() int {
	if n, err := strconv.Atoi(os.Getenv("CONDUIT_HA_PACKAGES")); err == nil && n > 0 {
		return n
	}
	return 300
}

// submitAll submits n packages to the sender with clients in parallel,
// each until it gets a 250 (waiting while the sender answers 4xx or is
// down), and returns the acknowledged package ids. A 5xx fails the test.
func submitAll(ctx context.Context, t *testing.T, b *testbed.Bed, sender string, n, clients int, tag string, tempFail func(code int)) map[string]int {
	var mu sync.Mutex
	acked := map[string]int{}
	next := make(chan int)
	go func() {
		defer close(next)
		for i := range n {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for i := range next {
				msg := e2eMessage(strings.Replace(e2eLabel, "NP-2026-0001", fmt.Sprintf("NP-%s-%04d", tag, i), 1), fmt.Sprintf("%s package %d", tag, i))
				for ctx.Err() == nil {
					resp, err := b.Submit(ctx, sender, []string{ngIntel}, msg)
					if err == nil {
						mu.Lock()
						acked[packageOf(t, resp)] = i
						mu.Unlock()
						break
					}
					code, text := smtpCode(err)
					if code >= 500 {
						t.Errorf("package %d refused: %d %s", i, code, text)
						return
					}
					if tempFail != nil {
						tempFail(code)
					}
					select {
					case <-ctx.Done():
					case <-time.After(100 * time.Millisecond):
					}
				}
			}
		})
	}
	wg.Wait()
	return acked
}

// auditKinds reads a gateway's audit trail with the command line: the
// number of events of each kind per package; and checks that the chain
// verifies.
func auditKinds(t *testing.T, b *testbed.Bed, id string) map[string]map[audit.Kind]int {
	t.Helper()
	cfg := b.Nodes[id].Config
	if v := run(t, b.Dir, nil, nil, conduitBin, "audit", "verify", "--config", cfg); v.code != 0 || !strings.Contains(v.stdout, "chain intact") {
		t.Errorf("%s: audit verify: %s%s", id, v.stdout, v.stderr)
	}
	kinds := map[string]map[audit.Kind]int{}
	out := mustRun(t, b.Dir, nil, nil, conduitBin, "audit", "export", "--config", cfg)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e audit.Event
		tcheck(t, json.Unmarshal([]byte(line), &e), "export line")
		if kinds[e.Package] == nil {
			kinds[e.Package] = map[audit.Kind]int{}
		}
		kinds[e.Package][e.Kind]++
	}
	return kinds
}

// TestHAThreeGatewaysSurviveSIGKILL runs one agency (HMP Northgate) as
// three gateways on one PostgreSQL database, listed in the directory as
// its gateways in order of preference, and a partner (Northshire PIO)
// relaying packages to them while one of the three is killed with SIGKILL
// at random moments, again and again, and started again a little later.
// Every acknowledged package must be delivered exactly once (one Maildir
// file and one "delivered" audit event), every receipt must come back, both
// agencies' audit chains must verify, and nothing may stay claimed by a
// killed gateway once its lease has run out.
func TestHAThreeGatewaysSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-gateway crash test: a minute of kills (runs without -short, as in test.sh)")
	}
	const sender, receiver = "northshire-pio", "hmp-northgate"
	gws := []string{receiver, receiver + "/2", receiver + "/3"}
	pg := pgtest.Start(t)
	dsn := pgtest.NewDB(t, pg)
	packages := haPackages()
	b := newE2EBed(t, testbed.Options{RetryMin: "200ms", RetryMax: "1s",
		Postgres: map[string]string{receiver: dsn}, Gateways: map[string]int{receiver: 3}},
		append([]string{sender}, gws...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d packages", seed, packages)
	rng := rand.New(rand.NewPCG(seed, 7))
	start := time.Now()

	// The killer: every 0.5-2.5 s, SIGKILL one of the three at random,
	// and start it again 0.2-2 s later (meanwhile the others carry on).
	stopKilling := make(chan struct{})
	killerDone := make(chan struct{})
	kills := map[string]int{}
	var killed atomic.Int32
	var killErr error
	go func() {
		defer close(killerDone)
		for {
			select {
			case <-stopKilling:
				return
			case <-time.After(time.Duration(500+rng.IntN(2000)) * time.Millisecond):
			}
			v := gws[rng.IntN(len(gws))]
			b.Kill(v)
			kills[v]++
			killed.Add(1)
			select {
			case <-stopKilling:
			case <-time.After(time.Duration(200+rng.IntN(1800)) * time.Millisecond):
			}
			if err := b.Start(ctx, v); err != nil {
				killErr = fmt.Errorf("restart %s after kill %d: %w", v, kills[v], err)
				return
			}
		}
	}()

	acked := submitAll(ctx, t, b, sender, packages, 4, "HA", nil)
	submitted := time.Since(start)
	// Keep killing while the queues drain (kills during relay, delivery
	// and receipts are where duplicates and stuck claims would come
	// from), at least six times.
	testbed.WaitFor(ctx, 90*time.Second, func() bool {
		per, _ := deliveredByPackage(b, receiver)
		return len(per) >= packages*9/10 && killed.Load() >= 6
	})
	close(stopKilling)
	<-killerDone
	if killErr != nil {
		t.Fatal(killErr)
	}
	for _, id := range gws {
		if !b.Running(id) {
			if err := b.Start(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	total := 0
	for _, n := range kills {
		total += n
	}
	if total < 3 {
		t.Fatalf("only %d kills: the test proves nothing", total)
	}
	if len(acked) != packages {
		t.Fatalf("%d of %d packages acknowledged", len(acked), packages)
	}
	t.Logf("submitted in %s; kills %v until %s", submitted.Round(time.Second), kills, time.Since(start).Round(time.Second))

	// Every acknowledged package arrives, once.
	var per map[string]int
	if !testbed.WaitFor(ctx, 90*time.Second, func() bool {
		per, _ = deliveredByPackage(b, receiver)
		for pkg := range acked {
			if per[pkg] == 0 {
				return false
			}
		}
		return true
	}) {
		var missing []string
		for pkg := range acked {
			if per[pkg] == 0 {
				missing = append(missing, pkg)
			}
		}
		sort.Strings(missing)
		t.Fatalf("%d acknowledged packages never delivered: %v", len(missing), missing)
	}
	for pkg, n := range per {
		if n != 1 {
			t.Errorf("package %s delivered %d times", pkg, n)
		}
	}

	// Every receipt comes back, relayed by whichever of the three claimed
	// it; and nothing stays claimed by a killed gateway: the receivers'
	// shared queue drains once the leases of the dead have run out.
	sst, err := b.OpenStore(ctx, sender)
	tcheck(t, err, "sender store")
	defer sst.Close()
	rst, err := store.OpenPostgres(ctx, dsn)
	tcheck(t, err, "receiver store")
	defer rst.Close()
	var noReceipt []string
	if !testbed.WaitFor(ctx, 90*time.Second, func() bool {
		noReceipt = noReceipt[:0]
		for pkg := range acked {
			if r, err := sst.Receipts(ctx, pkg); err != nil || len(r) == 0 {
				noReceipt = append(noReceipt, pkg)
			}
		}
		q, err := rst.List(ctx, store.Filter{State: store.Queued})
		return len(noReceipt) == 0 && err == nil && len(q) == 0
	}) {
		q, _ := rst.List(ctx, store.Filter{State: store.Queued})
		t.Fatalf("%d receipts missing at the sender; %d items still queued at the receivers:%s", len(noReceipt), len(q), describeItems(q))
	}
	if q, _ := sst.List(ctx, store.Filter{State: store.Queued}); len(q) != 0 {
		t.Errorf("%d items still queued at the sender", len(q))
	}

	// Load: which of the three delivered how many.
	spread := map[string]int{}
	for _, id := range gws {
		data, _ := os.ReadFile(b.Nodes[id].Log)
		spread[id] = strings.Count(string(data), `"msg":"package delivered"`)
	}
	t.Logf("all %d delivered once and receipted after %s; deliveries per gateway (by preference) %v", len(acked), time.Since(start).Round(time.Second), spread)

	// Both agencies' chains verify, and the receivers' one chain holds one
	// "delivered" event per package: no package was processed twice.
	b.Stop(sender)
	for _, id := range gws {
		b.Stop(id)
	}
	recv := auditKinds(t, b, receiver)
	send := auditKinds(t, b, sender)
	for pkg := range acked {
		if n := recv[pkg][audit.Delivered]; n != 1 {
			t.Errorf("package %s: %d delivered events in the receivers' chain", pkg, n)
		}
		for _, k := range []audit.Kind{audit.Received, audit.Sealed, audit.Queued, audit.Sent, audit.Receipt} {
			if send[pkg][k] == 0 {
				t.Errorf("package %s: no %s event in the sender's chain", pkg, k)
			}
		}
	}
}

// lmtpSink is an LMTP server that counts every message it is given, by
// the verified package id in its header: a second delivery of a package
// shows here, where a Maildir's fixed file names would hide it.
type lmtpSink struct {
	addr string
	mu   sync.Mutex
	per  map[string]int
}

func startLMTPSink(t *testing.T) *lmtpSink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listen lmtp")
	k := &lmtpSink{addr: l.Addr().String(), per: map[string]int{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &lmtpSession{k: k}, nil }))
	srv.LMTP = true
	srv.Domain = "mailstore.test"
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return k
}

func (k *lmtpSink) count(pkg string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.per[pkg]
}

type lmtpSession struct {
	k     *lmtpSink
	rcpts int
}

func (s *lmtpSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *lmtpSession) Rcpt(string, *smtp.RcptOptions) error { s.rcpts++; return nil }
func (s *lmtpSession) Reset()                               { s.rcpts = 0 }
func (s *lmtpSession) Logout() error                        { return nil }
func (s *lmtpSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	pkg := "(none)"
	if m := verifiedPkgRE.FindSubmatch(data); m != nil {
		pkg = string(m[1])
	}
	s.k.mu.Lock()
	s.k.per[pkg] += s.rcpts
	s.k.mu.Unlock()
	return nil
}

func (s *lmtpSession) LMTPData(r io.Reader, st smtp.StatusCollector) error {
	return s.Data(r)
}

// TestHASameEnvelopeAtTwoGatewaysDeliveredOnce hands the same sealed
// envelope to two gateways of one agency at the same moment, again and
// again: both answer 250, and the mail store (an LMTP server that counts
// every delivery) receives each package once.
func TestHASameEnvelopeAtTwoGatewaysDeliveredOnce(t *testing.T) {
	const sender, receiver = "northshire-pio", "hmp-northgate"
	pg := pgtest.Start(t)
	dsn := pgtest.NewDB(t, pg)
	sink := startLMTPSink(t)
	b := newE2EBed(t, testbed.Options{Postgres: map[string]string{receiver: dsn}, Gateways: map[string]int{receiver: 2},
		LMTP: map[string]string{receiver: sink.addr}}, receiver, receiver+"/2")
	ctx := context.Background()
	const rounds = 10
	for i := range rounds {
		env, pkg := sealFor(t, b, sender, receiver, strings.Replace(e2eLabel, "NP-2026-0001", fmt.Sprintf("NP-TWIN-%02d", i), 1),
			e2eMessage(e2eLabel, fmt.Sprintf("Twin %d", i)))
		var wg sync.WaitGroup
		var ok atomic.Int32
		release := make(chan struct{})
		for _, id := range []string{receiver, receiver + "/2"} {
			wg.Go(func() {
				<-release
				if _, err := b.Inject(ctx, id, "conduit@northshire-pio.example", []string{ngIntel}, env); err != nil {
					t.Errorf("round %d, %s: %v", i, id, err)
					return
				}
				ok.Add(1)
			})
		}
		close(release)
		wg.Wait()
		if ok.Load() != 2 {
			t.Fatalf("round %d: %d of 2 gateways accepted", i, ok.Load())
		}
		if n := sink.count(pkg); n != 1 {
			t.Fatalf("round %d: package %s delivered %d times", i, pkg, n)
		}
	}
	recv := auditKinds(t, b, receiver)
	n := 0
	for _, k := range recv {
		n += k[audit.Delivered]
	}
	if n != rounds {
		t.Errorf("%d delivered events in the agency's chain, want %d", n, rounds)
	}
}

// TestHADatabaseDownAnswers451AndRecovers stops the database under two
// gateways of the sending agency while packages are submitted: they
// answer 451 (nothing acknowledged that is not stored) and /readyz says
// not ready; started again, the gateways recover by themselves (no
// restart) and every acknowledged package is delivered. The outage is
// about 10 s (scaled down from 30 s to keep the test short; the gateways'
// behaviour does not depend on its length).
func TestHADatabaseDownAnswers451AndRecovers(t *testing.T) {
	if testing.Short() {
		t.Skip("database outage test: about 30 s")
	}
	const sender, receiver = "northshire-pio", "hmp-northgate"
	pg := pgtest.Start(t)
	dsn := pgtest.NewDB(t, pg)
	b := newE2EBed(t, testbed.Options{RetryMin: "200ms", RetryMax: "1s",
		Postgres: map[string]string{sender: dsn}, Gateways: map[string]int{sender: 2}},
		sender, sender+"/2", receiver)
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	var tempFails atomic.Int32
	var codes sync.Map
	// Half the packages before the outage, the rest through it.
	acked := submitAll(ctx, t, b, sender, 20, 2, "PRE", nil)
	down := make(chan struct{})
	go func() {
		defer close(down)
		tcheck(t, pg.Stop(), "stop postgres")
	}()
	<-down
	outage := time.Now()
	// While down: submissions get 451, /readyz is not ready.
	_, err := b.Submit(ctx, sender, []string{ngIntel}, e2eMessage(e2eLabel, "During the outage"))
	if code, text := smtpCode(err); code != 451 {
		t.Errorf("a submission while the database is down: %v (%d %s), want 451", err, code, text)
	}
	if code := readyz(b.Nodes[sender].Admin); code != 503 {
		t.Errorf("/readyz while the database is down: %d, want 503", code)
	}
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		time.Sleep(10*time.Second - time.Since(outage))
		tcheck(t, pg.Start(ctx), "start postgres")
	}()
	more := submitAll(ctx, t, b, sender, 20, 2, "DURING", func(code int) {
		tempFails.Add(1)
		n, _ := codes.LoadOrStore(code, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
	})
	<-restarted
	for k, v := range more {
		acked[k] = v
	}
	var seen []string
	codes.Range(func(k, v any) bool {
		seen = append(seen, fmt.Sprintf("%v×%d", k, v.(*atomic.Int32).Load()))
		return true
	})
	t.Logf("outage of %s: %d temporary failures while submitting (%v)", time.Since(outage).Round(time.Second), tempFails.Load(), seen)
	codes.Range(func(k, _ any) bool {
		if c := k.(int); c != 451 && c != 0 {
			t.Errorf("a submission during the outage got %d, want 451 (or no connection)", c)
		}
		return true
	})
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool { return readyz(b.Nodes[sender].Admin) == 200 }) {
		t.Errorf("/readyz does not recover after the database is back")
	}
	if !testbed.WaitFor(ctx, 60*time.Second, func() bool {
		per, _ := deliveredByPackage(b, receiver)
		for pkg := range acked {
			if per[pkg] == 0 {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("acknowledged packages lost across the outage")
	}
	for _, id := range []string{sender, sender + "/2"} {
		if !b.Running(id) {
			t.Errorf("%s exited during the outage: it must wait for the database", id)
		}
	}
	b.Stop(sender)
	b.Stop(sender + "/2")
	auditKinds(t, b, sender)
}

// readyz returns the status code of a gateway's /readyz (0: no answer).
func readyz(admin string) int {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + admin + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestHAPolicyReloadReachesTheOtherGateways reloads the policy on one of
// two gateways of an agency (SIGHUP): the other reloads too, promptly, and
// the agency's one chain records both reloads.
func TestHAPolicyReloadReachesTheOtherGateways(t *testing.T) {
	const agency = "northshire-pio"
	pg := pgtest.Start(t)
	dsn := pgtest.NewDB(t, pg)
	b := newE2EBed(t, testbed.Options{Postgres: map[string]string{agency: dsn}, Gateways: map[string]int{agency: 2}}, agency, agency+"/2")
	ctx := context.Background()
	// The second gateway may not listen yet: SIGHUP again until it hears.
	pidData, err := os.ReadFile(filepath.Join(b.Nodes[agency].Dir, "conduit.pid"))
	tcheck(t, err, "pid file")
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidData)))
	tcheck(t, err, "pid")
	heard := func() bool {
		data, _ := os.ReadFile(b.Nodes[agency+"/2"].Log)
		return strings.Contains(string(data), `"msg":"policy reloaded"`)
	}
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool {
		syscall.Kill(pid, syscall.SIGHUP)
		return testbed.WaitFor(ctx, time.Second, heard)
	}) {
		t.Fatal("the second gateway did not reload its policy")
	}
	st, err := store.OpenPostgres(ctx, dsn)
	tcheck(t, err, "store")
	defer st.Close()
	tr, err := audit.NewPostgres(ctx, st.Pool(), nil)
	tcheck(t, err, "trail")
	actors := map[string]int{}
	testbed.WaitFor(ctx, 10*time.Second, func() bool {
		es, err := tr.Query(ctx, audit.Filter{Kind: audit.PolicyReload})
		tcheck(t, err, "query")
		clear(actors)
		for _, e := range es {
			actors[e.Actor]++
		}
		return actors["gateway"] > 0 && actors["another gateway of the agency"] > 0
	})
	if actors["gateway"] == 0 || actors["another gateway of the agency"] == 0 {
		t.Fatalf("policy-reload events by actor: %v", actors)
	}
}
