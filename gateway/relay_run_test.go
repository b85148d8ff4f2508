package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/examples"
	"github.com/conduit-gateway/conduit/gateway"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/policy"
	"github.com/conduit-gateway/conduit/testbed"
	"go.uber.org/goleak"
)

// countingProxy forwards TCP connections (TLS passes through it untouched)
// and counts them, so that a test sees how many sessions a gateway opened
// to another and whether they are still open.
type countingProxy struct {
	l        net.Listener
	to       string
	mu       sync.Mutex
	accepted int
	open     int
}

func startProxy(t *testing.T) *countingProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{l: l}
	t.Cleanup(func() { l.Close() })
	return p
}

func (p *countingProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.accepted++
		p.open++
		p.mu.Unlock()
		go func() {
			defer func() {
				p.mu.Lock()
				p.open--
				p.mu.Unlock()
			}()
			defer c.Close()
			up, err := net.Dial("tcp", p.to)
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{})
			go func() { io.Copy(up, c); up.Close(); close(done) }()
			io.Copy(c, up)
			c.Close()
			<-done
		}()
	}
}

func (p *countingProxy) counts() (accepted, open int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted, p.open
}

// runNode runs a bed node's gateway in this process; stop cancels it and
// waits for Run to return.
func runNode(t testing.TB, b *testbed.Bed, id string) (stop func()) {
	t.Helper()
	pol, cfg, err := policy.Load(b.Nodes[id].Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.OpenSQLite(ctx, cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(ctx, cfg, gateway.Options{Store: st, Policy: pol, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	if !testbed.WaitFor(ctx, 10*time.Second, func() bool {
		c, err := net.Dial("tcp", b.Nodes[id].Inbound)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatalf("%s does not listen", id)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: Run: %v", id, err)
			}
			if err := g.Close(); err != nil {
				t.Errorf("%s: Close: %v", id, err)
			}
			st.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// Packages from one gateway to another go over a few reused sessions,
// each delivered once, and when the sending gateway stops (Run returns)
// every session it kept is closed and none of the relay's goroutines is
// left.
func TestRunReusesRelaySessionsAndClosesThemOnStop(t *testing.T) {
	const sender, receiver, rcpt, n = "northshire-pio", "hmp-northgate", "intel@northgate.hmpps.example", 12
	proxy := startProxy(t)
	pol := bytes.Replace(examples.Policy, []byte("valid-days: 365"), []byte("valid-days: 36500"), 1)
	b, err := testbed.Create(t.TempDir(), "", testbed.Options{Policy: pol, Directory: func(b *testbed.Bed, d *config.Directory) {
		proxy.to = d.Agency(receiver).Gateway
		d.Agency(receiver).Gateway = proxy.l.Addr().String()
	}})
	if err != nil {
		t.Fatal(err)
	}
	go proxy.serve()
	stopReceiver := runNode(t, b, receiver)
	stopSender := runNode(t, b, sender)
	ctx := context.Background()
	from := b.Nodes[sender].Address
	for i := range n {
		msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: Pool test %d\r\nDate: %s\r\nMessage-ID: <pool-%d-%d@northshire-pio.example>\r\n"+
			"Handling-Label: v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5; source=B; intelligence=2; handling=1; basis=assessment; "+
			"subjects=suspected; purpose=prison-security; sanitised=yes; originator=northshire-pio; reference=POOL-%d\r\n"+
			"X-Pool-Seq: %d\r\n\r\nbody %d\r\n", from, rcpt, i, time.Now().Format(time.RFC1123Z), i, time.Now().UnixNano(), i, i, i)
		if _, err := b.Submit(ctx, sender, []string{rcpt}, []byte(msg)); err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
	}
	if !testbed.WaitFor(ctx, 60*time.Second, func() bool { return len(b.Delivered(receiver, rcpt)) >= n }) {
		t.Fatalf("%d of %d delivered", len(b.Delivered(receiver, rcpt)), n)
	}
	seen := map[string]int{}
	for _, f := range b.Delivered(receiver, rcpt) {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(raw), "\r\n") {
			if v, ok := strings.CutPrefix(line, "X-Pool-Seq: "); ok {
				seen[v]++
			}
		}
	}
	for i := range n {
		if seen[fmt.Sprint(i)] != 1 {
			t.Errorf("package %d delivered %d times", i, seen[fmt.Sprint(i)])
		}
	}
	accepted, open := proxy.counts()
	t.Logf("%d packages over %d sessions (%d open)", n, accepted, open)
	if accepted > 4 { // the relay's workers
		t.Errorf("%d packages used %d sessions, want at most one per relay worker (4)", n, accepted)
	}
	stopSender()
	if !testbed.WaitFor(ctx, 10*time.Second, func() bool { _, open := proxy.counts(); return open == 0 }) {
		_, open := proxy.counts()
		t.Fatalf("%d sessions still open after the sender stopped", open)
	}
	stopReceiver()
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, g := range strings.Split(stacks, "\n\n") {
		if strings.Contains(g, "relay.(*relayPool)") || strings.Contains(g, "relay.(*Relay).Run") ||
			strings.Contains(g, "relay.(*relaySession)") {
			t.Errorf("goroutine left after Run returned:\n%s", g)
		}
	}
}

// Starting a gateway and stopping it leaves no goroutine of it behind:
// listeners, sessions, the relay and its connection cache, the clock
// keeper, the key gate and watch, the store watch and the audit writer
// all end when Run and Close return.
func TestStartAndStopLeavesNoGoroutineBehind(t *testing.T) {
	b, err := testbed.Create(t.TempDir(), "", testbed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	before := goleak.IgnoreCurrent()
	stop := runNode(t, b, "northshire-pio")
	ctx := context.Background()
	msg := fmt.Sprintf("From: %s\r\nTo: intel@northgate.hmpps.example\r\nSubject: Leak test\r\nDate: %s\r\n"+
		"Handling-Label: v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5; source=B; intelligence=2; handling=1; basis=assessment; "+
		"subjects=suspected; purpose=prison-security; sanitised=yes; originator=northshire-pio; reference=LEAK-1\r\n\r\nbody\r\n",
		b.Nodes["northshire-pio"].Address, time.Now().Format(time.RFC1123Z))
	if _, err := b.Submit(ctx, "northshire-pio", []string{"intel@northgate.hmpps.example"}, []byte(msg)); err != nil {
		t.Fatalf("submit: %v", err)
	}
	stop()
	if err := goleak.Find(before); err != nil {
		t.Errorf("goroutines left after the gateway stopped: %v", err)
	}
}
