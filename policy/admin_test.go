package policy

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
)

func adminPolicy(t *testing.T, self string) *Policy {
	t.Helper()
	src, err := os.ReadFile("testdata/admin.yaml")
	tcheck(t, err, "read admin policy")
	p, err := compilePolicy(t, self, string(src))
	tcheck(t, err, "compile admin policy")
	return p
}

func TestAdminRulesFromPolicyFile(t *testing.T) {
	p := adminPolicy(t, "northshire-police")
	if n := len(p.AdminRules()); n != 11 {
		t.Fatalf("%d administrator rules, want 11", n)
	}
	if src := p.ruleByID("witness-review").Source(); !strings.Contains(src, "policy.yaml:") {
		t.Errorf("admin rule source %q does not name its file and line", src)
	}

	t.Run("deny to one destination", func(t *testing.T) {
		m := pkg("northshire-police", "pecs-northway", "northshire-pio")
		m.Label.Classification = envelope.Official
		m.Label.Grading.Source = "E"
		m.Subjects = []envelope.Subject{{Role: "pecs-staff", Establishment: "pecs-northway"}}
		d := decide(p, m)
		wantRefusal(t, d, "pecs-northway", "deny-untested-to-pecs", "untested-source")
		wantDelivery(t, d, "northshire-pio", "pio@northshire-pio.example", Normal, "addressed")
	})
	t.Run("deny the package", func(t *testing.T) {
		m := pkg("northshire-police", "northshire-pio")
		m.Topic = "per"
		d := decide(p, m)
		wantOutcome(t, d, Deny)
		wantRefusal(t, d, "northshire-pio", "deny-assessment-per", "facts only")
	})
	t.Run("require", func(t *testing.T) {
		m := pkg("northshire-police", "northshire-pio")
		m.Label.Descriptor = "PERSONAL"
		d := decide(p, m)
		wantOutcome(t, d, Deny)
		wantRefusal(t, d, "northshire-pio", "personal-needs-sanitiser", "requirement not met")
		m.Label.SanitisedBy = "analyst-7"
		d = decide(p, m)
		wantOutcome(t, d, Deliver)
		wantTrace(t, d, "personal-needs-sanitiser", EffectRecord, "requirement met")
	})
	t.Run("hold", func(t *testing.T) {
		m := pkg("northshire-police", "northshire-pio")
		m.Label.Subjects = []envelope.DataSubject{"witness"}
		d := decide(p, m)
		wantHold(t, d, "northshire-pio", "witness-review")
	})
	t.Run("deliver, then the built-in redirection still applies", func(t *testing.T) {
		d := decide(p, pkg("northshire-police", "hmp-fellside"))
		wantDelivery(t, d, "rpiu-north-east", "rpiu@rpiu-north-east.example", Normal, "fellside-also-rpiu")
		wantDelivery(t, d, "northshire-fib", "fib@northshire-fib.example", Normal, "police-to-prison-via-pio")
	})
	t.Run("redirect with a multi-line condition", func(t *testing.T) {
		d := decide(p, pkg("northshire-police", "hmpps-hq"))
		wantDelivery(t, d, "ccu-national", "ncca@ccu.hmpps.example", Normal, "hq-via-ncca")
		wantNoDelivery(t, d, "hmpps-hq")
	})
	t.Run("copy to a mailbox function", func(t *testing.T) {
		q := adminPolicy(t, "hmp-northgate")
		m := pkg("hmp-northgate", "ccu-north")
		m.Subjects = []envelope.Subject{{Role: "prisoner", Flags: []string{"terrorism"}}}
		d := decide(q, m)
		wantDelivery(t, d, "ccu-national", "ncca@ccu.hmpps.example", Normal, "copy-ncca-terrorism")
		// From the police the same copy would bypass PAS, the
		// gatekeeper: the built-in rule overrides it.
		m = pkg("northshire-police", "pas")
		m.Subjects = []envelope.Subject{{Role: "prisoner", Flags: []string{"terrorism"}}}
		d = decide(p, m)
		wantNoDelivery(t, d, "ccu-national")
		wantTrace(t, d, "cat-a-via-pas", EffectOverridden, "copy-ncca-terrorism")
	})
	t.Run("a copy a built-in redirection forbids is overridden", func(t *testing.T) {
		q := adminPolicy(t, "northshire-pio")
		m := pkg("northshire-pio", "hmp-northgate")
		m.Subjects = []envelope.Subject{{Role: "governing-governor", Establishment: "hmp-northgate"}}
		d := decide(q, m)
		wantNoDelivery(t, d, "hmp-northgate")
		wantTrace(t, d, "copy-northgate-governor", EffectCopy, "hmp-northgate")
		wantTrace(t, d, "governor-to-regional-ccu", EffectOverridden, "copy-northgate-governor")
	})
	t.Run("escalate", func(t *testing.T) {
		m := pkg("northshire-police", "northshire-pio")
		m.Topic = "per"
		m.Label.Basis = envelope.BasisFact
		m.Risk = []string{"high-profile"}
		d := decide(p, m)
		wantDelivery(t, d, "northshire-pio", "pio@northshire-pio.example", Immediate, "addressed")
		wantDelivery(t, d, "northshire-pio", "pio-duty@northshire-pio.example", Immediate, "escalate-high-profile-per")
		if h, _ := d.Deadline(DeadlineAcknowledge); h != 4 {
			t.Errorf("acknowledge %d hours, want 4", h)
		}
	})
	t.Run("an administrator delivery is still refused outside the UK/EEA", func(t *testing.T) {
		m := pkg("northshire-police", "northshire-pio")
		m.Label.Purpose = "crime"
		d := decide(p, m)
		wantTrace(t, d, "deliver-abroad", EffectDeliver, "lakeland-sheriff")
		wantRefusal(t, d, "lakeland-sheriff", "uk-eea-only", "outside the UK/EEA")
	})
	t.Run("inbound hold", func(t *testing.T) {
		q := adminPolicy(t, "hmp-northgate")
		d := q.DecideInbound(context.Background(), pkg("northshire-pio", "hmp-northgate"), "northshire-pio")
		wantHold(t, d, "hmp-northgate", "inbound-hold-unsanitised-by")
		// Outbound rules do not apply to received packages.
		for _, s := range d.Trace {
			if s.Rule == "copy-northgate-governor" {
				t.Errorf("outbound rule applied inbound")
			}
		}
	})
}

