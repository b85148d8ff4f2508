package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/testbed"
)

// TestShutdownWithSlowPeersEndsWithinTheTimeoutAndLosesNothing stops a
// gateway with SIGTERM while it is held up on both sides: a member of
// staff's client is in the middle of its DATA, and the relay has sent
// whole envelopes to a partner that never answers the end of DATA (a
// real TLS SMTP server standing in for the prison's gateway). The gateway
// must exit within its shutdown-timeout (3s here, checked with a margin
// for a loaded machine) with status 0; the cut submission must not have
// been given a 250; and at the next start, with the prison's real
// gateway back in place, every package that was given a 250 is delivered
// exactly once.
func TestShutdownWithSlowPeersEndsWithinTheTimeoutAndLosesNothing(t *testing.T) {
	const (
		sender, receiver = "northshire-pio", "hmp-northgate"
		timeout          = 3 * time.Second
		margin           = 2 * time.Second
		packages         = 3
	)
	b, err := testbed.Create(t.TempDir(), conduitBin, testbed.Options{
		RetryMin: "200ms", RetryMax: "1s", Policy: e2ePolicy(t),
		Extra: fmt.Sprintf("shutdown-timeout: %s\n", timeout),
	})
	tcheck(t, err, "testbed")
	t.Cleanup(func() {
		b.StopAll()
		if t.Failed() {
			for _, id := range []string{sender, receiver} {
				t.Logf("log of %s:\n%s", id, b.Tail(id, 15))
			}
		}
		noPlaintextAtRest(t, b, e2eBody, e2eSubjectID)
	})
	ctx := context.Background()

	// The prison's gateway is a partner that reads whole envelopes and
	// never answers them.
	peer := startStallingPeer(t, b, receiver)
	gw := startServe(t, b, sender)

	acked := map[string]bool{}
	for i := range packages {
		msg := e2eMessage(strings.Replace(e2eLabel, "NP-2026-0001", fmt.Sprintf("NP-STOP-%04d", i), 1), fmt.Sprintf("Shutdown test package %d", i))
		resp, err := b.Submit(ctx, sender, []string{ngIntel}, msg)
		tcheck(t, err, fmt.Sprintf("submit package %d", i))
		acked[packageOf(t, resp)] = true
	}
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool { return peer.stalled() > 0 }) {
		t.Fatalf("the relay sent no envelope to the stalling partner:\n%s", b.Tail(sender, 10))
	}

	// A member of staff's client, half-way through its DATA.
	n := b.Nodes[sender]
	slow := dialRaw(t, n.Submission)
	if code, msg := slow.cmd("EHLO slow.localhost"); code != 250 {
		t.Fatalf("EHLO: %d %s", code, msg)
	}
	slow.startTLS(b.ClientTLS())
	slow.authPlain(n.User, n.Password)
	if code, msg := slow.cmd("MAIL FROM:<%s>", n.Address); code != 250 {
		t.Fatalf("MAIL: %d %s", code, msg)
	}
	if code, msg := slow.cmd("RCPT TO:<%s>", ngIntel); code != 250 {
		t.Fatalf("RCPT: %d %s", code, msg)
	}
	if code, msg := slow.cmd("DATA"); code != 354 {
		t.Fatalf("DATA: %d %s", code, msg)
	}
	half := e2eMessage(strings.Replace(e2eLabel, "NP-2026-0001", "NP-STOP-SLOW", 1), "Cut by the shutdown")
	_, err = slow.conn.Write(half[:len(half)/2])
	tcheck(t, err, "write half the message")

	t.Logf("SIGTERM with %d envelopes unanswered at the partner and a submission mid-DATA", peer.stalled())
	took, state := gw.terminate(t, timeout+margin+5*time.Second)
	if took > timeout+margin {
		t.Errorf("the gateway took %s to exit after SIGTERM; shutdown-timeout is %s", took.Round(10*time.Millisecond), timeout)
	}
	if state == nil || !state.Exited() || state.ExitCode() != 0 {
		t.Errorf("the gateway ended with %v after SIGTERM; want exit status 0", state)
	}
	t.Logf("exited in %s: %v", took.Round(10*time.Millisecond), state)

	// The cut submission got no 250: its connection closed, or a 4xx.
	slow.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if code, msg, err := slow.tp.ReadResponse(0); code/100 == 2 {
		t.Errorf("the submission cut mid-DATA was answered %d %s (%v)", code, msg, err)
	}

	// The next start, with the prison's real gateway in place of the
	// stalling one, delivers what was in flight.
	peer.close()
	tcheck(t, b.Start(ctx, receiver), "start "+receiver)
	tcheck(t, b.Start(ctx, sender), "restart "+sender)
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
		items, _ := b.Queue(ctx, sender, store.Filter{})
		t.Fatalf("acknowledged packages not delivered after the restart: delivered %v; the sender's queue:%s", per, describeItems(items))
	}
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool {
		items, err := b.Queue(ctx, sender, store.Filter{State: store.Queued})
		return err == nil && len(items) == 0
	}) {
		items, _ := b.Queue(ctx, sender, store.Filter{State: store.Queued})
		t.Fatalf("the sender's queue does not drain:%s", describeItems(items))
	}
	per, _ = deliveredByPackage(b, receiver)
	for pkg, count := range per {
		if !acked[pkg] {
			t.Errorf("delivered %d times: %s, which no 250 acknowledged (the cut submission?)", count, pkg)
		} else if count != 1 {
			t.Errorf("package %s delivered %d times; want once", pkg, count)
		}
	}
	if len(per) != len(acked) {
		t.Errorf("%d packages delivered; want the %d acknowledged", len(per), len(acked))
	}
}

