// Package testbed lays out a set of agency gateways on loopback: an
// OpenPGP identity per agency, a private CA and TLS certificates, the
// agency directory with every gateway's address and pinned fingerprint, a
// config file per gateway, and submission accounts. It starts and stops
// the gateways as separate `conduit serve` processes and talks to them
// over real SMTP with real TLS. `conduit demo` and the end-to-end tests are
// built on it.
package testbed

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/goccy/go-yaml"
	"golang.org/x/crypto/bcrypt"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/examples"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/pki"
)

// ClockEnv names a file whose content (a Go duration, "73h") `conduit
// serve` adds to its gateway's clock. It is a test-only hook: the bed sets
// it on every node so MoveClock can move a running gateway 72 hours ahead
// in a second; a deployment never sets it.
const ClockEnv = "CONDUIT_TEST_CLOCK_OFFSET_FILE"

// Node is one agency's gateway in the bed.
type Node struct {
	ID         string
	Dir        string
	Config     string // the config file
	Submission string // host:port (STARTTLS)
	Inbound    string // host:port
	Admin      string // host:port of /metrics, /healthz, /readyz
	// Console is the web console's host:port (Options.Console), served
	// over HTTPS; every role has an account there: User (sender),
	// User+"-receiver", User+"-supervisor" and User+"-admin", all with
	// Password.
	Console  string
	User     string // submission account
	Password string
	Address  string // the account's mailbox
	Maildir  string
	Log      string // the process's log file

	cmd  *exec.Cmd
	done chan error
}

// Bed is a set of gateways sharing a directory, a CA and a policy.
type Bed struct {
	Dir       string
	Bin       string // the conduit binary
	CA        *pki.CA
	Directory *config.Directory
	Nodes     map[string]*Node
	IDs       []string
	// Postgres names the agencies whose store is a PostgreSQL database
	// (agency → connection string), as Options.Postgres.
	Postgres  map[string]string
	tlsClient *tls.Config
	// realClocks: Options.RealClocks.
	realClocks bool
}

// Options shape a bed.
type Options struct {
	// Queue tunes retries for tests (short by default).
	RetryMin, RetryMax string
	// MaxAge is how long a package is retried before its sender is told
	// it failed ("" : the gateway's default).
	MaxAge string
	// ReceiptGather is how long receipts are gathered into one envelope
	// ("": the gateway's default).
	ReceiptGather string
	// Extra is appended to every node's config.
	Extra string
	// Policy replaces the example policy (nil: examples.Policy).
	Policy []byte
	// Directory, when set, may change the directory (routes, mailboxes)
	// after the bed has filled in gateways and fingerprints, before it is
	// written.
	Directory func(b *Bed, d *config.Directory)
	// Postgres gives agencies a PostgreSQL store (agency → connection
	// string) instead of their SQLite file.
	Postgres map[string]string
	// Gateways runs several gateway processes for an agency (agency →
	// count, on its PostgreSQL store): the first is node AGENCY, the
	// others AGENCY/2, AGENCY/3...; the directory lists them all
	// (gateways:), and they share the agency's Maildir.
	Gateways map[string]int
	// LMTP delivers an agency's received packages by LMTP to the address
	// given (agency → host:port) instead of its Maildir.
	LMTP map[string]string
	// Console starts every gateway's web console, with an account per
	// role.
	Console bool
	// MessageBytes raises the gateways' message size limit (0: default).
	MessageBytes int64
	// RealClocks runs the gateways as a deployment does: on the system
	// clock, without the test hook that MoveClock needs (a look at a
	// file on every reading of the clock), and with the default
	// housekeeping interval. A benchmark measures what a deployment runs.
	RealClocks bool
}