func TestAdminRuleRuntimeErrorHoldsThePackage(t *testing.T) {
	p, err := compilePolicy(t, "northshire-police", `rules:
  - id: third-addressee
    when: manifest.to[2] == "pas"
    action: deny
`)
	tcheck(t, err, "compile")
	d := decide(p, pkg("northshire-police", "northshire-pio"))
	wantHold(t, d, "northshire-pio", "third-addressee")
}

func TestAdminRuleErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		line      int
		want      string
	}{
		{"typo in a field", `rules:
  - id: typo
    when: label.clasification == "SECRET"
    action: deny
`, 3, "undeclared reference"},
		{"typo on the second line of a block", `# comment
rules:
  - id: typo
    action: deny
    when: |
      label.purpose == "crime" &&
      manifest.topik == "per"
`, 7, "undeclared reference"},
		{"type error", `rules:
  - id: wrong-type
    when: label.rank == "SECRET"
    action: deny
`, 3, "no matching overload"},
		{"not a condition", `rules:
  - id: not-bool
    when: label.purpose
    action: deny
`, 3, "true/false condition"},
		{"unknown action", `rules:
  - id: bad-action
    when: "true"
    action: forward
`, 4, "not an action"},
		{"unknown agency", `rules:
  - id: to-nowhere
    when: "true"
    action: copy
    to: [hmp-nowhere]
`, 5, "not an agency in the directory"},
		{"unknown field", `rules:
  - id: extra
    when: "true"
    action: deny
    priority: high
`, 5, "unknown field"},
		{"duplicate id", `rules:
  - id: same
    when: "true"
    action: deny
  - id: same
    when: "false"
    action: deny
`, 5, "duplicate rule id"},
		{"built-in id taken", `rules:
  - id: retention
    when: "true"
    action: deny
`, 2, "duplicate rule id"},
		{"widening the ceiling", `parameters:
  classification-ceiling:
    max: SECRET
`, 3, "above what secure email may carry"},
		{"widening the purposes", `parameters:
  purpose-approved:
    hmpps-to-police: [crime, risk-management]
`, 3, "not an approved purpose"},
		{"dropping a required escalation risk", `parameters:
  imminent-risk-escalation:
    risks: [escape]
`, 3, "must keep"},
		{"an escalation contact not in the directory", `parameters:
  imminent-risk-escalation:
    contacts: {hmp-northgate: [someone@example.org]}
`, 3, "not a mailbox or escalation contact"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compilePolicy(t, "northshire-pio", tc.src)
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T), want *config.Error", err, err)
			}
			if ce.Line != tc.line || !strings.Contains(ce.Error(), tc.want) || ce.File != "policy.yaml" {
				t.Errorf("error at %s:%d %q; want line %d saying %q", ce.File, ce.Line, ce.Error(), tc.line, tc.want)
			}
		})
	}
}

