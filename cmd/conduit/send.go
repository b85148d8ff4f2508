package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/conduit-gateway/conduit/console"
	"github.com/conduit-gateway/conduit/envelope"
)

// newSendCmd builds `conduit send`.
func newSendCmd() *cobra.Command {
	var consoleURL, user, passFile, caFile string
	c := &cobra.Command{
		Use:   "send PACKAGE.yaml --console URL --user NAME [--password-file FILE] [--ca FILE]",
		Short: "Send a package through the gateway's console API, with its attachments",
		Long: `Send reads a package manifest (the YAML of conduit policy explain, with its
body and attachments next to it), signs in to the gateway's console API,
uploads each attachment (with a progress bar on the terminal), and submits
the package through the gateway's intake: the same checks as SMTP
submission. It prints the package id and the decision: where it goes, by
which rule, what was refused or held and why.

The password is read from --password-file or CONDUIT_PASSWORD, never from
the command line. --ca names the CA that signed the console's certificate
(the system roots otherwise).

Exit status: 0 sent, 1 refused or failed, 2 a usage or manifest error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pass := os.Getenv("CONDUIT_PASSWORD")
			if passFile != "" {
				b, err := os.ReadFile(passFile)
				if err != nil {
					return &exitError{exitUsage, err}
				}
				pass = strings.TrimRight(string(b), "\r\n")
			}
			if pass == "" {
				return &exitError{exitUsage, errors.New("give the password in --password-file or CONDUIT_PASSWORD")}
			}
			d, files, err := draftFromManifest(args[0])
			if err != nil {
				return &exitError{exitUsage, err}
			}
			cl, err := newAPIClient(consoleURL, caFile)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			ctx := cmd.Context()
			if err := cl.signIn(ctx, user, pass); err != nil {
				return err
			}
			for _, f := range files {
				id, err := cl.upload(ctx, f, cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				d.Uploads = append(d.Uploads, id)
			}
			return cl.send(ctx, d, cmd.OutOrStdout())
		},
	}
	c.Flags().StringVar(&consoleURL, "console", "", "the console's address, https://host:port")
	c.Flags().StringVar(&user, "user", "", "your account on the gateway")
	c.Flags().StringVar(&passFile, "password-file", "", "a file holding your password (or CONDUIT_PASSWORD)")
	c.Flags().StringVar(&caFile, "ca", "", "the CA certificate that signed the console's certificate")
	c.MarkFlagRequired("console")
	c.MarkFlagRequired("user")
	return c
}

// draftFromManifest reads a package manifest and its body; it returns the
// attachments' paths.
func draftFromManifest(path string) (*console.Draft, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	m, err := envelope.ParseManifest(f)
	f.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	l := m.Label
	d := &console.Draft{To: m.To, Risk: m.Risk, Topic: m.Topic, Label: console.DraftLabel{
		Classification: string(l.Classification), Descriptor: l.Descriptor, Caveat: l.Caveat,
		Grading: string(l.Grading.Scheme), Source: l.Grading.Source, Intelligence: l.Grading.Intelligence, Handling: l.Grading.Handling,
		Authorisation: l.Authorisation, Conditions: l.Conditions, Basis: string(l.Basis), Purpose: string(l.Purpose),
		Sanitised: l.Sanitised, SanitisedBy: l.SanitisedBy, Reference: l.Reference,
	}}
	for _, s := range l.Subjects {
		d.Label.Subjects = append(d.Label.Subjects, string(s))
	}
	if !l.Review.IsZero() {
		d.Label.Review = l.Review.Format("2006-01-02")
	}
	for _, s := range m.Subjects {
		d.Subjects = append(d.Subjects, console.DraftSubject{Role: string(s.Role), Establishment: s.Establishment, Region: s.Region, Flags: s.Flags, Post: s.Post, ID: s.ID})
	}
	dir := filepath.Dir(path)
	if m.Body != "" {
		b, err := os.ReadFile(filepath.Join(dir, m.Body))
		if err != nil {
			return nil, nil, fmt.Errorf("%s: body: %w", path, err)
		}
		d.Body = string(b)
	}
	var files []string
	for _, a := range m.Attachments {
		p := filepath.Join(dir, a)
		if _, err := os.Stat(p); err != nil {
			return nil, nil, fmt.Errorf("%s: attachment: %w", path, err)
		}
		files = append(files, p)
	}
	return d, files, nil
}

type apiClient struct {
	base  string
	http  *http.Client
	token string
}

func newAPIClient(base, caFile string) (*apiClient, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("--console %q: give https://host:port", base)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s: no certificate in it", caFile)
		}
		tc.RootCAs = pool
	}
	return &apiClient{base: strings.TrimRight(base, "/"), http: &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}}, nil
}

func (c *apiClient) do(ctx context.Context, method, path, ctype string, body io.Reader, size int64, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if size > 0 {
		req.ContentLength = size
	}
	req.Header.Set("Content-Type", ctype)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error  string          `json:"error"`
			Fields []console.Field `json:"fields"`
		}
		json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e)
		msg := e.Error
		for _, f := range e.Fields {
			msg += fmt.Sprintf("\n  %s: %s", f.Field, f.Message)
		}
		if msg == "" {
			msg = resp.Status
		}
		return errors.New(msg)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

func (c *apiClient) signIn(ctx context.Context, user, pass string) error {
	b, _ := json.Marshal(map[string]string{"name": user, "password": pass})
	var out struct {
		Token string `json:"token"`
	}
	if err := c.do(ctx, "POST", "/api/v1/session", "application/json", bytes.NewReader(b), 0, &out); err != nil {
		return fmt.Errorf("sign in: %w", err)
	}
	c.token = out.Token
	return nil
}

// upload streams one attachment, drawing a progress bar on w.
func (c *apiClient) upload(ctx context.Context, path string, w io.Writer) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	pr := &progress{r: f, total: fi.Size(), name: filepath.Base(path), w: w}
	var out struct {
		ID string `json:"id"`
	}
	req := func() error {
		hreq, err := http.NewRequestWithContext(ctx, "POST", c.base+"/api/v1/uploads", pr)
		if err != nil {
			return err
		}
		hreq.ContentLength = fi.Size()
		hreq.Header.Set("Content-Type", "application/octet-stream")
		hreq.Header.Set("X-Filename", url.PathEscape(filepath.Base(path)))
		hreq.Header.Set("Authorization", "Bearer "+c.token)
		resp, err := c.http.Do(hreq)
		if err != nil {
			return fmt.Errorf("upload %s: %w", path, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			var e struct{ Error string }
			json.NewDecoder(resp.Body).Decode(&e)
			return fmt.Errorf("upload %s: %s", path, e.Error)
		}
		return json.NewDecoder(resp.Body).Decode(&out)
	}
	err = req()
	pr.done()
	return out.ID, err
}

func (c *apiClient) send(ctx context.Context, d *console.Draft, w io.Writer) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	var out struct {
		Package  string          `json:"package"`
		Reply    string          `json:"reply"`
		Decision console.Preview `json:"decision"`
	}
	if err := c.do(ctx, "POST", "/api/v1/packages", "application/json", bytes.NewReader(b), 0, &out); err != nil {
		return fmt.Errorf("package not sent: %w", err)
	}
	fmt.Fprintf(w, "package %s accepted\n", out.Package)
	p := out.Decision
	for _, g := range p.Goes {
		var rules []string
		for _, r := range g.Rules {
			rules = append(rules, r.ID+" ("+r.Source+")")
		}
		fmt.Fprintf(w, "  to %s (%s), %s priority: %s\n      by %s\n", g.Name, g.Agency, g.Priority, strings.Join(g.Mailboxes, ", "), strings.Join(rules, "; "))
	}
	for _, r := range p.Refused {
		fmt.Fprintf(w, "  not to %s: %s (%s)\n", r.Agency, r.Reason, r.Rule)
	}
	for _, h := range p.Held {
		fmt.Fprintf(w, "  held for %s: %s (%s)\n", h.Agency, h.Reason, h.Rule)
	}
	return nil
}

// progress counts what an upload has read and draws a bar, at most ten
// times a second.
type progress struct {
	r     io.Reader
	total int64
	n     int64
	name  string
	w     io.Writer
	last  time.Time
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if time.Since(p.last) > 100*time.Millisecond || err == io.EOF {
		p.last = time.Now()
		p.draw()
	}
	return n, err
}

func (p *progress) draw() {
	const width = 30
	frac := 1.0
	if p.total > 0 {
		frac = float64(p.n) / float64(p.total)
	}
	full := int(frac * width)
	fmt.Fprintf(p.w, "\r%-24.24s [%s%s] %3.0f%% %6.1f MiB", p.name, strings.Repeat("=", full), strings.Repeat(" ", width-full), frac*100, float64(p.n)/(1<<20))
}

func (p *progress) done() {
	p.draw()
	fmt.Fprintln(p.w)
}
