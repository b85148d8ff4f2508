// Command authguess drives bench/authguess.sh: it starts one Conduit
// gateway on loopback (northshire-pio, laid out by the testbed package)
// and, from one client address, guesses its account's password with
// AUTH PLAIN over STARTTLS from several parallel sessions for a fixed
// time, reconnecting whenever the gateway ends a session. It prints the
// guesses answered per second, how many were refused as locked out, and
// whether the right password was then accepted.
//
//	authguess -bin ./conduit -dir WORK [-sessions 8 -for 20s] [-unthrottled]
//
// -unthrottled configures the throttle out of the way (no penalty,
// lockouts and session limits beyond reach), which is what the gateway
// did before it had one: the figure is then bounded by bcrypt alone.
package main

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conduit-gateway/conduit/testbed"
)

const agency = "northshire-pio"

func main() {
	bin := flag.String("bin", "", "the conduit binary")
	dir := flag.String("dir", "", "work directory")
	sessions := flag.Int("sessions", 8, "parallel guessing sessions")
	dur := flag.Duration("for", 20*time.Second, "how long to guess")
	unthrottled := flag.Bool("unthrottled", false, "configure the throttle out of the way")
	from := flag.String("from", "127.0.0.2", "the guesser's source address")
	flag.Parse()
	if err := run(*bin, *dir, *sessions, *dur, *unthrottled, *from); err != nil {
		fmt.Fprintln(os.Stderr, "authguess:", err)
		os.Exit(1)
	}
}

func run(bin, dir string, sessions int, dur time.Duration, unthrottled bool, from string) error {
	if bin == "" || dir == "" {
		return errors.New("needs -bin and -dir")
	}
	extra := ""
	if unthrottled {
		extra = "auth: {penalty: 1ns, max-penalty: 1ns, account-failures: 1000000000, address-failures: 1000000000, session-failures: 1000000000}\n"
	}
	b, err := testbed.Create(dir, bin, testbed.Options{Extra: extra})
	if err != nil {
		return err
	}
	defer b.StopAll()
	ctx := context.Background()
	if err := b.StartAll(ctx, agency); err != nil {
		return err
	}
	n := b.Nodes[agency]
	var answered, locked, failed, sessionsOpened atomic.Int64
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for s := 0; s < sessions; s++ {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); {
				c, err := dial(n.Submission, from, b.ClientTLS(), deadline)
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				sessionsOpened.Add(1)
				for time.Now().Before(deadline) {
					i++
					code, _, err := c.auth(n.User, "guess-"+strconv.Itoa(s)+"-"+strconv.Itoa(i))
					if err != nil {
						break // the gateway ended the session
					}
					answered.Add(1)
					switch code {
					case 535:
						failed.Add(1)
					case 454:
						locked.Add(1)
					}
				}
				c.close()
			}
		})
	}
	wg.Wait()
	// And the right password, from another address, afterwards.
	right := "accepted"
	if c, err := dial(n.Submission, "127.0.0.1", b.ClientTLS(), time.Now().Add(30*time.Second)); err != nil {
		right = "no session: " + err.Error()
	} else {
		if code, msg, _ := c.auth(n.User, n.Password); code != 235 {
			right = fmt.Sprintf("refused: %d %s", code, msg)
		}
		c.close()
	}
	mode := "with the throttle (defaults: penalty 1s doubling to 15s, 10 failures lock the account and 20 the address for 15m, 3 per session)"
	if unthrottled {
		mode = "throttle out of the way (as before it existed)"
	}
	fmt.Printf("%s, %d parallel sessions from %s for %s:\n", mode, sessions, from, dur)
	fmt.Printf("  guesses answered: %d (%.1f per second): %d wrong-password replies, %d refused as locked out; sessions opened: %d\n",
		answered.Load(), float64(answered.Load())/dur.Seconds(), failed.Load(), locked.Load(), sessionsOpened.Load())
	fmt.Printf("  password guesses actually checked per second: %.2f\n", float64(failed.Load())/dur.Seconds())
	fmt.Printf("  the right password afterwards, from another address: %s\n", right)
	return nil
}

type client struct {
	c  net.Conn
	tp *textproto.Conn
}

func dial(addr, from string, tc *tls.Config, deadline time.Time) (*client, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(deadline.Add(30 * time.Second))
	cl := &client{c: c, tp: textproto.NewConn(c)}
	step := func(cmd string, want int) error {
		if cmd != "" {
			if err := cl.tp.PrintfLine("%s", cmd); err != nil {
				return err
			}
		}
		if _, _, err := cl.tp.ReadResponse(want); err != nil {
			return err
		}
		return nil
	}
	if err := step("", 220); err != nil {
		c.Close()
		return nil, err
	}
	if err := step("EHLO guess.example", 250); err != nil {
		c.Close()
		return nil, err
	}
	if err := step("STARTTLS", 220); err != nil {
		c.Close()
		return nil, err
	}
	t := tls.Client(c, tc)
	if err := t.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	cl.c, cl.tp = t, textproto.NewConn(t)
	if err := step("EHLO guess.example", 250); err != nil {
		t.Close()
		return nil, err
	}
	return cl, nil
}

func (c *client) auth(user, pass string) (int, string, error) {
	if err := c.tp.PrintfLine("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass))); err != nil {
		return 0, "", err
	}
	code, msg, err := c.tp.ReadResponse(0)
	if code == 0 {
		return 0, "", err
	}
	if code == 421 {
		return code, msg, errors.New("closed")
	}
	return code, msg, nil
}

func (c *client) close() {
	c.tp.PrintfLine("QUIT")
	c.c.Close()
}