var quietLog = slog.New(slog.DiscardHandler)

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	tcheck(t, os.WriteFile(path, []byte(s), 0o600), "write "+path)
}

// gatewayConfig writes a config using the example directory and the
// given policy, returning the config path and the policy path.
func gatewayConfig(t *testing.T, policySrc string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	abs, err := filepath.Abs("../examples/directory.yaml")
	tcheck(t, err, "abs")
	cfg := filepath.Join(dir, "conduit.yaml")
	pol := filepath.Join(dir, "policy.yaml")
	writeFile(t, cfg, "agency: northshire-pio\ndirectory: "+abs+"\npolicy: policy.yaml\n")
	writeFile(t, pol, policySrc)
	return cfg, pol
}

func TestReloadRefusesInvalidPolicyAndKeepsTheOld(t *testing.T) {
	cfg, pol := gatewayConfig(t, `rules:
  - id: deny-per
    when: manifest.topic == "per"
    action: deny
`)
	p, _, err := Load(cfg)
	tcheck(t, err, "load")
	e := NewEngine(p.At(testNow), quietLog)
	m := pkg("northshire-pio", "hmp-northgate")
	m.Topic = "per"
	wantOutcome(t, e.Decide(context.Background(), m, Sender{Agency: "northshire-pio"}), Deny)

	writeFile(t, pol, "rules:\n  - id: deny-per\n    when: manifest.topic = \"per\"\n    action: deny\n")
	err = e.ReloadConfig(cfg)
	if !errors.Is(err, ErrReloadRefused) {
		t.Fatalf("reload of a broken policy: %v, want ErrReloadRefused", err)
	}
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Line != 3 {
		t.Errorf("refusal does not name line 3: %v", err)
	}
	if len(e.Policy().AdminRules()) != 1 {
		t.Errorf("the policy in force changed")
	}
	wantOutcome(t, e.Decide(context.Background(), m, Sender{Agency: "northshire-pio"}), Deny)

	writeFile(t, pol, "# no administrator rules\n")
	tcheck(t, e.ReloadConfig(cfg), "reload a valid policy")
	if n := len(e.Policy().AdminRules()); n != 0 {
		t.Errorf("%d admin rules after reload, want 0", n)
	}
}

