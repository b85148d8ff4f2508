// Package provision is in charge of setting up an agency's gateway in a
// folder (`conduit init`): the agency's OpenPGP key, encrypted at rest with
// a generated passphrase; a TLS key with a certificate signing request, or
// a certificate from a given CA, naming the agency and the gateway's host;
// a commented config, directory and policy; the folders the gateway
// writes; a first administrator account; and the agency's directory entry
// to send to partners. It asks for nothing that has a sensible default.
package provision

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/pki"
)

// Options say what to set up. Agency, Kind and at least one mailbox are
// required; everything else has a default.
type Options struct {
	// Dir is the folder to set up; it must be empty or absent.
	Dir    string
	Agency string
	// Name is the agency's name (default: the id).
	Name string
	Kind config.Kind
	// Region (prisons, RPIUs, probation), Covers (a regional CCU), Force
	// (a PIO or FIB; a prison without a PIO), Serves (a PIO).
	Region string
	Covers []string
	Force  string
	Serves []string
	// Host is the gateway's host name as partners reach it (default: this
	// machine's host name). It is the certificate's DNS name and the
	// directory entry's gateway.
	Host string
	// Inbound, Submission and Admin are the listen addresses (defaults
	// ":25", ":587", "127.0.0.1:9025").
	Inbound, Submission, Admin string
	// Mailboxes are the agency's mailboxes: "address" (the intake) or
	// "function=address" (governing-governor=gov@prison.example).
	Mailboxes []string
	// Trained is the date (YYYY-MM-DD) the mailbox holders last completed
	// data-protection training; empty leaves no record, and the policy
	// holds packages for untrained mailboxes until one is added.
	Trained string
	// State is the folder the gateway writes (its store, pid file and
	// Maildir): "var" in Dir by default; /var/lib/conduit under the
	// systemd unit, which keeps /etc read-only.
	State string
	// LMTP delivers received packages to the agency's mail store (Dovecot)
	// instead of the gateway's own Maildir folder.
	LMTP string
	// Profile is the OpenPGP profile (rfc4880 by default).
	Profile string
	// CACert and CAKey, when both given, are the PEM files of the CA that
	// signs the gateway's certificate; without them a CSR is written for
	// the agencies' CA.
	CACert, CAKey string
	// Validity of a certificate issued with CACert (default 365 days).
	Validity time.Duration
	// Admin account: user name (default "admin") and address (default the
	// intake mailbox).
	AdminUser, AdminAddress string
	// RelayUser, when set, adds a relay account for the agency's own mail
	// server (Postfix relaying through the gateway); its password is
	// written beside the administrator's.
	RelayUser string
	// VaultAddress, when set, configures the Vault key backend; the key is
	// then imported with `conduit keys vault-import` and its file removed.
	VaultAddress string
	// Now is the clock (tests); zero means time.Now.
	Now time.Time
}

// Result is what was made.
type Result struct {
	Dir         string
	Config      string // conduit.yaml
	Entry       string // AGENCY.entry.yaml: the directory entry for partners
	PublicKey   string // AGENCY.pub.asc: the certificate for partners
	Fingerprint string
	TLSPin      string
	Gateway     string // the entry's gateway: host[:port]
	// CSR is the certificate request to have signed (empty when a CA was
	// given and Cert was issued).
	CSR, Cert string
	// PasswordFile holds the administrator's (and relay account's)
	// password, readable by the owner only.
	PasswordFile string
	// Steps are the next steps, in order, as sentences.
	Steps []string
}

