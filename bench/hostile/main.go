// Command hostile drives bench/hostile.sh: it starts two Conduit gateways
// on loopback (northshire-pio and hmp-northgate, laid out by the testbed
// package), holds open a number of idle and of slow-loris connections
// against the receiver's inbound listener from an attacker's address, and
// while they are held measures what a partner still gets: the time to its
// banner on a new connection (with its client certificate, STARTTLS), and
// the time from the submission of an immediate (escape risk) package at the
// sender until its file is in the receiver's Maildir. It reports the
// receiver's resident memory before and under the attack.
//
//	hostile -bin ./conduit -dir WORK [-idle 1000 -slow 1000 -from 127.0.0.2 -addrs 1 -probes 5]
//
// The attacker's connections come from -from (and the following -addrs-1
// loopback addresses); the partner's come from 127.0.0.1, as they would
// from another host. It prints figures, never package content.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/examples"
	"github.com/conduit-gateway/conduit/testbed"
)

const (
	sender    = "northshire-pio"
	receiver  = "hmp-northgate"
	recipient = "intel@northgate.hmpps.example"
	label     = `v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5; source=B; intelligence=2; handling=1; basis=assessment; subjects=suspected; purpose=prison-security; sanitised=yes; originator=northshire-pio; reference=BENCH-HOSTILE`
)

func main() {
	bin := flag.String("bin", "", "the conduit binary")
	dir := flag.String("dir", "", "work directory")
	idle := flag.Int("idle", 1000, "idle connections to hold open (never send a byte)")
	slow := flag.Int("slow", 1000, "slow-loris connections to hold open (one byte every -trickle)")
	trickle := flag.Duration("trickle", 2*time.Second, "the slow-loris clients' interval between bytes")
	from := flag.String("from", "127.0.0.2", "the attacker's first source address")
	addrs := flag.Int("addrs", 1, "attacker source addresses (consecutive from -from)")
	probes := flag.Int("probes", 5, "partner banners and immediate packages measured")
	settle := flag.Duration("settle", 5*time.Second, "how long the attack runs before the first probe")
	retry := flag.Duration("retry", time.Second, "how soon an attacker connects again after the gateway refused or dropped it")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up after this long")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	retryPause = *retry
	if err := run(ctx, *bin, *dir, *idle, *slow, *trickle, *from, *addrs, *probes, *settle); err != nil {
		fmt.Fprintln(os.Stderr, "hostile:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, bin, dir string, idle, slow int, trickle time.Duration, from string, addrs, probes int, settle time.Duration) error {
	if bin == "" || dir == "" {
		return errors.New("needs -bin and -dir")
	}
	first, err := netip.ParseAddr(from)
	if err != nil {
		return fmt.Errorf("-from: %w", err)
	}
	pol := bytes.Replace(examples.Policy, []byte("valid-days: 365"), []byte("valid-days: 36500"), 1)
	b, err := testbed.Create(dir, bin, testbed.Options{Policy: pol})
	if err != nil {
		return err
	}
	defer b.StopAll()
	if err := b.StartAll(ctx, sender, receiver); err != nil {
		return err
	}
	pid, err := pidOf(b.Nodes[receiver].Dir)
	if err != nil {
		return err
	}
	target := b.Nodes[receiver].Inbound
	rssBefore, _ := memory(pid, "VmRSS")

	// Warm up: one package through before the attack, so that the figure
	// under attack is not the first connection's.
	if _, err := immediate(ctx, b, 0); err != nil {
		return fmt.Errorf("warm-up package: %w", err)
	}

	var st attackStats
	actx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	src := func(i int) netip.Addr {
		a := first
		for j := 0; j < i%max(addrs, 1); j++ {
			a = a.Next()
		}
		return a
	}
	for i := 0; i < idle; i++ {
		wg.Go(func() { attacker(actx, target, src(i), 0, &st) })
	}
	for i := 0; i < slow; i++ {
		wg.Go(func() { attacker(actx, target, src(i), trickle, &st) })
	}
	select {
	case <-time.After(settle):
	case <-ctx.Done():
		stop()
		wg.Wait()
		return ctx.Err()
	}

	partnerTLS, err := partnerClientTLS(b)
	if err != nil {
		stop()
		wg.Wait()
		return err
	}
	var banners, deliveries []time.Duration
	var failures []string
	for i := 1; i <= probes; i++ {
		d, err := partnerBanner(ctx, target, partnerTLS)
		if err != nil {
			failures = append(failures, "banner: "+err.Error())
		} else {
			banners = append(banners, d)
		}
		d, err = immediate(ctx, b, i)
		if err != nil {
			failures = append(failures, "package: "+err.Error())
		} else {
			deliveries = append(deliveries, d)
		}
	}
	rss, _ := memory(pid, "VmRSS")
	hwm, _ := memory(pid, "VmHWM")
	held := st.open.Load()
	stop()
	wg.Wait()

	fmt.Printf("attack: %d idle + %d slow-loris clients from %d address(es) starting %s, against %s, each connecting again %s after it is refused or dropped\n",
		idle, slow, max(addrs, 1), first, receiver, retryPause)
	fmt.Printf("  connections the attacker held open at the end: %d; got a banner: %d; refused with 421: %d; cut off by the gateway: %d\n",
		held, st.banners.Load(), st.refused.Load(), st.cut.Load())
	fmt.Printf("partner (client certificate, STARTTLS) banner under attack: %s\n", summary(banners))
	fmt.Printf("immediate package, submission to the receiver's Maildir, under attack: %s\n", summary(deliveries))
	fmt.Printf("receiver memory: RSS %s before the attack, %s under it; peak %s\n", mib(rssBefore), mib(rss), mib(hwm))
	for _, f := range failures {
		fmt.Println("  FAILED:", f)
	}
	if len(failures) > 0 {
		return fmt.Errorf("%d probe(s) failed; receiver log:\n%s", len(failures), b.Tail(receiver, 10))
	}
	return nil
}

// retryPause is how soon an attacker connects again.
var retryPause = time.Second

type attackStats struct {
	open, banners, refused, cut atomic.Int64
}

// attacker keeps one connection open against target from src: idle
// (trickle 0: never sends) or slow-loris (one byte of "EHLO x\r\n" and
// then of "NOOP\r\n" lines every trickle). When the gateway refuses or
// closes it, it connects again after a short pause, as a flood would.
func attacker(ctx context.Context, target string, src netip.Addr, trickle time.Duration, st *attackStats) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 5 * time.Second}
	for ctx.Err() == nil {
		c, err := d.DialContext(ctx, "tcp", target)
		if err != nil {
			pause(ctx, 200*time.Millisecond)
			continue
		}
		st.open.Add(1)
		done := make(chan struct{})
		go func() {
			// Reads what the gateway says: a 220 banner, a 421 refusal,
			// or the close.
			defer close(done)
			br := bufio.NewReader(c)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				switch {
				case strings.HasPrefix(line, "220 "):
					st.banners.Add(1)
				case strings.HasPrefix(line, "421 "):
					st.refused.Add(1)
				}
			}
		}()
		if trickle > 0 {
			go func() {
				payload := []byte("EHLO slow.example\r\n")
				for i := 0; ; i++ {
					select {
					case <-done:
						return
					case <-ctx.Done():
						return
					case <-time.After(trickle):
					}
					if _, err := c.Write(payload[i%len(payload) : i%len(payload)+1]); err != nil {
						return
					}
					if i%len(payload) == len(payload)-1 {
						payload = []byte("NOOP\r\n")
					}
				}
			}()
		}
		select {
		case <-done:
			st.cut.Add(1)
		case <-ctx.Done():
		}
		c.Close()
		st.open.Add(-1)
		pause(ctx, retryPause)
	}
}

