// Package mailsys starts an agency's own mail system for end-to-end tests:
// a real Postfix (the agency's MTA, relaying through its Conduit gateway
// as its smarthost, with the gateway's relay account) and a real Dovecot
// (the agency's mail store, taking received packages by LMTP and serving
// them over IMAP). Each runs from a temporary folder of its own, with its
// own configuration, queue and logs, on loopback ports, so that neither
// depends on nor disturbs a system Postfix or Dovecot; Close stops it.
// Both need root (Postfix's master and Dovecot drop privileges to their
// system users), as their packages install them.
package mailsys

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RequireTools skips t on a laptop without the mail system or without
// root, and fails it under CI (the caller says: CI=true), where test.sh
// installs the mail system and runs as root.
func RequireTools(t testing.TB, ci bool) {
	t.Helper()
	for _, tool := range Tools {
		if _, err := exec.LookPath(tool); err != nil {
			if ci {
				t.Fatalf("%s is not installed; CI must install it (test.sh does)", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	if os.Geteuid() != 0 {
		if ci {
			t.Fatal("Postfix and Dovecot need root")
		}
		t.Skip("Postfix and Dovecot need root")
	}
}

// Tools lists the programs this package runs; a test checks them first.
var Tools = []string{"postfix", "postconf", "postqueue", "dovecot"}

// FreeAddr returns a loopback address nothing listens on now.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// folder makes a temporary folder the mail systems' unprivileged users
// can enter (t.TempDir's are the owner's only).
func folder(prefix string) (string, error) {
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	return d, os.Chmod(d, 0o755)
}

func waitListen(ctx context.Context, addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after %s", addr, d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PostfixOptions describe the agency's MTA.
type PostfixOptions struct {
	// Hostname and Domain of the MTA (myhostname, mydomain).
	Hostname, Domain string
	// Relayhost is the Conduit gateway's submission address (host:port):
	// all mail, the MTA's own bounces included, goes there.
	Relayhost string
	// RelayUser and RelayPassword are the gateway's relay account.
	RelayUser, RelayPassword string
	// CAFile verifies the gateway's certificate (smtp_tls_security_level
	// = secure: a verified certificate for TLSName, no plaintext).
	CAFile, TLSName string
	// SASLMechanisms restricts the client's SASL mechanisms
	// (smtp_sasl_mechanism_filter), e.g. "login".
	SASLMechanisms string
	// SMTPDCert and SMTPDKey, when set, make its smtpd demand STARTTLS
	// with this certificate (smtpd_tls_security_level = encrypt): the
	// MTA as a partner's mail server that the gateway's relay sends to.
	SMTPDCert, SMTPDKey string
	// DiscardEHLO names EHLO keywords its smtpd does not offer
	// (smtpd_discard_ehlo_keywords), e.g. "pipelining, chunking".
	DiscardEHLO string
}

// Postfix is a running Postfix instance.
type Postfix struct {
	Dir  string
	Conf string
	// SMTP is its smtpd's address, where staff mail clients and cron
	// submit.
	SMTP string
}

// StartPostfix lays out a Postfix instance in a temporary folder and
// starts it (postfix -c DIR start).
func StartPostfix(ctx context.Context, o PostfixOptions) (*Postfix, error) {
	dir, err := folder("conduit-postfix-")
	if err != nil {
		return nil, err
	}
	p := &Postfix{Dir: dir, Conf: filepath.Join(dir, "conf")}
	if p.SMTP, err = FreeAddr(); err != nil {
		return nil, err
	}
	for _, d := range []string{"conf", "queue", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	pf, err := user.Lookup("postfix")
	if err != nil {
		return nil, fmt.Errorf("postfix: %w", err)
	}
	uid, _ := strconv.Atoi(pf.Uid)
	if err := os.Chown(filepath.Join(dir, "data"), uid, -1); err != nil {
		return nil, err
	}
	master, err := os.ReadFile("/etc/postfix/master.cf")
	if err != nil {
		return nil, fmt.Errorf("postfix: %w", err)
	}
	// Its smtpd on a loopback port instead of port 25.
	smtpLine := regexp.MustCompile(`(?m)^smtp\s+inet\s.*$`)
	if !smtpLine.Match(master) {
		return nil, errors.New("postfix: /etc/postfix/master.cf has no smtp inet service to move")
	}
	master = smtpLine.ReplaceAll(master, []byte(p.SMTP+" inet n - n - - smtpd"))
	if err := os.WriteFile(filepath.Join(p.Conf, "master.cf"), master, 0o644); err != nil {
		return nil, err
	}
	extra := ""
	if o.SASLMechanisms != "" {
		extra = "smtp_sasl_mechanism_filter = " + o.SASLMechanisms + "\n"
	}
	if o.SMTPDCert != "" {
		extra += "smtpd_tls_security_level = encrypt\nsmtpd_tls_cert_file = " + o.SMTPDCert + "\nsmtpd_tls_key_file = " + o.SMTPDKey +
			"\nsmtpd_tls_mandatory_protocols = >=TLSv1.2\n"
	}
	if o.DiscardEHLO != "" {
		extra += "smtpd_discard_ehlo_keywords = " + o.DiscardEHLO + "\n"
	}
	main := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
mail_owner = postfix
setgid_group = postdrop
shlib_directory = /usr/lib/postfix
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = %[2]s
mydomain = %[3]s
myorigin = $mydomain
# Nothing is delivered here: all mail goes to the Conduit gateway.
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
relayhost = [%[4]s]:%[5]s
smtp_tls_security_level = secure
smtp_tls_CAfile = %[6]s
smtp_tls_secure_cert_match = %[7]s
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = static:%[8]s:%[9]s
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
%[10]s# Tests want retries soon.
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
`, dir, o.Hostname, o.Domain, hostOf(o.Relayhost), portOf(o.Relayhost), o.CAFile, o.TLSName, o.RelayUser, o.RelayPassword, extra)
	if err := os.WriteFile(filepath.Join(p.Conf, "main.cf"), []byte(main), 0o644); err != nil {
		return nil, err
	}
	if out, err := p.run(ctx, "postfix", "start"); err != nil {
		return nil, fmt.Errorf("postfix start: %v\n%s\n%s", err, out, p.Log())
	}
	if err := waitListen(ctx, p.SMTP, 20*time.Second); err != nil {
		p.Close()
		return nil, fmt.Errorf("postfix: %w\n%s", err, p.Log())
	}
	return p, nil
}

func hostOf(hp string) string { h, _, _ := net.SplitHostPort(hp); return h }
func portOf(hp string) string { _, p, _ := net.SplitHostPort(hp); return p }

func (p *Postfix) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, append([]string{"-c", p.Conf}, args...)...)
	return cmd.CombinedOutput()
}

// Flush asks Postfix to try its deferred mail now (postqueue -f).
func (p *Postfix) Flush(ctx context.Context) error {
	out, err := p.run(ctx, "postqueue", "-f")
	if err != nil {
		return fmt.Errorf("postqueue -f: %v: %s", err, out)
	}
	return nil
}

// Queue returns Postfix's queue listing (postqueue -p).
func (p *Postfix) Queue(ctx context.Context) string {
	out, _ := p.run(ctx, "postqueue", "-p")
	return string(out)
}

// Log returns Postfix's log.
func (p *Postfix) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.Dir, "maillog"))
	return string(b)
}

// Close stops Postfix and removes its folder.
func (p *Postfix) Close() error {
	out, err := p.run(context.Background(), "postfix", "stop")
	if err != nil {
		return fmt.Errorf("postfix stop: %v: %s", err, out)
	}
	return os.RemoveAll(p.Dir)
}

// Dovecot is a running Dovecot: LMTP for the gateway, IMAP for the staff.
type Dovecot struct {
	Dir        string
	LMTP, IMAP string
	cmd        *exec.Cmd
	done       chan error
}

// StartDovecot starts Dovecot in the foreground from a temporary folder,
// with one user per address (password in users[address]).
func StartDovecot(ctx context.Context, postmaster string, users map[string]string) (*Dovecot, error) {
	dir, err := folder("conduit-dovecot-")
	if err != nil {
		return nil, err
	}
	d := &Dovecot{Dir: dir}
	if d.LMTP, err = FreeAddr(); err != nil {
		return nil, err
	}
	if d.IMAP, err = FreeAddr(); err != nil {
		return nil, err
	}
	vm, err := user.Lookup("dovecot")
	if err != nil {
		return nil, fmt.Errorf("dovecot: %w", err)
	}
	for _, sub := range []string{"run", "state", "mail"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, err
		}
	}
	uid, _ := strconv.Atoi(vm.Uid)
	gid, _ := strconv.Atoi(vm.Gid)
	if err := os.Chown(filepath.Join(dir, "mail"), uid, gid); err != nil {
		return nil, err
	}
	var pw strings.Builder
	for addr, pass := range users {
		fmt.Fprintf(&pw, "%s:{PLAIN}%s:%d:%d::%s/mail/%s\n", addr, pass, uid, gid, dir, addr)
	}
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte(pw.String()), 0o644); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:~/Maildir
first_valid_uid = %[2]d
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %[1]s/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%%u %[1]s/passwd
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[3]s
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = %[4]s
  }
}
protocol lmtp {
  postmaster_address = %[5]s
}
`, dir, uid, portOf(d.IMAP), portOf(d.LMTP), postmaster)
	cf := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	d.cmd = exec.Command("dovecot", "-F", "-c", cf)
	out, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		return nil, err
	}
	d.cmd.Stdout, d.cmd.Stderr = out, out
	if err := d.cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("dovecot: %w", err)
	}
	d.done = make(chan error, 1)
	go func() { d.done <- d.cmd.Wait(); out.Close() }()
	for _, a := range []string{d.LMTP, d.IMAP} {
		if err := waitListen(ctx, a, 20*time.Second); err != nil {
			d.Close()
			return nil, fmt.Errorf("dovecot: %w\n%s", err, d.Log())
		}
	}
	return d, nil
}

// Log returns Dovecot's log and standard error.
func (d *Dovecot) Log() string {
	a, _ := os.ReadFile(filepath.Join(d.Dir, "dovecot.log"))
	b, _ := os.ReadFile(filepath.Join(d.Dir, "stderr"))
	return string(a) + string(b)
}

// Close stops Dovecot (SIGTERM to the master it started) and removes its
// folder.
func (d *Dovecot) Close() error {
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Signal(os.Interrupt)
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			<-d.done
		}
	}
	return os.RemoveAll(d.Dir)
}

// Fetch logs in over IMAP and returns every message in the INBOX, whole
// (BODY.PEEK[], so nothing is marked read).
func (d *Dovecot) Fetch(ctx context.Context, user, pass string) ([][]byte, error) {
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "tcp", d.IMAP)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil {
		return nil, fmt.Errorf("imap greeting: %w", err)
	}
	cmd := func(tag, line string) ([][]byte, error) {
		if _, err := fmt.Fprintf(conn, "%s %s\r\n", tag, line); err != nil {
			return nil, err
		}
		var lits [][]byte
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return nil, fmt.Errorf("imap %s: %w", line, err)
			}
			if strings.HasPrefix(l, tag+" ") {
				if !strings.HasPrefix(l, tag+" OK") {
					return nil, fmt.Errorf("imap %s: %s", strings.Fields(line)[0], strings.TrimSpace(l))
				}
				return lits, nil
			}
			// A literal: {n}\r\n then n bytes.
			if m := regexp.MustCompile(`\{(\d+)\}\r\n$`).FindStringSubmatch(l); m != nil {
				n, _ := strconv.Atoi(m[1])
				b := make([]byte, n)
				if _, err := io.ReadFull(r, b); err != nil {
					return nil, err
				}
				lits = append(lits, b)
			}
		}
	}
	if _, err := cmd("a1", fmt.Sprintf("LOGIN %q %q", user, pass)); err != nil {
		return nil, err
	}
	if _, err := cmd("a2", "SELECT INBOX"); err != nil {
		return nil, err
	}
	msgs, err := cmd("a3", "FETCH 1:* BODY.PEEK[]")
	if err != nil && strings.Contains(err.Error(), "Invalid messageset") {
		return nil, nil // an empty INBOX
	}
	cmd("a4", "LOGOUT")
	return msgs, err
}