// Init sets up a gateway folder.
func Init(o Options) (*Result, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	if err := emptyOrAbsent(o.Dir); err != nil {
		return nil, err
	}
	r := &Result{Dir: o.Dir, Config: filepath.Join(o.Dir, "conduit.yaml")}
	dirs := []string{"keys", "partners", "tls"}
	if !filepath.IsAbs(o.State) {
		dirs = append(dirs, o.State)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o750); err != nil {
			return nil, fmt.Errorf("init: %w", err)
		}
	}
	if err := os.Chmod(filepath.Join(o.Dir, "keys"), 0o700); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}

	// The OpenPGP identity, encrypted at rest with a generated passphrase.
	profile, err := keys.ParseProfile(o.Profile)
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	id, err := keys.Generate(o.Agency, "conduit@"+strings.TrimSuffix(o.Host, "."), profile, o.Now)
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	pass := randomText(24)
	if err := writeFile(filepath.Join(o.Dir, "keys", "passphrase"), 0o600, []byte(pass+"\n")); err != nil {
		return nil, err
	}
	var sec bytes.Buffer
	if err := id.WriteSecret(&sec, []byte(pass)); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	if err := writeFile(filepath.Join(o.Dir, "keys", o.Agency+".key"), 0o600, sec.Bytes()); err != nil {
		return nil, err
	}
	var pub bytes.Buffer
	if err := keys.WritePublic(&pub, id.Entity); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	r.PublicKey = filepath.Join(o.Dir, o.Agency+".pub.asc")
	if err := writeFile(r.PublicKey, 0o644, pub.Bytes()); err != nil {
		return nil, err
	}
	r.Fingerprint = id.Fingerprint()

	// The TLS key, and a certificate or a request for one.
	if err := o.tls(r); err != nil {
		return nil, err
	}

	// Accounts.
	r.PasswordFile = filepath.Join(o.Dir, "passwords")
	adminPass := randomText(18)
	users := []account{{o.AdminUser, o.AdminAddress, adminPass, false}}
	if o.RelayUser != "" {
		users = append(users, account{o.RelayUser, o.AdminAddress, randomText(18), true})
	}
	var pw strings.Builder
	for i := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(users[i].password), bcrypt.DefaultCost)
		if err != nil {
			return nil, fmt.Errorf("init: %w", err)
		}
		fmt.Fprintf(&pw, "%s %s\n", users[i].name, users[i].password)
		users[i].password = string(h)
	}
	if err := writeFile(r.PasswordFile, 0o600, []byte(pw.String())); err != nil {
		return nil, err
	}

	// The directory entry, the directory, the policy and the config.
	entry := o.entry(r)
	r.Entry = filepath.Join(o.Dir, o.Agency+".entry.yaml")
	if err := writeFile(r.Entry, 0o644, []byte(entry)); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(o.Dir, "directory.yaml"), 0o644, []byte(directoryHeader+entry)); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(o.Dir, "policy.yaml"), 0o644, []byte(policyFile)); err != nil {
		return nil, err
	}
	if err := writeFile(r.Config, 0o640, []byte(o.config(users))); err != nil {
		return nil, err
	}
	if err := checkWritten(r.Config, len(o.Serves) > 0); err != nil {
		return nil, fmt.Errorf("init wrote a config that does not load (a fault in conduit init): %w", err)
	}
	r.Steps = o.steps(r)
	return r, nil
}

type account struct {
	name, address, password string
	relay                   bool
}

func (o *Options) defaults() error {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.Name == "" {
		o.Name = o.Agency
	}
	if o.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("init: this machine's host name: %w; give --host", err)
		}
		o.Host = h
	}
	o.Inbound = or(o.Inbound, ":25")
	o.Submission = or(o.Submission, ":587")
	o.Admin = or(o.Admin, "127.0.0.1:9025")
	o.Profile = or(o.Profile, "rfc4880")
	o.State = or(o.State, "var")
	o.AdminUser = or(o.AdminUser, "admin")
	if o.Validity == 0 {
		o.Validity = 365 * 24 * time.Hour
	}
	if o.AdminAddress == "" && len(o.Mailboxes) > 0 {
		_, addr := splitMailbox(o.Mailboxes[0])
		o.AdminAddress = addr
	}
	return nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// check refuses what the directory would refuse, before anything is
