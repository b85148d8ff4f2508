// Command e2edriver drives bench/e2e.sh: it pushes N packages of a given
// size over SMTP with a few concurrent clients, either through two Conduit
// gateways on loopback (laid out and started with the testbed package) or
// through a plain SMTP relay (Postfix) to a sink it runs itself, and waits
// until every one is a file in the receiving Maildir. It prints the
// throughput and the latency from the start of a submission to the file's
// appearance (its modification time), p50 and p99.
//
//	e2edriver -mode conduit -bin ./conduit -dir WORK [-n 500 -size 16384 -clients 4]
//	e2edriver -mode relay -relay 127.0.0.1:PORT -sink 127.0.0.1:PORT -dir WORK [...]
//	e2edriver -mode ha -bin ./conduit -dir WORK -gateways K   (K senders on PostgreSQL; 0: one on SQLite)
//	e2edriver -mode queue -bin ./conduit -dir WORK -n 1000 -size 10485760   (memory: a backlog queued with the receiver down, then drained)
//	e2edriver -mode ports -count 2      (prints free loopback ports)
//
// Neither mode prints package content.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/examples"
	"github.com/conduit-gateway/conduit/testbed"
)

const label = `v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5; source=B; intelligence=2; handling=1; basis=assessment; subjects=suspected; purpose=prison-security; sanitised=yes; originator=northshire-pio; reference=BENCH-E2E`

const (
	sender    = "northshire-pio"
	receiver  = "hmp-northgate"
	recipient = "intel@northgate.hmpps.example"
	benchHdr  = "X-Bench-Seq"
)

// traceFile is -trace.
var traceFile string

func main() {
	mode := flag.String("mode", "conduit", "conduit, relay, ha, queue, ports, or inject (a content filter's reinjection: the message on stdin to -relay, args: sender recipient...)")
	bin := flag.String("bin", "", "the conduit binary (mode conduit)")
	dir := flag.String("dir", "", "work directory")
	n := flag.Int("n", 500, "packages")
	size := flag.Int("size", 16384, "bytes per package body")
	clients := flag.Int("clients", 4, "concurrent SMTP clients")
	relay := flag.String("relay", "", "the relay's SMTP address (mode relay)")
	sink := flag.String("sink", "", "address the sink listens on; the relay delivers there (mode relay)")
	count := flag.Int("count", 2, "ports to print (mode ports)")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up after this long")
	workers := flag.Int("workers", 0, "the gateways' relay workers (mode conduit; 0: the testbed's 4)")
	flag.StringVar(&traceFile, "trace", "", "write each package's start, 250 and arrival (ms after its start) and package id to this file")
	rate := flag.Float64("rate", 0, "open loop: packages arrive at this fixed rate per second, each at its time whatever the gateway's pace, and a package's latency starts at its arrival (0: closed loop, each client sends its next package once the last is accepted)")
	gateways := flag.Int("gateways", 1, "the sending agency's gateways on PostgreSQL (mode ha; 0: one on SQLite)")
	retryMax := flag.Duration("retry-max", 10*time.Second, "the sender's longest wait between attempts while the receiver is down (mode queue)")
	backlog := flag.Duration("backlog", 30*time.Second, "how long the restarted sender holds the backlog before the receiver starts (mode queue)")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var err error
	switch *mode {
	case "ports":
		err = ports(*count)
	case "conduit":
		err = runConduit(ctx, *bin, *dir, *n, *size, *clients, *workers, *rate)
	case "inject":
		err = inject(*relay, flag.Args())
	case "ha":
		err = runHA(ctx, *bin, *dir, *n, *size, *clients, *gateways)
	case "queue":
		err = runQueue(ctx, *bin, *dir, *n, *size, *clients, *retryMax, *backlog)
	case "relay":
		err = runRelay(ctx, *relay, *sink, *dir, *n, *size, *clients, *rate)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2edriver:", err)
		os.Exit(1)
	}
}

