package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// runCLI executes a freshly built CLI in process and returns its output.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

const exampleConfig = "../../examples/conduit.yaml"

// at pins the decision time: the example directory's training records
// are judged as at this time.
const at = "2026-11-23T12:00:00Z"

func TestPolicyCheckPassesOnTheExample(t *testing.T) {
	out, err := runCLI(t, "policy", "check", "--config", exampleConfig)
	if err != nil {
		t.Fatalf("policy check on examples/: %v\n%s", err, out)
	}
	for _, want := range []string{"OK", "22 agencies", "governor-to-regional-ccu", "002_7fa272ff2a5b7e4b.txt", "000_8d469ee3e549c8f4.txt",
		"pecs-corruption-to-ncca", "examples/policy.yaml:", "conduit config show --config"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

func TestPolicyCheckReportsTheLine(t *testing.T) {
	dir := t.TempDir()
	abs, _ := filepath.Abs("../../examples/directory.yaml")
	cfg := filepath.Join(dir, "conduit.yaml")
	os.WriteFile(cfg, []byte("agency: northshire-pio\ndirectory: "+abs+"\npolicy: policy.yaml\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte("rules:\n  - id: x\n    action: deny\n    when: label.purpose == crime\n"), 0o600)
	_, err := runCLI(t, "policy", "check", "--config", cfg)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), "policy.yaml:4") || !strings.Contains(err.Error(), "undeclared reference to 'crime'") {
		t.Errorf("check of a broken policy: %v", err)
	}
}

// TestExplainEveryExamplePackage runs explain on each example package and
// checks the decision each one documents, so the examples cannot drift
// from the policy.
func TestExplainEveryExamplePackage(t *testing.T) {
	want := map[string]struct {
		decision, rule, effect string
		extra                  []string
	}{
		"retention":                        {"deliver", "retention", "deadline", nil},
		"label-required":                   {"deny", "label-required", "deny", nil},
		"purpose-approved":                 {"deny", "purpose-approved", "refuse", nil},
		"classification-ceiling":           {"deny", "classification-ceiling", "alert", nil},
		"classification-ceiling-route":     {"deliver", "classification-ceiling", "refuse", nil},
		"uk-eea-only":                      {"deny", "uk-eea-only", "refuse", nil},
		"handling-code-4":                  {"deliver", "handling-code", "refuse", nil},
		"handling-code-5":                  {"hold", "handling-code", "hold", nil},
		"handling-code-3":                  {"deny", "handling-code", "deny", nil},
		"handling-code-2-no-authorisation": {"deny", "handling-code", "deny", nil},
		"handling-code-2":                  {"deliver", "handling-code", "record", nil},
		"handling-c-no-conditions":         {"deny", "handling-code", "deny", nil},
		"unsanitised":                      {"deny", "sanitised-to-disseminate", "refuse", nil},
		"police-to-prison-via-pio":         {"deliver", "police-to-prison-via-pio", "redirect", []string{"--as", "northshire-police"}},
		"prison-without-pio":               {"deliver", "police-to-prison-via-pio", "redirect", []string{"--as", "northshire-police"}},
		"governor-subject":                 {"deliver", "governor-to-regional-ccu", "redirect", nil},
		"governor-other-prison":            {"deliver", "corruption-to-rpiu", "copy", nil},
		"hq-to-ncca":                       {"deliver", "hq-to-ncca", "redirect", nil},
		"probation-via-ccu":                {"deliver", "probation-via-ccu", "redirect", nil},
		"pecs-security-manager":            {"deliver", "pecs-security-manager", "mailbox", nil},
		"pecs-prison-process":              {"deliver", "pecs-security-manager", "redirect", nil},
		"cat-a-via-pas":                    {"deliver", "cat-a-via-pas", "redirect", nil},
		"imminent-risk-escalation":         {"deliver", "imminent-risk-escalation", "escalate", nil},
		"escape-firearms-governor-subject": {"deliver", "governor-to-regional-ccu", "overridden", nil},
		"high-risk-seniority":              {"deliver", "high-risk-seniority", "copy", nil},
		"triage-72h":                       {"deliver", "triage-72h", "deadline", []string{"--inbound", "--as", "hmp-northgate"}},
		"trained-recipients":               {"hold", "trained-recipients", "hold", nil},
		"no-onward-disclosure":             {"hold", "no-onward-disclosure", "hold", nil},
		"unknown-recipient":                {"deliver", "known-recipient", "refuse", nil},
		"legacy-restricted":                {"deliver", "legacy-marking", "record", nil},
		"legacy-protect":                   {"deliver", "legacy-marking", "record", nil},
		"handling-code-5-referral":         {"deliver", "handling-code", "record", nil},
		"lccm-subject":                     {"deliver", "governor-to-regional-ccu", "redirect", nil},
		"officer-subject":                  {"deliver", "police-to-prison-via-pio", "redirect", []string{"--as", "northshire-police"}},
	}
	// Packages explained under another example config than conduit.yaml.
	configs := map[string]string{"legacy-protect": "../../examples/conduit-legacy.yaml"}
	files, err := filepath.Glob("../../examples/packages/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example packages: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			w, ok := want[name]
			if !ok {
				t.Fatalf("example %s has no expectation here; add one", name)
			}
			cfg := exampleConfig
			if c, ok := configs[name]; ok {
				cfg = c
			}
			args := append([]string{"policy", "explain", "--config", cfg, "--at", at, "--json", f}, w.extra...)
			out, err := runCLI(t, args...)
			if err != nil {
				t.Fatalf("explain: %v\n%s", err, out)
			}
			var d struct {
				Decision string `json:"decision"`
				Trace    []struct{ Rule, Effect, Source string }
			}
			if err := json.Unmarshal([]byte(out), &d); err != nil {
				t.Fatalf("explain --json is not JSON: %v\n%s", err, out)
			}
			if d.Decision != w.decision {
				t.Errorf("decision %s, want %s:\n%s", d.Decision, w.decision, out)
			}
			found := false
			for _, s := range d.Trace {
				found = found || (s.Rule == w.rule && s.Effect == w.effect && s.Source != "")
			}
			if !found {
				t.Errorf("trace has no %s %s:\n%s", w.rule, w.effect, out)
			}
		})
	}
	for name := range want {
		if _, err := os.Stat("../../examples/packages/" + name + ".yaml"); err != nil {
			t.Errorf("expected example %s is missing", name)
		}
	}
}