// written, each with the flag to give.
func (o *Options) check() error {
	if o.Dir == "" {
		return errors.New("init: give the folder to set up")
	}
	if !envelope.IsAgencyID(o.Agency) {
		return fmt.Errorf("init: --agency %q is not an agency id: 1 to 64 lower-case letters, digits and hyphens (the id partners know you by, e.g. hmp-northgate)", o.Agency)
	}
	if !slices.Contains(config.Kinds, o.Kind) {
		var ks []string
		for _, k := range config.Kinds {
			ks = append(ks, string(k))
		}
		return fmt.Errorf("init: --kind %q is not an agency kind; allowed: %s", o.Kind, strings.Join(ks, ", "))
	}
	if err := config.CheckHostPort(o.Host); err != nil || strings.Contains(o.Host, ":") {
		return fmt.Errorf("init: --host: %v (the host name alone, no port)", err)
	}
	for flag, a := range map[string]string{"--inbound": o.Inbound, "--submission": o.Submission, "--admin": o.Admin} {
		if _, port, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("init: %s %q is not [host]:port", flag, a)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("init: %s %q: the port is not a number from 1 to 65535", flag, a)
		}
	}
	if len(o.Mailboxes) == 0 {
		return errors.New("init: give the agency's intake mailbox with --mailbox intel@your-agency.example (add function=address for others, e.g. governing-governor=governor@hmp-northgate.example)")
	}
	fns := map[config.Function]bool{}
	for _, m := range o.Mailboxes {
		fn, addr := splitMailbox(m)
		if !slices.Contains(config.Functions, fn) {
			return fmt.Errorf("init: --mailbox %q: %q is not a mailbox function", m, fn)
		}
		if at := strings.LastIndexByte(addr, '@'); at < 1 || at == len(addr)-1 || strings.ContainsAny(addr, " <>\"") {
			return fmt.Errorf("init: --mailbox %q: %q is not a mail address", m, addr)
		}
		fns[fn] = true
	}
	if !fns[config.Intake] {
		return errors.New("init: no intake mailbox: give one --mailbox without a function (or intake=ADDRESS)")
	}
	need := map[config.Kind]config.Function{config.Prison: config.GoverningGovernor, config.CCUNational: config.NCCA, config.PECS: config.SecurityManager}
	if fn, ok := need[o.Kind]; ok && !fns[fn] {
		return fmt.Errorf("init: a %s needs a mailbox with function %s: add --mailbox %s=ADDRESS", o.Kind, fn, fn)
	}
	switch o.Kind {
	case config.Prison, config.RPIU, config.ProbationDivision, config.CRC:
		if o.Region == "" {
			return fmt.Errorf("init: a %s needs --region (e.g. north-east)", o.Kind)
		}
	case config.CCURegional:
		if len(o.Covers) == 0 {
			return errors.New("init: a regional CCU needs --covers: the regions it covers")
		}
	}
	if o.Trained != "" {
		if _, err := time.Parse("2006-01-02", o.Trained); err != nil {
			return fmt.Errorf("init: --trained %q is not a date such as 2026-03-01", o.Trained)
		}
	}
	if (o.CACert == "") != (o.CAKey == "") {
		return errors.New("init: give both --ca-cert and --ca-key, or neither (then a CSR is written for the agencies' CA)")
	}
	return nil
}

func splitMailbox(m string) (config.Function, string) {
	if fn, addr, ok := strings.Cut(m, "="); ok {
		return config.Function(fn), addr
	}
	return config.Intake, m
}

func emptyOrAbsent(dir string) error {
	es, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return os.MkdirAll(dir, 0o750)
	}
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if len(es) > 0 {
		return fmt.Errorf("init: %s is not empty; nothing was written (give a new folder, so that no key or config is overwritten)", dir)
	}
	return nil
}