// Create makes a bed in dir from the example directory and policy. Every
// UK agency gets a key, a certificate and a config, since any rule may route
// a package to it; which gateways run is StartAll's choice, and a package
// for one that does not run waits in the queue. Agencies outside the UK are
// never given a gateway.
func Create(dir, bin string, opt Options) (*Bed, error) {
	dirDoc, err := config.LoadDirectory("examples/directory.yaml", examples.Directory)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	ca, err := pki.NewCA("Conduit demo CA", now)
	if err != nil {
		return nil, err
	}
	b := &Bed{Dir: dir, Bin: bin, CA: ca, Nodes: map[string]*Node{}, Postgres: opt.Postgres, realClocks: opt.RealClocks}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	b.tlsClient = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	for _, sub := range []string{"certs"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.PEM, 0o644); err != nil {
		return nil, err
	}
	retryMin, retryMax := or(opt.RetryMin, "1s"), or(opt.RetryMax, "4s")
	maxAge := ""
	if opt.MaxAge != "" {
		maxAge = ", max-age: " + opt.MaxAge
	}
	if opt.ReceiptGather != "" {
		maxAge += ", receipt-gather: " + opt.ReceiptGather
	}
	// The example records training on fixed dates, which a policy keeping
	// training for a year would one day find expired: re-date each record
	// to a month ago, so that trained and untrained mailboxes stay what the
	// example means whatever the date.
	trained := now.AddDate(0, -1, 0).Format("2006-01-02")
	var pp ports
	defer pp.release()
	for _, a := range dirDoc.Agencies {
		for _, list := range [][]config.Mailbox{a.Mailboxes, a.Escalation} {
			for i := range list {
				if list[i].Trained != "" {
					list[i].Trained = trained
				}
			}
		}
		if a.Jurisdiction != "GB" {
			// Outside the UK/EEA: in the directory, never given a key or a
			// gateway (the uk-eea-only rule refuses it before sealing).
			a.Gateway = "127.0.0.1:1"
			continue
		}
		n := &Node{ID: a.ID, Dir: filepath.Join(dir, a.ID)}
		if err := os.MkdirAll(filepath.Join(n.Dir, "keys"), 0o700); err != nil {
			return nil, err
		}
		id, err := keys.Generate(a.ID, "conduit@"+a.ID+".example", keys.ProfileRFC4880, now.Add(-time.Hour))
		if err != nil {
			return nil, err
		}
		if err := writeWith(filepath.Join(n.Dir, "keys", a.ID+".key"), 0o600, func(w io.Writer) error { return id.WriteSecret(w, nil) }); err != nil {
			return nil, err
		}
		if err := writeWith(filepath.Join(dir, "certs", a.ID+".pub.asc"), 0o644, func(w io.Writer) error { return keys.WritePublic(w, id.Entity) }); err != nil {
			return nil, err
		}
		a.Fingerprint = id.Fingerprint()
		if err := ca.WriteFiles(filepath.Join(n.Dir, "gw"), a.ID, []string{"127.0.0.1", "localhost"}, now); err != nil {
			return nil, err
		}
		n.User = a.ID
		n.Password = randomHex(12)
		if len(a.Mailboxes) > 0 {
			n.Address = a.Mailboxes[0].Address
		}
		hash, err := bcrypt.GenerateFromPassword([]byte(n.Password), bcrypt.MinCost)
		if err != nil {
			return nil, err
		}
		storeLine := "store: {path: conduit.db}"
		if dsn := opt.Postgres[a.ID]; dsn != "" {
			storeLine = fmt.Sprintf("store: {postgres: %q}", dsn)
		}
		deliveryLine := "delivery: {maildir: maildir}"
		if addr := opt.LMTP[a.ID]; addr != "" {
			deliveryLine = fmt.Sprintf("delivery: {lmtp: %q}", addr)
		}
		count := max(opt.Gateways[a.ID], 1)
		a.Gateways = nil
		for k := 1; k <= count; k++ {
			g := n
			suffix := ""
			if k > 1 {
				suffix = fmt.Sprintf("-%d", k)
				g = &Node{ID: fmt.Sprintf("%s/%d", a.ID, k), Dir: n.Dir, User: n.User, Password: n.Password, Address: n.Address}
			}
			if g.Submission, err = pp.next(); err != nil {
				return nil, err
			}
			if g.Inbound, err = pp.next(); err != nil {
				return nil, err
			}
			if g.Admin, err = pp.next(); err != nil {
				return nil, err
			}
			if opt.Console {
				if g.Console, err = pp.next(); err != nil {
					return nil, err
				}
			}
			if count > 1 {
				a.Gateways = append(a.Gateways, g.Inbound)
			}
			g.Maildir = filepath.Join(n.Dir, "maildir")
			g.Config = filepath.Join(n.Dir, "conduit"+suffix+".yaml")
			g.Log = filepath.Join(n.Dir, "conduit"+suffix+".log")
			cfg := fmt.Sprintf(`agency: %s
directory: ../directory.yaml
policy: ../policy.yaml
pid-file: conduit%s.pid
keys: {secret: keys/%s.key, partners: ../certs}
tls: {cert: gw.crt, key: gw.key, ca: ../ca.crt}
listen: {submission: %q, inbound: %q, admin: %q%s}
%s
%s
queue: {retry-min: %s, retry-max: %s, workers: 4%s}
%s`, a.ID, suffix, a.ID, g.Submission, g.Inbound, g.Admin, consoleListen(g.Console), storeLine, deliveryLine, retryMin, retryMax, maxAge, opt.Extra)
			if opt.MessageBytes > 0 {
				cfg += fmt.Sprintf("limits: {message-bytes: %d}\n", opt.MessageBytes)
			}
			if !opt.RealClocks && !strings.Contains(opt.Extra, "housekeeping-interval:") {
				// A bed moves its gateways' clocks (ClockEnv) by hours in a
				// second: its clocks and retention are looked at every second,
				// where a deployment keeps the default minute.
				cfg += "housekeeping-interval: 1s\n"
			}
			if n.Address != "" {
				cfg += fmt.Sprintf("users:\n  - {name: %s, address: %q, password-hash: %q}\n", n.User, n.Address, hash)
				if opt.Console {
					for _, role := range []string{"receiver", "supervisor", "admin"} {
						r := role
						if r == "admin" {
							r = config.RoleAdministrator
						}
						cfg += fmt.Sprintf("  - {name: %s-%s, address: %q, password-hash: %q, role: %s}\n", n.User, role, n.Address, hash, r)
					}
				}
			}
			if err := os.WriteFile(g.Config, []byte(cfg), 0o600); err != nil {
				return nil, err
			}
			if k > 1 {
				b.Nodes[g.ID] = g
				b.IDs = append(b.IDs, g.ID)
			}
		}
		a.Gateway = n.Inbound
		b.Nodes[a.ID] = n
		b.IDs = append(b.IDs, a.ID)
	}
	if opt.Directory != nil {
		opt.Directory(b, dirDoc)
	}
	out, err := yaml.Marshal(dirDoc)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "directory.yaml"), out, 0o644); err != nil {
		return nil, err
	}
	policy := examples.Policy
	if opt.Policy != nil {
		policy = opt.Policy
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), policy, 0o644); err != nil {
		return nil, err
	}
	if b.Directory, err = config.LoadDirectory(filepath.Join(dir, "directory.yaml"), out); err != nil {
		return nil, fmt.Errorf("testbed directory: %w", err)
	}
	sort.Strings(b.IDs)
	return b, nil
}