func TestReloadOnSIGHUP(t *testing.T) {
	cfg, pol := gatewayConfig(t, "# built-in rules only\n")
	p, _, err := Load(cfg)
	tcheck(t, err, "load")
	e := NewEngine(p, quietLog)
	results := make(chan error, 1)
	e.OnReload = func(err error) { results <- err }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.WatchSIGHUP(ctx, cfg)

	writeFile(t, pol, "rules:\n  - id: bad\n    when: nope\n    action: deny\n")
	err = signalUntilReload(t, results)
	if !errors.Is(err, ErrReloadRefused) {
		t.Fatalf("SIGHUP reload of a broken policy: %v", err)
	}
	if len(e.Policy().AdminRules()) != 0 {
		t.Errorf("broken policy put in force")
	}
	writeFile(t, pol, "rules:\n  - id: good\n    when: manifest.topic == \"per\"\n    action: deny\n")
	tcheck(t, signalUntilReload(t, results), "SIGHUP reload")
	if len(e.Policy().AdminRules()) != 1 {
		t.Errorf("valid policy not in force after SIGHUP")
	}
}

// signalUntilReload sends SIGHUP to this process (the handler is
// installed, so it does not terminate) and waits for the reload result.
func signalUntilReload(t *testing.T, results chan error) error {
	t.Helper()
	tcheck(t, syscall.Kill(os.Getpid(), syscall.SIGHUP), "send SIGHUP")
	select {
	case err := <-results:
		return err
	case <-t.Context().Done():
		t.Fatal("no reload")
		return nil
	}
}

// TestEveryConditionVariableResolves: each declared variable has a value
// at decision time (a declared but unresolved name would fail every
// package whose rule reads it).
func TestEveryConditionVariableResolves(t *testing.T) {
	for _, v := range celVars {
		src := "rules:\n  - id: uses-var\n    when: type(" + v + ") != type(null)\n    action: hold\n"
		p, err := compilePolicy(t, "northshire-pio", src)
		tcheck(t, err, v)
		d := decide(p, pkg("northshire-pio", "hmp-northgate"))
		for _, s := range d.Trace {
			if s.Rule == "uses-var" && strings.Contains(s.Detail, "could not be evaluated") {
				t.Errorf("%s: %s", v, s.Detail)
			}
		}
		wantHold(t, d, "hmp-northgate", "uses-var")
	}
}

func TestCostlyConditionIsRefusedAtLoad(t *testing.T) {
	_, err := compilePolicy(t, "northshire-pio", `rules:
  - id: costly
    when: manifest.to.all(a, manifest.to.all(b, manifest.to.all(c, manifest.risk.all(d, a + b + c + d != ""))))
    action: deny
`)
	if err == nil || !strings.Contains(err.Error(), "too costly") {
		t.Errorf("costly condition: %v", err)
	}
}

// TestLongListsAreEvaluatedWithACostLimit: beyond the sizes the static
// estimate assumed, conditions run with runtime cost tracking, and still
// decide.
func TestLongListsAreEvaluatedWithACostLimit(t *testing.T) {
	p, err := compilePolicy(t, "northshire-pio", `rules:
  - id: many-addressees
    when: manifest.to.exists(a, directory.kind(a) == "pas")
    action: hold
`)
	tcheck(t, err, "compile")
	m := pkg("northshire-pio", "hmp-northgate")
	for i := 0; i < maxListLen+10; i++ {
		m.To = append(m.To, "hmp-northgate")
	}
	m.To = append(m.To, "pas")
	d := decide(p, m)
	wantHold(t, d, "pas", "many-addressees")
}

// TestReloadWhileDeciding: decisions in flight finish with the policy they
// started with; run with -race.
func TestReloadWhileDeciding(t *testing.T) {
	cfg, pol := gatewayConfig(t, "# built-in rules only\n")
	p, _, err := Load(cfg)
	tcheck(t, err, "load")
	e := NewEngine(p, quietLog)
	writeFile(t, pol, "rules:\n  - id: deny-per\n    when: manifest.topic == \"per\"\n    action: deny\n")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 20; i++ {
			if err := e.ReloadConfig(cfg); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	m := pkg("northshire-pio", "hmp-northgate")
	for i := 0; i < 200; i++ {
		if d := e.Decide(context.Background(), m, Sender{Agency: "northshire-pio"}); d.Decision == "" {
			t.Fatal("no decision")
		}
	}
	<-done
}