// tls writes the gateway's TLS key and either a certificate from the CA
// given or a CSR for the agencies' CA. The names: CN the agency id (a
// mutual-TLS route takes a client certificate as naming the agency when
// its CN is the agency id or a DNS name is the gateway host), DNS name the
// gateway host (partners verify it when they connect).
func (o *Options) tls(r *Result) error {
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		return fmt.Errorf("init: TLS key: %w", err)
	}
	if err := writeFile(filepath.Join(o.Dir, "tls", "gateway.key"), 0o600, keyPEM); err != nil {
		return err
	}
	if r.TLSPin, err = pki.SPKIPin(key.Public()); err != nil {
		return fmt.Errorf("init: TLS pin: %w", err)
	}
	hosts := []string{strings.TrimSuffix(o.Host, ".")}
	csr, err := pki.CSR(key, o.Agency, hosts)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	r.CSR = filepath.Join(o.Dir, "tls", "gateway.csr")
	if err := writeFile(r.CSR, 0o644, csr); err != nil {
		return err
	}
	if o.CACert == "" {
		return nil
	}
	certPEM, err := os.ReadFile(o.CACert)
	if err != nil {
		return fmt.Errorf("init: --ca-cert: %w", err)
	}
	caKey, err := os.ReadFile(o.CAKey)
	if err != nil {
		return fmt.Errorf("init: --ca-key: %w", err)
	}
	ca, err := pki.LoadCA(certPEM, caKey)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	cert, err := ca.Sign(key.Public(), o.Agency, hosts, o.Now, o.Validity)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	r.Cert = filepath.Join(o.Dir, "tls", "gateway.crt")
	if err := writeFile(r.Cert, 0o644, cert); err != nil {
		return err
	}
	r.CSR = ""
	if err := os.Remove(filepath.Join(o.Dir, "tls", "gateway.csr")); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	return writeFile(filepath.Join(o.Dir, "tls", "ca.crt"), 0o644, ca.PEM)
}

// gateway is the directory's gateway address: the host, with the inbound
// port when it is not 25.
func (o *Options) gateway() string {
	_, port, _ := net.SplitHostPort(o.Inbound)
	if port == "25" {
		return o.Host
	}
	return net.JoinHostPort(o.Host, port)
}

