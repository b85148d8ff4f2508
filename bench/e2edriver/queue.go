package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/testbed"
)

// runQueue is mode queue, for bench/memory-queue.sh: the memory of the two
// gateways while a backlog builds, waits and drains, in three phases.
// Queueing: the receiver is down while n packages of size bytes are
// submitted to the sender, whose relay keeps trying it (retries up to
// retryMax apart). Backlog: the sender is restarted, so that what its
// submissions left in its heap and resident set is gone, and runs for
// backlog with the whole queue due and the receiver still down. Drain: the
// receiver starts and the queue drains into its Maildir. Each gateway's
// peak resident memory (VmHWM) is read from /proc for each phase (the
// sender's high-water mark reset at the drain's start with clear_refs 5),
// and VmRSS is sampled too, as a check. It prints one line per phase.
func runQueue(ctx context.Context, bin, dir string, n, size, clients int, retryMax, backlog time.Duration) error {
	if bin == "" || dir == "" {
		return errors.New("mode queue needs -bin and -dir")
	}
	opt := benchOptions()
	opt.RetryMin, opt.RetryMax = "1s", retryMax.String()
	opt.MessageBytes = max(config.DefaultMessageBytes, 2*int64(size))
	b, err := testbed.Create(dir, bin, opt)
	if err != nil {
		return err
	}
	defer b.StopAll()
	if err := b.StartAll(ctx, sender); err != nil {
		return err
	}
	s := b.Nodes[sender]
	tc := b.ClientTLS()
	l := load{
		n: n, size: size, clients: clients, from: s.Address, lazy: true,
		maildir: filepath.Join(b.Nodes[receiver].Maildir, recipient),
		verify:  "Conduit-Verified: signer=" + sender,
		dial:    func() (*smtp.Client, error) { return dialSubmission(s, tc) },
	}
	fail := func(err error) error {
		return fmt.Errorf("%w\nsender log:\n%s\nreceiver log:\n%s", err, b.Tail(sender, 5), b.Tail(receiver, 5))
	}

	snd := watchMemory(b.Pid(sender))
	sub, err := l.submit(ctx)
	if err != nil {
		return fail(err)
	}
	q := snd.stop()
	db := fileMiB(b.StorePath(sender)) + fileMiB(b.StorePath(sender)+"-wal")
	fmt.Printf("RESULT side=queue phase=queueing n=%d size=%d clients=%d seconds=%.1f sender_hwm_mib=%.1f sender_rss_max_mib=%.1f sender_store_mib=%.0f\n",
		n, size, clients, sub.took.Seconds(), q.hwm, q.rssMax, db)

	if err := b.Stop(sender); err != nil {
		return fail(err)
	}
	if err := b.Start(ctx, sender); err != nil {
		return fail(err)
	}
	snd = watchMemory(b.Pid(sender))
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(backlog):
	}
	bl := snd.stop()
	fmt.Printf("RESULT side=queue phase=backlog n=%d seconds=%.1f sender_hwm_mib=%.1f sender_rss_max_mib=%.1f\n",
		n, backlog.Seconds(), bl.hwm, bl.rssMax)

	// The sender's high-water mark from here on is the drain's.
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", b.Pid(sender)), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset the sender's VmHWM: %w", err)
	}
	snd = watchMemory(b.Pid(sender))
	d0 := time.Now()
	if err := b.Start(ctx, receiver); err != nil {
		return fail(err)
	}
	rcv := watchMemory(b.Pid(receiver))
	r, err := l.await(ctx, sub)
	drained := time.Since(d0)
	sm, rm := snd.stop(), rcv.stop()
	if err != nil {
		return fail(err)
	}
	fmt.Printf("RESULT side=queue phase=drain n=%d seconds=%.1f pps=%.2f sender_hwm_mib=%.1f sender_rss_max_mib=%.1f receiver_hwm_mib=%.1f receiver_rss_max_mib=%.1f unverified=%d\n",
		n, drained.Seconds(), float64(n)/drained.Seconds(), sm.hwm, sm.rssMax, rm.hwm, rm.rssMax, r.unverified)
	return nil
}

// memory is what watchMemory saw of a process.
type memory struct{ hwm, rssMax float64 } // MiB

// memWatch samples a process's memory until stopped.
type memWatch struct {
	pid  int
	mu   sync.Mutex
	seen memory
	done chan struct{}
	wg   sync.WaitGroup
}

// watchMemory samples pid's VmHWM and VmRSS every 200 ms until stop.
func watchMemory(pid int) *memWatch {
	w := &memWatch{pid: pid, done: make(chan struct{})}
	w.wg.Go(func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			w.sample()
			select {
			case <-w.done:
				return
			case <-t.C:
			}
		}
	})
	return w
}

func (w *memWatch) sample() {
	hwm, rss, ok := procMemory(w.pid)
	if !ok {
		return
	}
	w.mu.Lock()
	w.seen.hwm = max(w.seen.hwm, hwm)
	w.seen.rssMax = max(w.seen.rssMax, rss)
	w.mu.Unlock()
}

// stop ends the sampling, after a last sample, and says what it saw.
func (w *memWatch) stop() memory {
	close(w.done)
	w.wg.Wait()
	w.sample()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen
}

// procMemory reads a process's VmHWM and VmRSS, in MiB.
func procMemory(pid int) (hwm, rss float64, ok bool) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, found := strings.Cut(sc.Text(), ":")
		if !found || (k != "VmHWM" && k != "VmRSS") {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			continue
		}
		if k == "VmHWM" {
			hwm = kb / 1024
		} else {
			rss = kb / 1024
		}
	}
	return hwm, rss, hwm > 0
}

// fileMiB is a file's size in MiB (0 when it is not there).
func fileMiB(path string) float64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return float64(st.Size()) / (1 << 20)
}