// serveProc is a `conduit serve` process run by the test itself, so that
// it can time the process's exit and read its status.
type serveProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startServe runs a bed node's gateway, writing to the node's log, and
// waits until its submission and inbound listeners accept connections.
func startServe(t *testing.T, b *testbed.Bed, id string) *serveProc {
	t.Helper()
	n := b.Nodes[id]
	logf, err := os.OpenFile(n.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	tcheck(t, err, "log file")
	p := &serveProc{cmd: exec.Command(conduitBin, "serve", "--config", n.Config, "--log-format", "json"), done: make(chan struct{})}
	p.cmd.Dir = n.Dir
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	tcheck(t, p.cmd.Start(), "start "+id)
	go func() { p.cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	if !testbed.WaitFor(context.Background(), 20*time.Second, func() bool {
		select {
		case <-p.done:
			return true
		default:
		}
		return listening(n.Submission) && listening(n.Inbound)
	}) {
		t.Fatalf("%s does not listen:\n%s", id, b.Tail(id, 10))
	}
	select {
	case <-p.done:
		t.Fatalf("%s exited at start:\n%s", id, b.Tail(id, 10))
	default:
	}
	return p
}

// terminate sends SIGTERM and waits for the process, at most limit (then
// it kills it); it returns how long the exit took and the process's state.
func (p *serveProc) terminate(t *testing.T, limit time.Duration) (time.Duration, *os.ProcessState) {
	t.Helper()
	start := time.Now()
	tcheck(t, p.cmd.Process.Signal(syscall.SIGTERM), "SIGTERM")
	select {
	case <-p.done:
		return time.Since(start), p.cmd.ProcessState
	case <-time.After(limit):
		t.Errorf("no exit %s after SIGTERM: killed", limit)
		p.cmd.Process.Kill()
		<-p.done
		return time.Since(start), nil
	}
}

// stallingPeer is a partner gateway's SMTP server that offers STARTTLS
// with the partner's real certificate, accepts MAIL and RCPT, reads the
// whole message after DATA and then never answers, until closed.
type stallingPeer struct {
	l    net.Listener
	tls  *tls.Config
	stop chan struct{}
	wg   sync.WaitGroup

	mu    sync.Mutex
	held  int // messages read whole and left unanswered
	conns []net.Conn
}

func startStallingPeer(t *testing.T, b *testbed.Bed, id string) *stallingPeer {
	t.Helper()
	n := b.Nodes[id]
	cert, err := tls.LoadX509KeyPair(filepath.Join(n.Dir, "gw.crt"), filepath.Join(n.Dir, "gw.key"))
	tcheck(t, err, "partner certificate")
	l, err := net.Listen("tcp", n.Inbound)
	tcheck(t, err, "listen as "+id)
	p := &stallingPeer{l: l, stop: make(chan struct{}),
		tls: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	t.Cleanup(p.close)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.serve(c) }()
		}
	}()
	return p
}

func (p *stallingPeer) serve(c net.Conn) {
	defer c.Close()
	var conn net.Conn = c
	r, w := bufio.NewReader(conn), bufio.NewWriter(conn)
	say := func(s string) bool { w.WriteString(s + "\r\n"); return w.Flush() == nil }
	say("220 stalling.localhost ESMTP")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.Fields(line + " x")[0])
		switch verb {
		case "EHLO":
			say("250-stalling.localhost\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 STARTTLS")
		case "STARTTLS":
			say("220 go ahead")
			tc := tls.Server(c, p.tls)
			if tc.Handshake() != nil {
				return
			}
			conn = tc
			r, w = bufio.NewReader(conn), bufio.NewWriter(conn)
		case "MAIL", "RCPT", "RSET", "NOOP":
			say("250 OK")
		case "DATA":
			say("354 go ahead")
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			p.mu.Lock()
			p.held++
			p.mu.Unlock()
			<-p.stop // never answer
			return
		case "QUIT":
			say("221 bye")
			return
		default:
			say("500 unrecognised")
		}
	}
}

func (p *stallingPeer) stalled() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

// close stops listening, drops every connection and waits for them.
func (p *stallingPeer) close() {
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	p.l.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
