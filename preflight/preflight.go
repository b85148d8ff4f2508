// Package preflight is in charge of what `conduit serve` checks and makes
// before the gateway starts: the folders it writes (the store's, the
// Maildir, the pid file's) are created; every file it reads (secret key,
// passphrase, TLS certificate, key and CA, partner certificates, audit
// key) is there and readable; its certificate verifies against the CA for
// the gateway's own host name and names the agency; every partner on
// Conduit has a certificate with the pinned fingerprint. Each finding
// names the file or field and what to do.
package preflight

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/keys"
)

// Finding is one problem found. A fatal one stops the start; the others
// are warnings the administrator must act on.
type Finding struct {
	Fatal bool
	// What names the config field and the file.
	What string
	// Problem says what is wrong, Fix what to do.
	Problem, Fix string
}

func (f Finding) String() string { return f.What + ": " + f.Problem + "; " + f.Fix }

// Error is the fatal findings, one a line.
type Error []Finding

func (e Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "the gateway cannot start (%d problem", len(e))
	if len(e) > 1 {
		b.WriteString("s")
	}
	b.WriteString("):")
	for _, f := range e {
		b.WriteString("\n  - " + f.String())
	}
	return b.String()
}

// Check makes the folders the gateway writes and checks what it reads, at
// time now; passphraseGiven says the key's passphrase comes from elsewhere
// than its file (CONDUIT_PASSPHRASE, read by the command). It returns the
// warnings, and an Error holding the fatal findings, if any.
func Check(cfg *config.Config, now time.Time, passphraseGiven bool) ([]Finding, error) {
	var c checker
	c.cfg, c.now = cfg, now
	g := cfg.Gateway
	if g.Store.Path != "" {
		c.mkdir("store.path", filepath.Dir(g.Store.Path), 0o750)
	}
	if g.Delivery.Maildir != "" {
		c.mkdir("delivery.maildir", g.Delivery.Maildir, 0o700)
	}
	if cfg.PIDFile != "" {
		c.mkdir("pid-file", filepath.Dir(cfg.PIDFile), 0o750)
	}
	if g.Keys.KeyBackend() != config.BackendVault {
		c.readable("keys.secret", g.Keys.Secret, "make it with conduit init or conduit keys generate, or correct the path")
		if g.Keys.PassphraseFile != "" && !passphraseGiven {
			c.readable("keys.passphrase-file", g.Keys.PassphraseFile, "put the secret key's passphrase in it (readable by the gateway's user only), or give it in CONDUIT_PASSPHRASE")
		}
	}
	if g.Store.AuditKeyFile != "" {
		c.readable("store.audit-key-file", g.Store.AuditKeyFile, "restore the audit key from its backup; without it the audit chain cannot be verified or extended")
	}
	c.partners()
	c.tls()
	c.lmtp()
	var fatal Error
	var warn []Finding
	for _, f := range c.out {
		if f.Fatal {
			fatal = append(fatal, f)
		} else {
			warn = append(warn, f)
		}
	}
	if len(fatal) > 0 {
		return warn, fatal
	}
	return warn, nil
}

type checker struct {
	cfg *config.Config
	now time.Time
	out []Finding
}

func (c *checker) fatal(what, problem, fix string) {
	c.out = append(c.out, Finding{Fatal: true, What: what, Problem: problem, Fix: fix})
}

func (c *checker) warn(what, problem, fix string) {
	c.out = append(c.out, Finding{What: what, Problem: problem, Fix: fix})
}

func (c *checker) mkdir(field, dir string, mode os.FileMode) {
	if err := os.MkdirAll(dir, mode); err != nil {
		c.fatal(field+" ("+dir+")", "the folder cannot be made: "+cause(err), "make it writable by the gateway's user (the systemd unit's StateDirectory does it)")
	}
}

func (c *checker) readable(field, path, fix string) bool {
	f, err := os.Open(path)
	if err != nil {
		c.fatal(field+" ("+path+")", cause(err), fix)
		return false
	}
	f.Close()
	return true
}

// cause is an error's reason without the path it repeats.
func cause(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return "no such file or folder"
		case errors.Is(err, fs.ErrPermission):
			return "permission denied to the gateway's user"
		}
		return pe.Err.Error()
	}
	return err.Error()
}

// partners checks the certificate folder and that every partner on Conduit
// has a certificate there with the directory's fingerprint. A missing one
// is a warning: the gateway runs, and packages for that partner are
// refused (or a changed key waits for approval) until it is put right.
func (c *checker) partners() {
	dir := c.cfg.Keys.Partners
	if dir == "" {
		return
	}
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		why := "is not a folder"
		if err != nil {
			why = cause(err)
		}
		c.fatal("keys.partners ("+dir+")", why, "make the folder and put each partner's certificate in it as AGENCY.pub.asc")
		return
	}
	for _, a := range c.cfg.Directory.Agencies {
		if a.ID == c.cfg.Agency || a.Gateway == "" {
			continue
		}
		path := filepath.Join(dir, a.ID+".pub.asc")
		f, err := os.Open(path)
		if err != nil {
			c.warn("partner "+a.ID+" ("+path+")", "no certificate ("+cause(err)+"): packages for "+a.ID+" are refused until there is one",
				"put the certificate "+a.ID+"'s administrator sent you there (fingerprint "+a.Fingerprint+")")
			continue
		}
		cert, err := keys.ReadCert(f)
		f.Close()
		if err != nil {
			c.warn("partner "+a.ID+" ("+path+")", "not an OpenPGP certificate: "+err.Error(), "ask "+a.ID+"'s administrator for its AGENCY.pub.asc again")
			continue
		}
		if fp := cert.Fingerprint(); fp != keys.NormalizeFingerprint(a.Fingerprint) {
			c.warn("partner "+a.ID+" ("+path+")", "its fingerprint "+fp+" is not the directory's pin "+a.Fingerprint+"; it is recorded as a pending key change and not used",
				"check the fingerprint with "+a.ID+" by telephone, then conduit keys approve "+a.ID+" "+fp+", or correct the directory")
		}
	}
}