func pause(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// partnerClientTLS is the sender gateway's TLS client identity, as its
// relay presents it.
func partnerClientTLS(b *testbed.Bed) (*tls.Config, error) {
	n := b.Nodes[sender]
	cert, err := tls.LoadX509KeyPair(filepath.Join(n.Dir, "gw.crt"), filepath.Join(n.Dir, "gw.key"))
	if err != nil {
		return nil, err
	}
	tc := b.ClientTLS()
	tc.Certificates = []tls.Certificate{cert}
	tc.ServerName = "127.0.0.1"
	return tc, nil
}

// partnerBanner is the time from connect to the banner, for a partner
// that then starts TLS with its certificate and says EHLO (so that the
// connection is proven, as the relay's would be).
func partnerBanner(ctx context.Context, target string, tc *tls.Config) (time.Duration, error) {
	start := time.Now()
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return 0, err
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c, err := smtp.NewClientStartTLS(conn, tc)
	if err != nil {
		conn.Close()
		return 0, err
	}
	banner := time.Since(start)
	defer c.Close()
	if err := c.Hello("partner.localhost"); err != nil {
		return 0, err
	}
	c.Quit()
	return banner, nil
}

// immediate submits one escape-risk package at the sender and returns the
// time until a new file is in the receiver's Maildir for it.
func immediate(ctx context.Context, b *testbed.Bed, i int) (time.Duration, error) {
	box := filepath.Join(b.Nodes[receiver].Maildir, recipient, "new")
	before := map[string]bool{}
	if ents, err := os.ReadDir(box); err == nil {
		for _, e := range ents {
			before[e.Name()] = true
		}
	}
	s := b.Nodes[sender]
	msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: Bench immediate %d\r\nHandling-Label: %s\r\nConduit-Risk: escape\r\n"+
		"Content-Type: text/plain\r\n\r\nBench package %d.\r\n", s.Address, recipient, i, label, i)
	start := time.Now()
	c, err := smtp.DialStartTLS(s.Submission, b.ClientTLS())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := c.Hello("bench.localhost"); err != nil {
		return 0, err
	}
	if err := c.Auth(sasl.NewPlainClient("", s.User, s.Password)); err != nil {
		return 0, err
	}
	if err := c.SendMail(s.Address, []string{recipient}, strings.NewReader(msg)); err != nil {
		return 0, err
	}
	c.Quit()
	for ctx.Err() == nil {
		if ents, err := os.ReadDir(box); err == nil {
			for _, e := range ents {
				if !before[e.Name()] {
					return time.Since(start), nil
				}
			}
		}
		if time.Since(start) > 60*time.Second {
			return 0, errors.New("not delivered within 60 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, ctx.Err()
}

func pidOf(dir string) (int, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "conduit.pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(raw)))
}

// memory reads a field of /proc/PID/status, in KiB.
func memory(pid int, field string) (int64, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, field+":") {
			f := strings.Fields(strings.TrimPrefix(line, field+":"))
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no %s", field)
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func summary(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none measured"
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return fmt.Sprintf("n=%d, median %s, max %s", len(ds), ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
}
