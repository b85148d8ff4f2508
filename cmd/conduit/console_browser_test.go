package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/testbed"
)

// axeVersion is the axe-core release test.sh fetches from the npm
// registry (npm pack) into the cache the test reads it from.
const axeVersion = "4.10.3"

// browserSession is one signed-in user in a browser context of its own
// (its own cookies), in the one Chromium the test starts.
type browserSession struct {
	t    *testing.T
	ctx  context.Context
	base string
}

type consoleBed struct {
	t       *testing.T
	b       *testbed.Bed
	browser context.Context
	axe     string
	shots   string // folder for screenshots, "" for none
}

// newConsoleBed starts the gateways with their consoles and one headless
// Chromium. Chromium is required under CI=true (test.sh installs it).
func newConsoleBed(t *testing.T, start ...string) *consoleBed {
	t.Helper()
	chrome := requireTool(t, "chromium")
	axe := axeScript(t)
	b := newE2EBed(t, testbed.Options{Console: true, MessageBytes: 160 << 20}, start...)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.Flag("ignore-certificate-errors", true), chromedp.WindowSize(1366, 1000))...)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	cb := &consoleBed{t: t, b: b, browser: browser, axe: axe}
	if os.Getenv("CONDUIT_SCREENSHOTS") == "1" {
		cb.shots = filepath.Join("..", "..", "docs", "console")
		if err := os.MkdirAll(cb.shots, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return cb
}

// axeScript returns axe.min.js: $CONDUIT_AXE, or the copy test.sh keeps in
// the cache. Missing, the test skips on a laptop and fails under CI.
func axeScript(t *testing.T) string {
	t.Helper()
	p := os.Getenv("CONDUIT_AXE")
	if p == "" {
		cache, err := os.UserCacheDir()
		if err == nil {
			p = filepath.Join(cache, "conduit-test", "axe-core-"+axeVersion, "package", "axe.min.js")
		}
	}
	b, err := os.ReadFile(p)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("axe-core %s is not in %s; test.sh fetches it (npm pack axe-core@%s)", axeVersion, p, axeVersion)
		}
		t.Skipf("axe-core not fetched (%v); run test.sh once", err)
	}
	return string(b)
}

// tab opens a tab in a browser context of its own (its own cookies). The
// tab is created here, on a context without a deadline: a tab created
// under a deadline closes with it.
func (cb *consoleBed) tab() context.Context {
	ctx, cancel := chromedp.NewContext(cb.browser, chromedp.WithNewBrowserContext())
	cb.t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		cb.t.Fatalf("new tab: %v", err)
	}
	return ctx
}