// entry is the agency's directory entry, as a YAML sequence item that can
// be appended to a partner's directory.yaml as it is.
func (o *Options) entry(r *Result) string {
	r.Gateway = o.gateway()
	var b strings.Builder
	fmt.Fprintf(&b, "  # %s: made by conduit init on %s. Check the fingerprint with\n", o.Agency, o.Now.UTC().Format("2006-01-02"))
	b.WriteString("  # the agency by a trusted channel (telephone) before you add it.\n")
	fmt.Fprintf(&b, "  - id: %s\n    name: %s\n    kind: %s\n", o.Agency, yamlString(o.Name), o.Kind)
	if o.Region != "" {
		fmt.Fprintf(&b, "    region: %s\n", o.Region)
	}
	if len(o.Covers) > 0 {
		fmt.Fprintf(&b, "    covers: [%s]\n", strings.Join(o.Covers, ", "))
	}
	if o.Force != "" {
		fmt.Fprintf(&b, "    force: %s\n", o.Force)
	}
	if len(o.Serves) > 0 {
		fmt.Fprintf(&b, "    serves: [%s]\n", strings.Join(o.Serves, ", "))
	}
	// mutual-tls: the certificate init makes names the agency (CN), so a
	// partner can require it when this gateway delivers.
	fmt.Fprintf(&b, "    jurisdiction: GB\n    gateway: %s\n    fingerprint: %s\n    tls-pin: %s\n    mutual-tls: true\n    mailboxes:\n", yamlString(r.Gateway), r.Fingerprint, r.TLSPin)
	for _, m := range o.Mailboxes {
		fn, addr := splitMailbox(m)
		fmt.Fprintf(&b, "      - {address: %s, function: %s", yamlString(addr), fn)
		if o.Trained != "" {
			fmt.Fprintf(&b, ", trained: %s", o.Trained)
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// yamlString quotes a value when YAML would read it as something else.
func yamlString(s string) string {
	if s == "" || strings.ContainsAny(s, ":#{}[],&*!|>'\"%@`") || strings.TrimSpace(s) != s {
		return strconv.Quote(s)
	}
	return s
}

const directoryHeader = `# The agency directory: every agency this gateway exchanges packages with.
# Two agencies are a whole directory. To add a partner, append the entry its
# administrator sent you (AGENCY.entry.yaml from its conduit init) below,
# after checking its fingerprint with them by telephone, and put its
# certificate (AGENCY.pub.asc) in the partners folder.
#
# An agency that is not on Conduit may be listed without gateway and
# fingerprint: the sharing policy then routes by it, and a package that
# would go there is refused with that reason. A rule that needs an agency
# the directory lacks (PAS, the national or a regional CCU) refuses the
# packages that need it, saying so. Reload with: conduit policy reload.
agencies:
`

const policyFile = `# The administrator policy: the built-in rules' parameters and local rules.
# Every built-in rule applies without anything here (docs/policy.md lists
# them with their sources). Examples:
#
# parameters:
#   trained-recipients:
#     valid-days: 365        # training records older than this are expired
#   high-risk-seniority:
#     copy-pas: false        # no PAS in the directory yet
#
# rules:
#   - id: corruption-to-rpiu
#     description: the RPIU sees every corruption package
#     source: local instruction 2026/3
#     when: manifest.topic == "corruption"
#     action: copy
#     to: [rpiu-north-east]
#     reason: the RPIU leads on corruption
rules: []
`

func (o *Options) config(users []account) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# Configuration of the %s gateway, made by conduit init. Relative paths
# are relative to this file. Check it with: conduit policy check --config THIS
agency: %s
directory: directory.yaml
policy: policy.yaml
# conduit policy reload signals the process named here.
pid-file: %s

keys:
`, o.Agency, o.Agency, yamlString(filepath.Join(o.State, "conduit.pid")))
	if o.VaultAddress != "" {
		fmt.Fprintf(&b, `  # The secret key lives in Vault: import it once with
  #   conduit keys vault-import --config THIS --secret keys/%s.key --passphrase-file keys/passphrase
  # then remove keys/%s.key and keys/passphrase (keep an offline copy; see the README's key backup).
  backend: vault
  partners: partners
vault:
  address: %s
  auth: {method: token, token-file: /run/conduit/vault-token}
`, o.Agency, o.Agency, o.VaultAddress)
	} else {
		fmt.Fprintf(&b, `  # The agency's secret key, encrypted at rest; its passphrase file is
  # readable by the gateway's user only (CONDUIT_PASSPHRASE overrides it).
  secret: keys/%s.key
  passphrase-file: keys/passphrase
  # One AGENCY.pub.asc per partner, used only if its fingerprint is the
  # directory's pin.
  partners: partners
`, o.Agency)
	}
	fmt.Fprintf(&b, `
# The gateway's TLS identity: the certificate names the agency (CN %s) and
# the gateway host (DNS name %s); the CA verifies partner gateways.
tls: {cert: tls/gateway.crt, key: tls/gateway.key, ca: tls/ca.crt}

listen:
  inbound: %q      # partner gateways (STARTTLS required)
  submission: %q   # staff and the agency's mail server (STARTTLS, then AUTH)
  admin: %q        # /metrics, /healthz, /readyz: keep it on loopback

# The queue, the replay cache, the quarantine and the audit trail.
store: {path: %s}

`, o.Agency, strings.TrimSuffix(o.Host, "."), o.Inbound, o.Submission, o.Admin, yamlString(filepath.Join(o.State, "conduit.db")))
	if o.LMTP != "" {
		fmt.Fprintf(&b, "# Received packages go to the agency's mail store by LMTP.\ndelivery: {lmtp: %q}\n", o.LMTP)
	} else {
		fmt.Fprintf(&b, "# Received packages go to one Maildir per mailbox in this folder.\ndelivery: {maildir: %s}\n", yamlString(filepath.Join(o.State, "maildir")))
	}
	fmt.Fprintf(&b, `
# Who is told, by mail, of what needs an administrator.
alerts: {administrators: [%s]}

# Submission accounts (passwords in the passwords file, hashes here; make
# a hash with: conduit user hash). A relay account is the agency's mail
# server: it may send as any mailbox of this agency.
users:
`, yamlString(o.AdminAddress))
	for _, u := range users {
		fmt.Fprintf(&b, "  - {name: %s, address: %s, password-hash: %q", u.name, yamlString(u.address), u.password)
		if u.relay {
			b.WriteString(", relay: true")
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// checkWritten loads the config written. A PIO's serves names prisons
// whose entries come later from their administrators, so those are
// checked without it.
func checkWritten(path string, dropServes bool) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	_, err = config.Parse(path, src, func(p string) ([]byte, error) {
		b, err := config.ReadFile(p)
		if err != nil || !dropServes {
			return b, err
		}
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(strings.TrimSpace(l), "serves:") {
				out = append(out, l)
			}
		}
		return []byte(strings.Join(out, "\n")), nil
	})
	return err
}

func (o *Options) steps(r *Result) []string {
	rel := func(p string) string {
		if q, err := filepath.Rel(o.Dir, p); err == nil {
			return filepath.Join(o.Dir, q)
		}
		return p
	}
	var s []string
	if r.CSR != "" {
		s = append(s, fmt.Sprintf("Have %s signed by the agencies' CA for server and client authentication (it names CN %s and DNS %s; keep both). Put the certificate at %s and the CA's certificate at %s.",
			rel(r.CSR), o.Agency, strings.TrimSuffix(o.Host, "."), filepath.Join(o.Dir, "tls", "gateway.crt"), filepath.Join(o.Dir, "tls", "ca.crt")))
	}
	s = append(s,
		fmt.Sprintf("Send %s and %s to each partner's administrator. Read them the fingerprint %s by telephone.", rel(r.Entry), rel(r.PublicKey), r.Fingerprint),
		fmt.Sprintf("For each partner: append its entry to %s and put its certificate in %s as AGENCY.pub.asc.", filepath.Join(o.Dir, "directory.yaml"), filepath.Join(o.Dir, "partners")),
	)
	if o.Trained == "" {
		s = append(s, fmt.Sprintf("Record when each mailbox holder last completed data-protection training (trained: YYYY-MM-DD in %s): packages for a mailbox without a record are held.", filepath.Join(o.Dir, "directory.yaml")))
	}
	if o.VaultAddress != "" {
		s = append(s, fmt.Sprintf("Import the key into Vault: conduit keys vault-import --config %s --secret %s --passphrase-file %s, then remove the two files.",
			r.Config, filepath.Join(o.Dir, "keys", o.Agency+".key"), filepath.Join(o.Dir, "keys", "passphrase")))
	}
	s = append(s,
		fmt.Sprintf("Check the set-up: conduit policy check --config %s", r.Config),
		fmt.Sprintf("Start the gateway: conduit serve --config %s (or install deploy/conduit.service; see the README's deployment guide).", r.Config),
		fmt.Sprintf("The passwords of the accounts are in %s (readable by you only): give them to their holders and delete the file.", r.PasswordFile),
		fmt.Sprintf("Back up %s and %s offline now: without them no package sent to this agency can be opened.", filepath.Join(o.Dir, "keys"), filepath.Join(o.Dir, "tls", "gateway.key")),
	)
	return s
}

func writeFile(path string, mode os.FileMode, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("init: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("init: %w", err)
	}
	return f.Close()
}

func randomText(n int) string {
	b := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		panic(err) // the system's randomness failing is not recoverable
	}
	return hex.EncodeToString(b)
}