func consoleListen(addr string) string {
	if addr == "" {
		return ""
	}
	return fmt.Sprintf(", console: %q", addr)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func writeWith(path string, mode os.FileMode, f func(io.Writer) error) error {
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if err := f(fh); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ports hands out loopback ports for one bed. They come from below the
// kernel's ephemeral range (32768 and up on Linux), where no outgoing
// connection is ever given a port, so a client socket of a running gateway
// cannot take one between Create and Start. Each port is held (listened
// on) until the bed is laid out, so a bed never hands out one port twice;
// release frees them all just before the gateways need them.
type ports struct{ held []net.Listener }

func (p *ports) next() (string, error) {
	for range 200 {
		port := 20000 + mathrand.IntN(12000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // in use: another
		}
		p.held = append(p.held, l)
		return l.Addr().String(), nil
	}
	return "", errors.New("testbed: no free loopback port below the ephemeral range")
}

func (p *ports) release() {
	for _, l := range p.held {
		l.Close()
	}
	p.held = nil
}

// Start runs a node's gateway as a separate process and waits until both
// its listeners accept connections.
func (b *Bed) Start(ctx context.Context, id string) error {
	n := b.Nodes[id]
	if n == nil {
		return fmt.Errorf("testbed: no node %s", id)
	}
	logf, err := os.OpenFile(n.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	n.cmd = exec.Command(b.Bin, "serve", "--config", n.Config, "--log-format", "json")
	n.cmd.Dir = n.Dir
	// Every node's clock can be moved by MoveClock (absent file: no
	// offset), unless the bed runs on real clocks.
	n.cmd.Env = os.Environ()
	if !b.realClocks {
		n.cmd.Env = append(n.cmd.Env, ClockEnv+"="+filepath.Join(n.Dir, "clock-offset"))
	}
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	n.done = make(chan error, 1)
	go func() { n.done <- n.cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(20 * time.Second)
	for _, addr := range []string{n.Inbound, n.Submission, n.Console} {
		if addr == "" {
			continue
		}
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case err := <-n.done:
				n.done <- err
				return fmt.Errorf("testbed: %s exited at start (%v); log:\n%s", id, err, tail(n.Log, 20))
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("testbed: %s did not listen on %s", id, addr)
			}
		}
	}
	return nil
}

// Pid is the process id of a running node's gateway (0 when stopped).
func (b *Bed) Pid(id string) int {
	n := b.Nodes[id]
	if n == nil || n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// StartAll starts the given nodes (all when ids is empty).
func (b *Bed) StartAll(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		ids = b.IDs
	}
	errc := make(chan error, len(ids))
	for _, id := range ids {
		go func(id string) { errc <- b.Start(ctx, id) }(id)
	}
	var errs []error
	for range ids {
		errs = append(errs, <-errc)
	}
	return errors.Join(errs...)
}

// Stop ends a node's process with SIGTERM and waits for it.
func (b *Bed) Stop(id string) error { return b.signal(id, syscall.SIGTERM) }

// Kill ends a node's process with SIGKILL, as a crash would.
func (b *Bed) Kill(id string) error { return b.signal(id, syscall.SIGKILL) }

func (b *Bed) signal(id string, sig syscall.Signal) error {
	n := b.Nodes[id]
	if n == nil || n.cmd == nil || n.cmd.Process == nil {
		return nil
	}
	n.cmd.Process.Signal(sig)
	select {
	case <-n.done:
	case <-time.After(15 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
	}
	n.cmd = nil
	return nil
}

// StopAll stops every running node.
func (b *Bed) StopAll() {
	for _, id := range b.IDs {
		b.Stop(id)
	}
}

// Running reports whether a node's process is running.
func (b *Bed) Running(id string) bool { n := b.Nodes[id]; return n != nil && n.cmd != nil }

// Submit sends a message through a node's submission listener as its
// account: STARTTLS, AUTH PLAIN, MAIL FROM the account's address. It
// returns the final reply's text, or the SMTP error.
func (b *Bed) Submit(ctx context.Context, id string, rcpts []string, msg []byte) (string, error) {
	n := b.Nodes[id]
	c, err := b.dial(ctx, n.Submission)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", n.User, n.Password)); err != nil {
		return "", err
	}
	return b.transact(c, n.Address, rcpts, msg)
}

// SubmitAs is Submit with another MAIL FROM than the account's own
// mailbox, as a submitter trying to send as someone else would.
func (b *Bed) SubmitAs(ctx context.Context, id, from string, rcpts []string, msg []byte) (string, error) {
	n := b.Nodes[id]
	c, err := b.dial(ctx, n.Submission)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", n.User, n.Password)); err != nil {
		return "", err
	}
	return b.transact(c, from, rcpts, msg)
}

// ClientTLS is the TLS configuration a client of the bed's gateways uses:
// the bed's CA, TLS 1.2 at least.
func (b *Bed) ClientTLS() *tls.Config { return b.tlsClient.Clone() }

// OpenAnyStore opens a node's store, SQLite or PostgreSQL; the caller
// closes it.
func (b *Bed) OpenAnyStore(ctx context.Context, id string) (store.Store, error) {
	agency, _, _ := strings.Cut(id, "/")
	if dsn := b.Postgres[agency]; dsn != "" {
		return store.OpenPostgres(ctx, dsn)
	}
	return b.OpenStore(ctx, id)
}

// StorePath is the path of a node's SQLite database.
func (b *Bed) StorePath(id string) string { return filepath.Join(b.Nodes[id].Dir, "conduit.db") }

// OpenStore opens a node's store, to look at its queue, replay cache and
// quarantine from the outside (SQLite in WAL mode allows it while the
// gateway runs). The caller closes it.
func (b *Bed) OpenStore(ctx context.Context, id string) (*store.SQLite, error) {
	if b.Nodes[id] == nil {
		return nil, fmt.Errorf("testbed: no node %s", id)
	}
	return store.OpenSQLite(ctx, b.StorePath(id))
}

// Queue lists a node's queue items (without envelopes) matching f.
func (b *Bed) Queue(ctx context.Context, id string, f store.Filter) ([]store.Item, error) {
	st, err := b.OpenStore(ctx, id)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return st.List(ctx, f)
}

// Quarantined lists a node's quarantined messages (without their bytes).
func (b *Bed) Quarantined(ctx context.Context, id string) ([]store.QItem, error) {
	st, err := b.OpenStore(ctx, id)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return st.ListQuarantine(ctx, "")
}

// Inject sends a raw message to a node's inbound listener, as a partner
// gateway (or an attacker on the wire) would.
func (b *Bed) Inject(ctx context.Context, id, from string, rcpts []string, msg []byte) (string, error) {
	c, err := b.dial(ctx, b.Nodes[id].Inbound)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return b.transact(c, from, rcpts, msg)
}

// InjectAs is Inject over a connection that presents partner's TLS
// client certificate, as that partner's gateway relays: the receiving
// gateway then knows the connection for its partner's.
func (b *Bed) InjectAs(ctx context.Context, id, partner, from string, rcpts []string, msg []byte) (string, error) {
	tc, err := b.PartnerTLS(partner)
	if err != nil {
		return "", err
	}
	c, err := b.dialWith(ctx, b.Nodes[id].Inbound, tc)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return b.transact(c, from, rcpts, msg)
}

// PartnerTLS is the client TLS configuration of a node's gateway: the
// bed's CA and the node's certificate, as its relay presents it.
func (b *Bed) PartnerTLS(id string) (*tls.Config, error) {
	n := b.Nodes[id]
	if n == nil {
		return nil, fmt.Errorf("testbed: no node %s", id)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(n.Dir, "gw.crt"), filepath.Join(n.Dir, "gw.key"))
	if err != nil {
		return nil, err
	}
	tc := b.tlsClient.Clone()
	tc.Certificates = []tls.Certificate{cert}
	return tc, nil
}

func (b *Bed) dial(ctx context.Context, addr string) (*smtp.Client, error) {
	return b.dialWith(ctx, addr, b.tlsClient)
}

func (b *Bed) dialWith(ctx context.Context, addr string, tc *tls.Config) (*smtp.Client, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c, err := smtp.NewClientStartTLS(conn, tc)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.Hello("testbed.localhost"); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (b *Bed) transact(c *smtp.Client, from string, rcpts []string, msg []byte) (string, error) {
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write(msg); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	c.Quit()
	return resp.StatusText, nil
}

// Delivered lists the messages in a node's Maildir for a mailbox.
func (b *Bed) Delivered(id, mailbox string) []string {
	n := b.Nodes[id]
	var out []string
	for _, sub := range []string{"new", "cur"} {
		m, _ := filepath.Glob(filepath.Join(n.Maildir, strings.ToLower(mailbox), sub, "*"))
		out = append(out, m...)
	}
	sort.Strings(out)
	return out
}

// AllDelivered lists every delivered message of a node, by mailbox.
func (b *Bed) AllDelivered(id string) map[string][]string {
	n := b.Nodes[id]
	out := map[string][]string{}
	boxes, _ := os.ReadDir(n.Maildir)
	for _, e := range boxes {
		if files := b.Delivered(id, e.Name()); len(files) > 0 {
			out[e.Name()] = files
		}
	}
	return out
}

// WaitFor polls until cond holds or the timeout passes.
func WaitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// MoveClock sets how far ahead of real time a node's gateway runs, at once
// and while it runs (ClockEnv).
func (b *Bed) MoveClock(id string, ahead time.Duration) error {
	if b.realClocks {
		return errors.New("this bed runs its gateways on real clocks (Options.RealClocks): their clocks cannot be moved")
	}
	return os.WriteFile(filepath.Join(b.Nodes[id].Dir, "clock-offset"), []byte(ahead.String()+"\n"), 0o600)
}

// Tail returns the last lines of a node's log.
func (b *Bed) Tail(id string, n int) string { return tail(b.Nodes[id].Log, n) }