// tls checks the gateway's certificate: readable, a pair with its key,
// within its validity, verified by the CA for the gateway's host name, for
// server and client use, naming the agency as a mutual-TLS route needs.
func (c *checker) tls() {
	t := c.cfg.TLS
	if t.Cert == "" || t.Key == "" {
		return
	}
	okCert := c.readable("tls.cert", t.Cert, "have the CSR (tls/gateway.csr from conduit init) signed by the agencies' CA and put the certificate here")
	okKey := c.readable("tls.key", t.Key, "the key that goes with the certificate; if it is lost, make a new key and CSR")
	okCA := t.CA == "" || c.readable("tls.ca", t.CA, "put the agencies' CA certificate (PEM) here: it verifies partner gateways")
	if !okCert || !okKey || !okCA {
		return
	}
	pair, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		c.fatal("tls.cert and tls.key ("+t.Cert+", "+t.Key+")", err.Error(), "give the certificate and the key it was issued for, both PEM")
		return
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		c.fatal("tls.cert ("+t.Cert+")", err.Error(), "give a PEM X.509 certificate")
		return
	}
	what := "tls.cert (" + t.Cert + ")"
	if c.now.After(leaf.NotAfter) {
		c.fatal(what, "expired on "+leaf.NotAfter.UTC().Format(time.RFC3339), "have a new certificate issued for the same names")
	} else if c.now.Before(leaf.NotBefore) {
		c.fatal(what, "not valid until "+leaf.NotBefore.UTC().Format(time.RFC3339), "check this machine's clock")
	} else if left := leaf.NotAfter.Sub(c.now); left < 30*24*time.Hour {
		c.warn(what, fmt.Sprintf("expires in %d days (%s)", int(left.Hours()/24), leaf.NotAfter.UTC().Format("2006-01-02")), "have a new certificate issued for the same names")
	}
	host := c.host()
	if t.CA != "" {
		pem, _ := os.ReadFile(t.CA)
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			c.fatal("tls.ca ("+t.CA+")", "holds no PEM certificate", "put the agencies' CA certificate (PEM) here")
			return
		}
		inter := x509.NewCertPool()
		for _, der := range pair.Certificate[1:] {
			if ic, err := x509.ParseCertificate(der); err == nil {
				inter.AddCert(ic)
			}
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: c.now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			// A warning, not a refusal: a partner that pins this
			// gateway's key (tls-pin) accepts it whoever signed it.
			c.warn(what, "does not verify against tls.ca "+t.CA+" for server use ("+err.Error()+"): partners that verify gateways against the agencies' CA refuse to deliver here, and only those that pin this key (tls-pin) accept it",
				"have it issued by the agencies' CA, with extended key usage serverAuth and clientAuth")
		}
	}
	if host != "" {
		if err := leaf.VerifyHostname(host); err != nil {
			c.fatal(what, "does not name this gateway's host "+host+" (the directory's gateway): it names DNS "+orNone(leaf.DNSNames)+", IP "+orNone(ipStrings(leaf.IPAddresses)),
				"have it issued with DNS name "+host+": partners connect to that name and verify it")
		}
	}
	if len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		c.warn(what, "has no clientAuth extended key usage: a partner with mutual-tls for this agency refuses this gateway's deliveries",
			"have it issued for both serverAuth and clientAuth")
	}
	if leaf.Subject.CommonName != c.cfg.Agency && (host == "" || !slices.Contains(leaf.DNSNames, host) || net.ParseIP(host) != nil) {
		c.warn(what, "does not name the agency "+c.cfg.Agency+": its CN is "+orNone([]string{leaf.Subject.CommonName})+" and no DNS name is the gateway host (an IP address does not count); a partner with mutual-tls for this agency quarantines every package from it",
			"have it issued with CN "+c.cfg.Agency+" (conduit init's CSR does it)")
	}
}

func (c *checker) host() string {
	h, _ := c.cfg.Self().GatewayHostPort()
	return strings.TrimSuffix(h, ".")
}

// lmtp warns when the agency's mail store's LMTP socket is not there.
func (c *checker) lmtp() {
	l := c.cfg.Delivery.LMTP
	if p, ok := strings.CutPrefix(l, "unix:"); ok {
		if _, err := os.Stat(p); err != nil {
			c.warn("delivery.lmtp ("+p+")", "the mail store's LMTP socket is not there ("+cause(err)+"): received packages wait, refused with a temporary failure, until it is",
				"start the mail store (Dovecot: protocols = lmtp) or correct the path")
		}
	}
}

func orNone(s []string) string {
	var out []string
	for _, x := range s {
		if x != "" {
			out = append(out, x)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

func ipStrings(ips []net.IP) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}