func TestExplainReadsWellToAnAdministrator(t *testing.T) {
	out, err := runCLI(t, "policy", "explain", "--config", exampleConfig, "--at", at, "../../examples/packages/escape-firearms-governor-subject.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Decision: DELIVER",
		"ccu-north", "immediate",
		"hmp-northgate → ccu-north: the governing governor of hmp-northgate is a subject",
		"source: 002_7fa272ff2a5b7e4b.txt, HMPPS/NPCC MoU 2019, 6.1 police responsibilities, bullet 5",
		"no copy to the governing governor of hmp-northgate",
		"acknowledge within 1 hour",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("explain output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "governor@northgate") {
		t.Errorf("the governor who is a subject is sent a copy:\n%s", out)
	}
}

// The administrator's legacy-marking table is the one explain reads with:
// RESTRICTED, absent from it, is refused with an error naming it; PROTECT
// is read as the table says, and the trace cites the config line.
func TestExplainUsesTheConfiguredLegacyTable(t *testing.T) {
	const legacyConfig = "../../examples/conduit-legacy.yaml"
	_, err := runCLI(t, "policy", "explain", "--config", legacyConfig, "--at", at, "../../examples/packages/legacy-restricted.yaml")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), `"RESTRICTED"`) || !strings.Contains(err.Error(), "legacy marking") {
		t.Errorf("RESTRICTED under a table without it: %v", err)
	}
	out, err := runCLI(t, "policy", "explain", "--config", legacyConfig, "--at", at, "../../examples/packages/legacy-protect.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if want := "marked PROTECT, read as OFFICIAL-SENSITIVE by the legacy-marking table (legacy-markings in ../../examples/conduit-legacy.yaml, line 9)"; !strings.Contains(out, want) {
		t.Errorf("explain lacks %q:\n%s", want, out)
	}
	// The built-in table, when it maps, says so too.
	out, err = runCLI(t, "policy", "explain", "--config", exampleConfig, "--at", at, "../../examples/packages/legacy-restricted.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if want := "marked RESTRICTED, read as OFFICIAL-SENSITIVE by the legacy-marking table (built-in legacy-marking table"; !strings.Contains(out, want) {
		t.Errorf("explain lacks %q:\n%s", want, out)
	}
}

func TestExplainRejectsABadPackage(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.yaml")
	os.WriteFile(p, []byte("from: northshire-pio\nto: [hmp-northgate]\nlabel: {classification: OFFICIAL}\nrisk: [meteor]\n"), 0o600)
	_, err := runCLI(t, "policy", "explain", "--config", exampleConfig, p)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), "meteor") {
		t.Errorf("explain of a bad package: %v", err)
	}
}

func TestPolicyReloadSignalsTheGateway(t *testing.T) {
	dir := t.TempDir()
	abs, _ := filepath.Abs("../../examples/directory.yaml")
	pol, _ := filepath.Abs("../../examples/policy.yaml")
	cfg := filepath.Join(dir, "conduit.yaml")
	pid := filepath.Join(dir, "conduit.pid")
	os.WriteFile(cfg, []byte("agency: northshire-pio\ndirectory: "+abs+"\npolicy: "+pol+"\npid-file: conduit.pid\n"), 0o600)
	os.WriteFile(pid, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)

	// This test process plays the running gateway.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	out, err := runCLI(t, "policy", "reload", "--config", cfg)
	if err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	select {
	case <-hup:
	case <-t.Context().Done():
		t.Fatal("no SIGHUP")
	}

	// A broken policy is not signalled.
	broken := filepath.Join(dir, "broken.yaml")
	os.WriteFile(broken, []byte("rules:\n  - id: x\n    when: '1'\n    action: deny\n"), 0o600)
	os.WriteFile(cfg, []byte("agency: northshire-pio\ndirectory: "+abs+"\npolicy: broken.yaml\npid-file: conduit.pid\n"), 0o600)
	_, err = runCLI(t, "policy", "reload", "--config", cfg)
	if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "true/false") {
		t.Errorf("reload of a broken policy: %v", err)
	}
	select {
	case <-hup:
		t.Errorf("a broken policy was signalled")
	default:
	}
}