// signIn opens a new browser context and signs in through the form.
func (cb *consoleBed) signIn(node, user string) *browserSession {
	t := cb.t
	t.Helper()
	ctx := cb.tab()
	n := cb.b.Nodes[node]
	s := &browserSession{t: t, ctx: ctx, base: "https://" + n.Console}
	s.do(chromedp.Navigate(s.base+"/signin"),
		chromedp.SetValue(chromedp.CSS("#name"), user),
		chromedp.SetValue(chromedp.CSS("#password"), n.Password),
		chromedp.Click(chromedp.CSS("form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("nav")))
	return s
}

func (s *browserSession) do(steps ...chromedp.Action[chromedp.Void]) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 90*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		s.t.Fatalf("browser: %v\npage: %s", err, s.text("body"))
	}
}

func (s *browserSession) text(sel string) string {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return v
}

func (s *browserSession) location() string {
	v, _ := chromedp.Run(s.ctx, chromedp.Location())
	return v
}

func (s *browserSession) open(path string) {
	s.t.Helper()
	s.do(chromedp.Navigate(s.base+path), chromedp.WaitVisible(chromedp.CSS("h1")))
}

// waitText waits until the element's text contains every want.
func (s *browserSession) waitText(sel string, timeout time.Duration, want ...string) string {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := s.text(sel)
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(got, w)
		}
		if ok {
			return got
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s never showed %q; it shows:\n%s", sel, want, got)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// check runs axe-core in the page and fails on any serious or critical
// violation; it takes the page's screenshot when asked.
func (cb *consoleBed) check(s *browserSession, name string) {
	t := cb.t
	t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 60*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](cb.axe+";true")); err != nil {
		t.Fatalf("inject axe-core: %v", err)
	}
	type violation struct {
		ID     string `json:"id"`
		Impact string `json:"impact"`
		Help   string `json:"help"`
		Nodes  []struct {
			Target  []any  `json:"target"`
			Summary string `json:"summary"`
		} `json:"nodes"`
	}
	vs, err := chromedp.Run(ctx, chromedp.Evaluate[[]violation](`axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]}}).then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map(n => ({target: n.target, summary: n.failureSummary}))})))`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("axe-core on %s: %v", name, err)
	}
	for _, v := range vs {
		if v.Impact == "serious" || v.Impact == "critical" {
			var where []string
			for _, n := range v.Nodes {
				where = append(where, fmt.Sprint(n.Target...)+": "+n.Summary)
			}
			t.Errorf("axe-core: %s page: %s violation %s (%s) at %s", name, v.Impact, v.ID, v.Help, strings.Join(where, "; "))
		}
	}
	if cb.shots != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(cb.shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// consoleAPIClient signs in to a console's JSON API with a cookie jar (no
// bearer token), so that the CSRF rule applies to it.
func consoleAPIClient(t *testing.T, base, user, password string) (*http.Client, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	body, _ := json.Marshal(map[string]string{"name": user, "password": password})
	resp, err := c.Post(base+"/api/v1/session", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		CSRF string `json:"csrf"`
	}
	if resp.StatusCode != http.StatusCreated || json.NewDecoder(resp.Body).Decode(&out) != nil {
		t.Fatalf("API sign-in as %s: %s", user, resp.Status)
	}
	return c, out.CSRF
}

func status(t *testing.T, c *http.Client, method, u string, hdr map[string]string, body io.Reader) int {
	t.Helper()
	req, _ := http.NewRequest(method, u, body)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

var pkgInURL = regexp.MustCompile(`/sent/(cdt-[a-z2-7]{24})`)

// TestConsoleInTheBrowser drives the console in headless Chromium
// against real gateways on loopback: a PIO composes a package whose
// subject is the governing governor of the prison addressed, sees the
// decision name the regional CCU with the rule's citation, sends it, the
// CCU's gateway delivers it and its receipt shows on the Sent page; a
// 100 MiB attachment uploads with its progress shown and is held
// encrypted; an administrator edits the routing policy (a type error
// refused at its line, a dry run, apply, audit, restore) and decides two
// pending partner keys; roles, CSRF tokens and the idle timeout are
// enforced; and axe-core finds no serious or critical violation on any
// page.
func TestConsoleInTheBrowser(t *testing.T) {
	cb := newConsoleBed(t, "northshire-pio", "ccu-north")
	b := cb.b
	pio := b.Nodes["northshire-pio"]
	base := "https://" + pio.Console

	signin := func() {
		s := &browserSession{t: t, ctx: cb.tab(), base: base}
		s.open("/signin")
		cb.check(s, "signin")
		// Keyboard only: the name field has the focus, Tab moves to the
		// password and then the button; Enter signs in.
		focus := func() string {
			v, _ := chromedp.Run(s.ctx, chromedp.Evaluate[string](`document.activeElement.id || document.activeElement.tagName`))
			return v
		}
		order := []string{focus()}
		for range 2 {
			s.do(chromedp.KeyEvent("\t"))
			order = append(order, focus())
		}
		if strings.Join(order, ",") != "name,password,BUTTON" {
			t.Errorf("keyboard focus order %v, want name, password, the button", order)
		}
		s.do(chromedp.Focus(chromedp.CSS("#name")), chromedp.KeyEvent(pio.User), chromedp.Focus(chromedp.CSS("#password")),
			chromedp.KeyEvent(pio.Password+"\r"), chromedp.WaitVisible(chromedp.CSS("nav")))
	}
	signin()

	var pkg string
	t.Run("compose, preview, send, receipt", func(t *testing.T) {
		s := cb.signIn("northshire-pio", pio.User)
		s.t = t
		s.open("/compose")
		// The first Tab reaches the skip link, which takes the focus past
		// the navigation to the page's content.
		s.do(chromedp.KeyEvent("\t"))
		if v, _ := chromedp.Run(s.ctx, chromedp.Evaluate[string](`document.activeElement.className`)); v != "skip" {
			t.Errorf("the first Tab reaches %q, not the skip link", v)
		}
		s.do(chromedp.KeyEvent("\r"))
		if v, _ := chromedp.Run(s.ctx, chromedp.Evaluate[string](`document.activeElement.id`)); v != "main" {
			t.Errorf("the skip link moved the focus to %q, not the main content", v)
		}
		// Sent empty: refused, nothing sent, each problem tied to its field.
		s.do(chromedp.Click(chromedp.CSS("#send")), chromedp.WaitVisible(chromedp.CSS("#to-error")))
		if _, err := chromedp.Run(s.ctx, chromedp.Text(chromedp.CSS(`#to[aria-describedby="to-error"]`))); err != nil {
			t.Errorf("the recipients' error is not tied to them: %v", err)
		}
		if !strings.Contains(s.text("#problem"), "not sent") {
			t.Errorf("no alert: %s", s.text("main"))
		}
		cb.check(s, "compose-errors")
		s.open("/compose")
		s.do(
			chromedp.SetValue(chromedp.CSS("#source5"), "B"),
			chromedp.SetValue(chromedp.CSS("#intelligence5"), "2"),
			chromedp.SetValue(chromedp.CSS("#handling5"), "1"),
			chromedp.SetValue(chromedp.CSS("#purpose"), "corruption-prison"),
			chromedp.SetValue(chromedp.CSS("#subject_role_0"), "governing-governor"),
			chromedp.SetValue(chromedp.CSS("#subject_est_0"), "hmp-northgate"),
			chromedp.SetValue(chromedp.CSS("#topic"), "corruption"),
			chromedp.SetValue(chromedp.CSS("#title"), "Governor conveying phones"),
			chromedp.SetValue(chromedp.CSS("#body"), e2eBody),
			chromedp.Click(chromedp.CSS("#ds-suspected")),
			chromedp.Click(chromedp.CSS("#to-hmp-northgate")),
		)
		// The decision, live: the regional CCU instead of the prison, by
		// governor-to-regional-ccu, with its citation (MoU 6.1).
		got := s.waitText("#preview", 20*time.Second, "ccu-north", "governor-to-regional-ccu", "6.1 police responsibilities, bullet 5")
		if strings.Contains(s.text("#preview .goes"), "(hmp-northgate)") {
			t.Errorf("the preview sends it to the prison too:\n%s", got)
		}
		cb.check(s, "compose")
		s.do(chromedp.Click(chromedp.CSS("#send")), chromedp.WaitVisible(chromedp.CSS(".notice")))
		m := pkgInURL.FindStringSubmatch(s.location())
		if m == nil {
			t.Fatalf("after Send the page is %s:\n%s", s.location(), s.text("main"))
		}
		pkg = m[1]
		// The CCU's own gateway (a second process) delivers it.
		if !testbed.WaitFor(context.Background(), 60*time.Second, func() bool {
			per, _ := deliveredByPackage(b, "ccu-north")
			return per[pkg] > 0
		}) {
			t.Fatalf("ccu-north never received %s; log:\n%s", pkg, b.Tail("ccu-north", 20))
		}
		if per, _ := deliveredByPackage(b, "hmp-northgate"); per[pkg] > 0 {
			t.Errorf("the prison received %s", pkg)
		}
		// The Sent page shows the receipt: delivered, and to which mailbox.
		deadline := time.Now().Add(60 * time.Second)
		for {
			s.open("/sent/" + pkg)
			txt := s.text("main table")
			if strings.Contains(txt, "delivered to rcca@ccu-north.hmpps.example") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no receipt shown for %s:\n%s", pkg, txt)
			}
			time.Sleep(time.Second)
		}
		cb.check(s, "package")
		// A rectification from the package's page reaches the CCU too.
		before := 0
		for _, files := range b.AllDelivered("ccu-north") {
			before += len(files)
		}
		s.do(chromedp.SetValue(chromedp.CSS("#rect-text"), "The wing is D, not C."), chromedp.Click(chromedp.CSS(`form[action$="/rectify"] button`)))
		s.waitText(".notice", 20*time.Second, "Rectification", "of package "+pkg+" queued for ccu-north")
		if !testbed.WaitFor(context.Background(), 60*time.Second, func() bool {
			n := 0
			for _, files := range b.AllDelivered("ccu-north") {
				n += len(files)
			}
			return n > before
		}) {
			t.Errorf("the rectification never reached ccu-north")
		}
		s.open("/sent")
		if !strings.Contains(s.text("main"), pkg) {
			t.Errorf("the Sent page does not list %s", pkg)
		}
		cb.check(s, "sent")
	})

	t.Run("conduit send: manifest and attachment through the API", func(t *testing.T) {
		dir := t.TempDir()
		manifest := `from: northshire-pio
to: [hmp-northgate]
label: {classification: OFFICIAL-SENSITIVE, grading: 5x5x5, source: B, intelligence: 2, handling: 1,
        basis: assessment, subjects: [suspected], purpose: corruption-prison, sanitised: true,
        originator: northshire-pio, reference: CLI-0001}
subjects: [{role: governing-governor, establishment: hmp-northgate}, {role: staff, establishment: hmp-northgate, post: lccm}]
topic: corruption
body: body.txt
attachments: [notes.bin]
`
		os.WriteFile(filepath.Join(dir, "package.yaml"), []byte(manifest), 0o600)
		os.WriteFile(filepath.Join(dir, "body.txt"), []byte(e2eBody), 0o600)
		writeCanaryFile(t, filepath.Join(dir, "notes.bin"), "notes", 8<<20)
		cmd := exec.Command(conduitBin, "send", filepath.Join(dir, "package.yaml"), "--console", base, "--user", pio.User, "--ca", filepath.Join(b.Dir, "ca.crt"))
		cmd.Env = append(os.Environ(), "CONDUIT_PASSWORD="+pio.Password)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("conduit send: %v\n%s%s", err, stdout.String(), stderr.String())
		}
		if !regexp.MustCompile(`package cdt-[a-z2-7]{24} accepted`).MatchString(stdout.String()) || !strings.Contains(stdout.String(), "by governor-to-regional-ccu") {
			t.Errorf("conduit send printed:\n%s", stdout.String())
		}
		if !strings.Contains(stderr.String(), "notes.bin") || !strings.Contains(stderr.String(), "100%") {
			t.Errorf("no progress bar: %q", stderr.String())
		}
		// A wrong password is refused with the console's reason.
		cmd = exec.Command(conduitBin, "send", filepath.Join(dir, "package.yaml"), "--console", base, "--user", pio.User, "--ca", filepath.Join(b.Dir, "ca.crt"))
		cmd.Env = append(os.Environ(), "CONDUIT_PASSWORD=wrong")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "the name or the password is wrong") {
			t.Errorf("a wrong password: %v\n%s", err, out)
		}
	})

	t.Run("held by a rule, sent through the API, released and dropped by a supervisor", func(t *testing.T) {
		// A case-management system signs in with its own account and a
		// bearer token (no cookie, so no CSRF token either).
		c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		body, _ := json.Marshal(map[string]string{"name": pio.User, "password": pio.Password})
		resp, err := c.Post(base+"/api/v1/session", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var sess struct{ Token string }
		json.NewDecoder(resp.Body).Decode(&sess)
		resp.Body.Close()
		draft := `{"title": "Witness to conveyance", "to": ["hmp-northgate"], "topic": "crime-in-prison",
			"label": {"classification": "OFFICIAL-SENSITIVE", "grading": "5x5x5", "source": "B", "intelligence": "2", "handling": "1",
			"basis": "fact", "subjects": ["witness"], "purpose": "crime", "sanitised": true, "reference": "API-0001"},
			"subjects": [{"role": "prisoner", "establishment": "hmp-northgate", "id": "` + e2eSubjectID + `"}],
			"body": "` + e2eBody + `"}`
		req, _ := http.NewRequest("POST", base+"/api/v1/packages", strings.NewReader(draft))
		req.Header.Set("Authorization", "Bearer "+sess.Token)
		req.Header.Set("Content-Type", "application/json")
		resp, err = c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var sent struct {
			Package, Reply string
		}
		json.NewDecoder(resp.Body).Decode(&sent)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated || !strings.Contains(sent.Reply, "witness-review") {
			t.Fatalf("API send: %s %+v", resp.Status, sent)
		}
		// Another, released through the API by a supervisor's system.
		req, _ = http.NewRequest("POST", base+"/api/v1/packages", strings.NewReader(strings.Replace(draft, "API-0001", "API-0002", 1)))
		req.Header.Set("Authorization", "Bearer "+sess.Token)
		req.Header.Set("Content-Type", "application/json")
		resp, err = c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var second struct{ Package string }
		json.NewDecoder(resp.Body).Decode(&second)
		resp.Body.Close()
		items, err := b.Queue(context.Background(), "northshire-pio", store.Filter{PackageID: second.Package})
		if err != nil || len(items) != 1 || items[0].State != store.OnHold {
			t.Fatalf("the second package is not held: %+v %v", items, err)
		}
		sup, supCSRF := consoleAPIClient(t, base, pio.User+"-supervisor", pio.Password)
		if code := status(t, sup, "POST", fmt.Sprintf("%s/api/v1/held/%d/release", base, items[0].ID), map[string]string{"X-CSRF-Token": supCSRF, "Content-Type": "application/json"},
			strings.NewReader(`{"reason": "the witness is not identifiable"}`)); code != http.StatusOK {
			t.Fatalf("release through the API: %d", code)
		}
		if items, _ := b.Queue(context.Background(), "northshire-pio", store.Filter{PackageID: second.Package}); len(items) != 1 || items[0].State == store.OnHold {
			t.Errorf("the released item is still held: %+v", items)
		}
		s := cb.signIn("northshire-pio", pio.User+"-supervisor")
		s.t = t
		s.open("/held")
		s.waitText("main table", 5*time.Second, sent.Package, "witness-review")
		cb.check(s, "held")
		s.do(chromedp.SetValue(chromedp.CSS("main table input[name=reason]"), "the supervisor found the witness identifiable"),
			chromedp.Click(chromedp.CSS("main table button.danger")))
		s.waitText(".notice", 20*time.Second, "dropped")
		items, err = b.Queue(context.Background(), "northshire-pio", store.Filter{PackageID: sent.Package})
		if err != nil || len(items) != 1 || items[0].State != store.Dropped || !strings.Contains(items[0].Reason, "witness identifiable") {
			t.Errorf("the held item was not dropped with its reason: %+v %v", items, err)
		}
	})

	t.Run("received at the CCU, triage done", func(t *testing.T) {
		if pkg == "" {
			t.Skip("nothing was sent")
		}
		ccu := b.Nodes["ccu-north"]
		s := cb.signIn("ccu-north", ccu.User+"-receiver")
		s.t = t
		s.open("/received")
		s.waitText("main table", 5*time.Second, pkg, "OFFICIAL-SENSITIVE", "rcca@ccu-north.hmpps.example", "due")
		cb.check(s, "received")
		s.do(chromedp.Click(chromedp.Search(`//tr[td[1][normalize-space()="` + pkg + `"]]//button`)))
		s.waitText(".notice", 20*time.Second, "Triage of "+pkg+" recorded")
	})

	t.Run("100 MiB attachment with progress, held encrypted", func(t *testing.T) {
		canary := "CONDUIT-UPLOAD-CANARY-" + randHex(8)
		file := filepath.Join(t.TempDir(), "intercepts.bin")
		writeCanaryFile(t, file, canary, 100<<20)
		s := cb.signIn("northshire-pio", pio.User)
		s.t = t
		s.open("/compose")
		// Record every progress text the page announces.
		s.do(chromedp.Evaluate[chromedp.Void](`window.seen = []; new MutationObserver(() => window.seen.push(document.getElementById("upload-status").textContent)).observe(document.getElementById("upload-status"), {childList: true, characterData: true, subtree: true}); true`))
		s.do(chromedp.SetUploadFiles(chromedp.CSS("#attach"), []string{file}))
		s.waitText("#upload-status", 120*time.Second, "uploaded and held encrypted")
		seen, err := chromedp.Run(s.ctx, chromedp.Evaluate[[]string](`window.seen`))
		if err != nil {
			t.Fatal(err)
		}
		steps := map[string]bool{}
		for _, v := range seen {
			if m := regexp.MustCompile(`: (\d+)%$`).FindStringSubmatch(v); m != nil && m[1] != "0" && m[1] != "100" {
				steps[m[1]] = true
			}
		}
		if len(steps) < 2 {
			t.Errorf("the progress bar did not move: %q", seen)
		}
		t.Logf("progress seen at %d intermediate values", len(steps))
		if !strings.Contains(s.text("#uploads"), "intercepts.bin (104857600 bytes)") {
			t.Errorf("the upload is not listed: %s", s.text("#uploads"))
		}
		cb.check(s, "compose-upload")
		// Nothing of it in clear: not in any file of the bed, and not in
		// the gateway's open (unlinked) spool files, which hold it whole.
		filepath.Walk(b.Dir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() && fileContains(t, p, canary) {
				t.Errorf("the attachment is in clear in %s", p)
			}
			return nil
		})
		pid := b.Pid("northshire-pio")
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		var spooled int64
		for _, fd := range fds {
			p := fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())
			target, _ := os.Readlink(p)
			if !strings.Contains(target, "conduit-spool-") {
				continue
			}
			if fi, err := os.Stat(p); err == nil {
				spooled += fi.Size()
			}
			if fileContains(t, p, canary) {
				t.Errorf("the spool %s holds the attachment in clear", target)
			}
		}
		// The spool keeps its first MiB in memory (envelope's
		// spoolMemory) and the rest, encrypted, in its file.
		if spooled < 100<<20-1<<20 {
			t.Errorf("the gateway's spool files hold %d bytes, not the 100 MiB attachment (encrypted) past the spool's first MiB", spooled)
		}
	})

	t.Run("policy: type error, dry run, apply, audit, restore", func(t *testing.T) {
		s := cb.signIn("northshire-pio", pio.User+"-admin")
		s.t = t
		s.open("/admin/policy")
		cb.check(s, "policy")
		orig, err := chromedp.Run(s.ctx, chromedp.Value(chromedp.CSS("#source")))
		if err != nil {
			t.Fatal(err)
		}
		rule := func(when string) string {
			return strings.TrimRight(orig, "\n") + "\n\n  - id: corruption-to-pas\n    description: corruption packages also go to PAS\n    when: " + when + "\n    action: copy\n    to: [pas]\n    reason: the PAS reviews corruption disseminations this quarter\n"
		}
		bad := rule(`manifest.topic == 1`)
		line := strings.Count(bad[:strings.Index(bad, "manifest.topic == 1")], "\n") + 1
		s.do(chromedp.SetValue(chromedp.CSS("#source"), bad), chromedp.Click(chromedp.CSS(`button[value="check"]`)), chromedp.WaitVisible(chromedp.CSS("#source-error")))
		if got := s.text("#source-error"); !strings.Contains(got, fmt.Sprintf("Line %d", line)) {
			t.Errorf("the type error is not shown at line %d: %s", line, got)
		}
		cb.check(s, "policy-error")
		s.do(chromedp.SetValue(chromedp.CSS("#source"), rule(`manifest.topic == "corruption"`)), chromedp.Click(chromedp.CSS(`button[value="dry-run"]`)), chromedp.WaitVisible(chromedp.CSS("#dry-run")))
		dry := s.text("#dry-run")
		if pkg != "" && !strings.Contains(dry, "package "+pkg) {
			t.Errorf("the dry run does not list the package sent (%s):\n%s", pkg, dry)
		}
		if !strings.Contains(dry, "example governor-subject.yaml") || !strings.Contains(dry, "to pas pas@pas.hmpps.example by corruption-to-pas") {
			t.Errorf("the dry run does not show the copy to PAS:\n%s", dry)
		}
		cb.check(s, "policy-dry-run")
		s.do(chromedp.SetValue(chromedp.CSS("#reason"), "PAS review agreed at the regional meeting"), chromedp.Click(chromedp.CSS(`button[value="apply"]`)))
		s.waitText(".notice", 20*time.Second, "Policy applied")
		if !strings.Contains(s.text("main table"), "corruption-to-pas") {
			t.Fatalf("not applied: %s", s.text("main"))
		}
		s.open("/admin/audit?kind=policy-reload")
		if a := s.text("main table"); !strings.Contains(a, "PAS review agreed at the regional meeting") || !strings.Contains(a, pio.User+"-admin (console)") {
			t.Errorf("the audit trail does not record the change with its reason and actor:\n%s", a)
		}
		cb.check(s, "audit")
		s.open("/admin/policy")
		s.do(chromedp.SetValue(chromedp.CSS("#restore-reason"), "the review ended"), chromedp.Click(chromedp.CSS(`form[action="/admin/policy/restore"] button`)))
		s.waitText(".notice", 20*time.Second, "restored")
		if strings.Contains(s.text("main table"), "corruption-to-pas") {
			t.Errorf("the previous version was not restored: %s", s.text("main"))
		}
		if cur, _ := os.ReadFile(filepath.Join(b.Dir, "policy.yaml")); string(cur) != orig {
			t.Errorf("the restored policy file differs from the original")
		}
	})

	t.Run("partner keys: approve one, reject another", func(t *testing.T) {
		dir := t.TempDir()
		fps := map[string]string{}
		for _, agency := range []string{"hmp-eastmoor", "pas"} {
			id, err := keys.Generate(agency, "conduit@"+agency+".example", keys.ProfileRFC4880, time.Now().Add(-time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			f := filepath.Join(dir, agency+".asc")
			var buf bytes.Buffer
			if err := keys.WritePublic(&buf, id.Entity); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(f, buf.Bytes(), 0o644)
			out, err := exec.Command(conduitBin, "keys", "offer", f, "--config", pio.Config).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "pending") {
				t.Fatalf("keys offer: %v\n%s", err, out)
			}
			fps[agency] = id.Fingerprint()
		}
		s := cb.signIn("northshire-pio", pio.User+"-admin")
		s.t = t
		s.open("/admin/keys")
		cb.check(s, "keys")
		decide := func(agency, op, reason string) {
			row := fmt.Sprintf(`//tr[td[contains(., "(%s)")] and .//button]`, agency)
			s.do(chromedp.SetValue(chromedp.Search(row+`//input[@name="reason"]`), reason),
				chromedp.Click(chromedp.Search(row+`//button[@value="`+op+`"]`)))
			s.waitText(".notice", 20*time.Second, "of "+agency+" "+map[string]string{"approve": "approved", "reject": "rejected"}[op])
		}
		decide("hmp-eastmoor", "approve", "fingerprint read back by telephone to the Head of Security")
		decide("pas", "reject", "PAS did not issue this key")
		st, err := b.OpenStore(context.Background(), "northshire-pio")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		for agency, want := range map[string]store.KeyState{"hmp-eastmoor": store.KeyApproved, "pas": store.KeyRejected} {
			ks, err := st.ListPartnerKeys(context.Background(), agency, "")
			if err != nil || len(ks) == 0 || ks[0].State != want || ks[0].Fingerprint != keys.NormalizeFingerprint(fps[agency]) {
				t.Errorf("%s: key records %+v, want %s (%v)", agency, ks, want, err)
			} else if !strings.HasSuffix(ks[0].DecidedBy, "(console)") {
				t.Errorf("%s: decided by %q, not the console user", agency, ks[0].DecidedBy)
			}
		}
	})

	t.Run("other administrator pages", func(t *testing.T) {
		// A message that is no envelope, at the inbound port, from a
		// partner's gateway (its client certificate; a stranger's would
		// be refused and not kept): quarantined, and listed by headers
		// and reason.
		junk := "From: <conduit@ccu-north.example>\r\nTo: <pio@northshire-pio.example>\r\nSubject: not an envelope\r\n\r\n" + e2eBody + "\r\n"
		if _, err := b.InjectAs(context.Background(), "northshire-pio", "ccu-north", "conduit@ccu-north.example", []string{"pio@northshire-pio.example"}, []byte(junk)); err == nil || !strings.Contains(err.Error(), "quarantined") {
			t.Fatalf("a message that is no envelope was not quarantined: %v", err)
		}
		s := cb.signIn("northshire-pio", pio.User+"-admin")
		s.t = t
		for _, p := range []struct{ path, name, want string }{
			{"/admin/directory", "directory", "Local Counter Corruption Manager (lccm, senior-manager, oversight)"},
			{"/admin/queue", "queue", "rpiu-north-east"},
			{"/admin/quarantine", "quarantine", "conduit@ccu-north.example"},
			{"/admin/deadlines", "deadlines", ""},
			{"/admin/health", "health", "The gateway is ready"},
		} {
			s.open(p.path)
			if p.want != "" && !strings.Contains(s.text("main"), p.want) {
				t.Errorf("%s does not show %q:\n%s", p.path, p.want, s.text("main"))
			}
			cb.check(s, p.name)
		}
	})

	t.Run("roles, CSRF and the idle timeout", func(t *testing.T) {
		s := cb.signIn("northshire-pio", pio.User)
		s.t = t
		s.open("/admin/policy")
		if h := s.text("h1"); h != "Not for your role" {
			t.Errorf("a sender reached an administrator page: %q", h)
		}
		cb.check(s, "forbidden")
		c, csrf := consoleAPIClient(t, base, pio.User, pio.Password)
		for _, p := range []string{"/admin/policy", "/admin/keys", "/api/v1/policy", "/api/v1/keys", "/api/v1/audit", "/api/v1/held"} {
			if code := status(t, c, "GET", base+p, nil, nil); code != http.StatusForbidden {
				t.Errorf("a sender got %d from %s, want 403", code, p)
			}
		}
		if code := status(t, c, "POST", base+"/api/v1/policy/apply", map[string]string{"X-CSRF-Token": csrf, "Content-Type": "application/json"}, strings.NewReader(`{"source":"","reason":"x"}`)); code != http.StatusForbidden {
			t.Errorf("a sender applying a policy got %d, want 403", code)
		}
		if code := status(t, c, "GET", base+"/api/v1/packages", nil, nil); code != http.StatusOK {
			t.Errorf("a sender's own packages: %d", code)
		}
		// A form without its CSRF token is refused, in the browser and
		// from the API.
		s.open("/compose")
		s.do(chromedp.Evaluate[chromedp.Void](`document.querySelector('#compose input[name="csrf"]').remove(); document.querySelector('button[value="preview"]').click(); true`))
		s.waitText("h1", 10*time.Second, "Form refused")
		if code := status(t, c, "POST", base+"/api/v1/explain", map[string]string{"Content-Type": "application/json"}, strings.NewReader(`{}`)); code != http.StatusForbidden {
			t.Errorf("an API change without X-CSRF-Token got %d, want 403", code)
		}
		if code := status(t, c, "POST", base+"/api/v1/explain", map[string]string{"X-CSRF-Token": csrf, "Content-Type": "application/json"}, strings.NewReader(`{"to":["hmp-northgate"]}`)); code != http.StatusOK {
			t.Errorf("an API change with its token got %d", code)
		}
		// Past the idle time the session is over: the clock moves 16
		// minutes on (the default idle timeout is 15).
		if err := b.MoveClock("northshire-pio", 16*time.Minute); err != nil {
			t.Fatal(err)
		}
		defer b.MoveClock("northshire-pio", 0)
		s.do(chromedp.Navigate(base+"/sent"), chromedp.WaitVisible(chromedp.CSS("#name")))
		if !strings.Contains(s.location(), "/signin") || !strings.Contains(s.text("main"), "signed out after a period without activity") {
			t.Errorf("an idle session was not signed out: %s\n%s", s.location(), s.text("main"))
		}
		if code := status(t, c, "GET", base+"/api/v1/packages", nil, nil); code != http.StatusUnauthorized {
			t.Errorf("an idle API session got %d, want 401", code)
		}
	})
	if t.Failed() {
		t.Logf("log of northshire-pio:\n%s", b.Tail("northshire-pio", 30))
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// writeCanaryFile writes size bytes of random data with the canary every
// 64 KiB.
func writeCanaryFile(t *testing.T, path, canary string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 64<<10)
	for written := int64(0); written < size; written += int64(len(block)) {
		rand.Read(block)
		copy(block, canary)
		if _, err := f.Write(block); err != nil {
			t.Fatal(err)
		}
	}
}

// fileContains reads a file in pieces, looking for s.
func fileContains(t *testing.T, path, s string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	buf := make([]byte, 1<<20+len(s))
	carry := 0
	for {
		n, err := f.Read(buf[carry:])
		if bytes.Contains(buf[:carry+n], []byte(s)) {
			return true
		}
		if err != nil {
			return false
		}
		if carry+n >= len(s) {
			copy(buf, buf[carry+n-len(s):carry+n])
			carry = len(s)
		}
	}
}