// inject sends the message on standard input to addr over plain SMTP, as
// a content filter (zeyple, gpg-mailgate) hands a filtered message back to
// its MTA.
func inject(addr string, args []string) error {
	if addr == "" || len(args) < 2 {
		return errors.New("mode inject needs -relay and the arguments: sender recipient...")
	}
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("filter.localhost"); err != nil {
		return err
	}
	if err := c.Mail(args[0], nil); err != nil {
		return err
	}
	for _, rcpt := range args[1:] {
		if err := c.Rcpt(rcpt, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, bufio.NewReader(os.Stdin)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func ports(count int) error {
	var ls []net.Listener
	for i := 0; i < count; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		ls = append(ls, l)
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return nil
}

// message is package i: marked headers, a random (incompressible) body of
// size bytes, base64 lines as a mail client would send an attachment.
func message(i, size int) []byte {
	raw := make([]byte, size*3/4)
	rand.Read(raw)
	enc := base64.StdEncoding.EncodeToString(raw)
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: pio@northshire-pio.example\r\nTo: %s\r\nSubject: Bench package %d\r\n", recipient, i)
	fmt.Fprintf(&b, "Date: %s\r\nMessage-ID: <bench-%d-%d@northshire-pio.example>\r\n", time.Now().Format(time.RFC1123Z), i, time.Now().UnixNano())
	fmt.Fprintf(&b, "Handling-Label: %s\r\n%s: %d\r\n", label, benchHdr, i)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	return b.Bytes()
}

// client is how one load client opens its SMTP session.
type dialer func() (*smtp.Client, error)

type load struct {
	n, size, clients int
	from             string
	dial             dialer
	maildir          string  // the receiving Maildir folder (its new/ is watched)
	verify           string  // a header every delivered file must carry, if set
	rate             float64 // open loop: arrivals per second (0: closed loop)
	// trace, when set, names a file that gets a line per package: its
	// sequence, start, when its 250 came and when it arrived (ms after its
	// start), and its package id, to match a slow one with the logs.
	trace string
	// lazy makes each package as it is sent, not all before the first:
	// large packages in number would not fit in memory. Its making then
	// counts in the latency.
	lazy bool
}

type result struct {
	n                  int
	submitted, elapsed time.Duration
	p50, p99, max      time.Duration
	unverified         int
}

// perSession is how many packages a client sends in one SMTP session
// before it opens a new one (the gateway bounds commands per session).
const perSession = 50

// run submits the packages with l.clients concurrent clients, each sending
// its share one transaction after another (a new session every
// perSession), and watches the Maildir until all are there. A package's
// latency starts when its transaction starts (including the session set-up
// when it opens one).
func (l load) run(ctx context.Context) (result, error) {
	sub, err := l.submit(ctx)
	if err != nil {
		return result{}, err
	}
	return l.await(ctx, sub)
}

// submission is what submit saw: when it started, when each package's
// transaction started and was accepted, and how long it all took.
type submission struct {
	t0               time.Time
	starts, accepted []time.Time
	took             time.Duration
}

// submit sends the packages; it returns when the last is accepted.
func (l load) submit(ctx context.Context) (submission, error) {
	msg := func(i int) []byte { return message(i, l.size) }
	if !l.lazy {
		msgs := make([][]byte, l.n)
		for i := range msgs {
			msgs[i] = message(i, l.size)
		}
		msg = func(i int) []byte { return msgs[i] }
	}
	starts := make([]time.Time, l.n)
	accepted := make([]time.Time, l.n)
	next := make(chan int, l.n)
	t0 := time.Now()
	if l.rate > 0 {
		// Open loop: package i arrives at t0 + i/rate and waits for a free
		// client if none is; its latency counts from its arrival.
		go func() {
			defer close(next)
			for i := 0; i < l.n; i++ {
				at := t0.Add(time.Duration(float64(i) / l.rate * float64(time.Second)))
				time.Sleep(time.Until(at))
				starts[i] = at
				next <- i
			}
		}()
	} else {
		for i := 0; i < l.n; i++ {
			next <- i
		}
		close(next)
	}
	var wg sync.WaitGroup
	errc := make(chan error, l.clients)
	for c := 0; c < l.clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var cl *smtp.Client
			sent := 0
			defer func() {
				if cl != nil {
					cl.Quit()
				}
			}()
			for i := range next {
				if l.rate == 0 {
					starts[i] = time.Now()
				}
				if cl == nil || sent == perSession {
					if cl != nil {
						cl.Quit()
					}
					var err error
					if cl, err = l.dial(); err != nil {
						errc <- err
						return
					}
					sent = 0
				}
				if err := send(cl, l.from, msg(i)); err != nil {
					errc <- fmt.Errorf("package %d: %w", i, err)
					return
				}
				accepted[i] = time.Now()
				sent++
			}
		}()
	}
	wg.Wait()
	sub := submission{t0: t0, starts: starts, accepted: accepted, took: time.Since(t0)}
	select {
	case err := <-errc:
		return sub, err
	default:
	}
	return sub, nil
}

// await watches the Maildir until every package is there, and measures.
func (l load) await(ctx context.Context, sub submission) (result, error) {
	t0, starts := sub.t0, sub.starts
	arrived := map[int]time.Time{}
	pkgs := map[int]string{}
	unverified := 0
	seen := map[string]bool{}
	newDir := filepath.Join(l.maildir, "new")
	for len(arrived) < l.n {
		if ctx.Err() != nil {
			return result{}, fmt.Errorf("%d of %d delivered before the timeout", len(arrived), l.n)
		}
		entries, _ := os.ReadDir(newDir)
		fresh := false
		for _, e := range entries {
			if seen[e.Name()] {
				continue
			}
			seq, at, pkg, ok, err := readArrival(filepath.Join(newDir, e.Name()), l.verify)
			if err != nil {
				continue // still being renamed in; look again
			}
			seen[e.Name()] = true
			fresh = true
			if !ok {
				unverified++
			}
			if _, dup := arrived[seq]; dup {
				return result{}, fmt.Errorf("package %d delivered twice", seq)
			}
			arrived[seq] = at
			pkgs[seq] = pkg
		}
		if !fresh {
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	var lat []time.Duration
	var last time.Time
	for i, at := range arrived {
		lat = append(lat, at.Sub(starts[i]))
		if at.After(last) {
			last = at
		}
	}
	if l.trace != "" {
		if err := writeTrace(l.trace, starts, sub.accepted, arrived, pkgs); err != nil {
			return result{}, err
		}
	}
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return result{n: l.n, submitted: sub.took, elapsed: last.Sub(t0), p50: pct(0.50), p99: pct(0.99), max: lat[len(lat)-1], unverified: unverified}, nil
}

func send(c *smtp.Client, from string, msg []byte) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	if err := c.Rcpt(recipient, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	return w.Close()
}

// writeTrace writes the -trace file, in sequence order.
func writeTrace(path string, starts, accepted []time.Time, arrived map[int]time.Time, pkgs map[int]string) error {
	var b strings.Builder
	b.WriteString("seq\tstart_unix_ns\taccepted_ms\tarrived_ms\tpackage\n")
	for i, st := range starts {
		fmt.Fprintf(&b, "%d\t%d\t%.1f\t%.1f\t%s\n", i, st.UnixNano(), ms(accepted[i].Sub(st)), ms(arrived[i].Sub(st)), pkgs[i])
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// readArrival reads a delivered file's sequence header and package id
// (none through a plain relay); its modification time is when it was
// written into the Maildir.
func readArrival(path, verify string) (seq int, at time.Time, pkg string, verified bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, time.Time{}, "", false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, time.Time{}, "", false, err
	}
	r := bufio.NewReader(io.LimitReader(f, 256<<10))
	seq = -1
	verified = verify == ""
	for {
		line, err := r.ReadString('\n')
		line = strings.TrimRight(line, "\r\n")
		if line == "" || err != nil {
			break
		}
		if v, ok := strings.CutPrefix(line, benchHdr+": "); ok {
			seq, _ = strconv.Atoi(strings.TrimSpace(v))
		}
		if v, ok := strings.CutPrefix(line, envelope.PackageHeader+": "); ok {
			pkg = strings.TrimSpace(v)
		}
		if verify != "" && strings.HasPrefix(line, verify) {
			verified = true
		}
	}
	if seq < 0 {
		return 0, time.Time{}, "", false, errors.New("no sequence header")
	}
	return seq, st.ModTime(), pkg, verified, nil
}

func report(side string, r result) {
	fmt.Printf("RESULT side=%s n=%d submit_s=%.2f total_s=%.2f pps=%.1f p50_ms=%.0f p99_ms=%.0f max_ms=%.0f unverified=%d\n",
		side, r.n, r.submitted.Seconds(), r.elapsed.Seconds(), float64(r.n)/r.elapsed.Seconds(),
		ms(r.p50), ms(r.p99), ms(r.max), r.unverified)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func runConduit(ctx context.Context, bin, dir string, n, size, clients, workers int, rate float64) error {
	if bin == "" || dir == "" {
		return errors.New("mode conduit needs -bin and -dir")
	}
	b, err := testbed.Create(dir, bin, benchOptions())
	if err != nil {
		return err
	}
	defer b.StopAll()
	if workers > 0 {
		for _, id := range []string{sender, receiver} {
			cfg, err := os.ReadFile(b.Nodes[id].Config)
			if err != nil {
				return err
			}
			cfg = bytes.Replace(cfg, []byte("workers: 4"), []byte("workers: "+strconv.Itoa(workers)), 1)
			if err := os.WriteFile(b.Nodes[id].Config, cfg, 0o600); err != nil {
				return err
			}
		}
	}
	if err := b.StartAll(ctx, sender, receiver); err != nil {
		return err
	}
	s := b.Nodes[sender]
	tc := b.ClientTLS()
	r, err := load{
		n: n, size: size, clients: clients, from: s.Address, rate: rate, trace: traceFile,
		maildir: filepath.Join(b.Nodes[receiver].Maildir, recipient),
		verify:  "Conduit-Verified: signer=" + sender,
		dial:    func() (*smtp.Client, error) { return dialSubmission(s, tc) },
	}.run(ctx)
	if err != nil {
		return fmt.Errorf("%w\nsender log:\n%s\nreceiver log:\n%s", err, b.Tail(sender, 5), b.Tail(receiver, 5))
	}
	report("conduit", r)
	return nil
}

// benchOptions are the bed the benchmarks run: the gateways on real
// clocks, as deployed, and training records that do not age out (the
// example directory's dates are fixed, and the example policy's 365 days
// would hold every package from January 2027 on).
func benchOptions() testbed.Options {
	return testbed.Options{Policy: bytes.Replace(examples.Policy, []byte("valid-days: 365"), []byte("valid-days: 36500"), 1), RealClocks: true}
}

// dialSubmission opens a staff client's session on a node's submission
// listener: STARTTLS, then AUTH PLAIN as its account.
func dialSubmission(s *testbed.Node, tc *tls.Config) (*smtp.Client, error) {
	c, err := smtp.DialStartTLS(s.Submission, tc)
	if err != nil {
		return nil, err
	}
	if err := c.Hello("bench.localhost"); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.Auth(sasl.NewPlainClient("", s.User, s.Password)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func runRelay(ctx context.Context, relay, sinkAddr, dir string, n, size, clients int, rate float64) error {
	if relay == "" || sinkAddr == "" || dir == "" {
		return errors.New("mode relay needs -relay, -sink and -dir")
	}
	box := filepath.Join(dir, "sink", recipient)
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(box, sub), 0o700); err != nil {
			return err
		}
	}
	l, err := net.Listen("tcp", sinkAddr)
	if err != nil {
		return err
	}
	srv := smtp.NewServer(&sinkBackend{dir: box})
	srv.Domain = "sink.localhost"
	srv.MaxMessageBytes = 64 << 20
	srv.AllowInsecureAuth = true
	go srv.Serve(l)
	defer srv.Close()
	r, err := load{
		n: n, size: size, clients: clients, from: "pio@northshire-pio.example", maildir: box, rate: rate, trace: traceFile,
		dial: func() (*smtp.Client, error) {
			c, err := smtp.Dial(relay)
			if err != nil {
				return nil, err
			}
			if err := c.Hello("bench.localhost"); err != nil {
				return nil, err
			}
			return c, nil
		},
	}.run(ctx)
	if err != nil {
		return err
	}
	report("relay", r)
	return nil
}

// sinkBackend accepts every message and writes it into a Maildir the way
// the gateway delivers (tmp/, fsync, rename into new/, fsync the folder),
// so that both sides end with the same durable write.
type sinkBackend struct {
	dir string
	mu  sync.Mutex
	seq int
}

func (s *sinkBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s}, nil }

type sinkSession struct{ b *sinkBackend }

func (s *sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *sinkSession) Reset()                               {}
func (s *sinkSession) Logout() error                        { return nil }
func (s *sinkSession) Data(r io.Reader) error {
	s.b.mu.Lock()
	s.b.seq++
	name := fmt.Sprintf("sink-%d-%d", time.Now().UnixNano(), s.b.seq)
	s.b.mu.Unlock()
	tmp := filepath.Join(s.b.dir, "tmp", name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		io.Copy(io.Discard, r)
		return err
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.b.dir, "new", name)); err != nil {
		return err
	}
	d, err := os.Open(filepath.Join(s.b.dir, "new"))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
