package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/policy"
	"github.com/spf13/cobra"
)

// newPolicyCmd builds `conduit policy`.
func newPolicyCmd() *cobra.Command {
	policyCmd := &cobra.Command{
		Use:   "policy",
		Short: "Check, explain and reload the sharing policy",
	}
	var configPath string
	policyCmd.PersistentFlags().StringVar(&configPath, "config", "", "the gateway's config file (required)")
	_ = policyCmd.MarkPersistentFlagRequired("config")

	check := &cobra.Command{
		Use:   "check",
		Short: "Validate the config, the agency directory and the policy file",
		Long: `Check loads the gateway's config file, its agency directory and its policy
file, type-checks every administrator rule, and lists the rules in force with
their citations. Any error names the file, line and field. The gateway's
other settings, every default filled in, are what conduit config show prints.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, cfg, err := policy.Load(configPath)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			printCheck(cmd.OutOrStdout(), p, cfg)
			return nil
		},
	}

	var asJSON, inbound bool
	var as, at, consent string
	explain := &cobra.Command{
		Use:   "explain PACKAGE.yaml",
		Short: "Show where a package would go, and why, without sending it",
		Long: `Explain decides a package (the YAML manifest of the envelope) under the policy
in force and prints the decision: the deliveries, refusals, holds and
deadlines, and the trace of every rule that matched with its citation.
Nothing is sent. The sender is the package's "from" agency.

--inbound decides the package as this gateway would on receiving it from its
"from" agency. --as decides as the gateway of another agency in the directory.
--json prints the stable JSON contract described in docs/policy.md.`,
		Example: `  conduit policy explain --config examples/conduit.yaml examples/packages/governor-subject.yaml
  conduit policy explain --config examples/conduit.yaml --inbound --as hmp-northgate examples/packages/triage-72h.yaml --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, cfg, err := policy.Load(configPath)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if as != "" {
				if p, err = p.As(as); err != nil {
					return &exitError{code: 2, err: err}
				}
			}
			if at != "" {
				t, err := time.Parse(time.RFC3339, at)
				if err != nil {
					return &exitError{code: 2, err: fmt.Errorf("--at: %q is not an RFC 3339 time", at)}
				}
				p = p.At(t)
			}
			f, err := os.Open(args[0])
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			// The configured legacy-marking table, as the gateway reads it.
			m, err := envelope.ParseManifestWith(f, cfg.Legacy())
			f.Close()
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("%s: %w", args[0], err)}
			}
			decidedAs := as
			if !inbound && as == "" && m.From != cfg.Agency {
				// A gateway sends for its own agency only; explain the
				// package as its sender's gateway would decide it.
				if p, err = p.As(m.From); err != nil {
					return &exitError{code: 2, err: fmt.Errorf("%s: from: %w", args[0], err)}
				}
				decidedAs = m.From
			}
			var d policy.Decision
			ctx := context.Background()
			if inbound {
				d = p.DecideInbound(ctx, m, m.From)
			} else {
				d = p.Decide(ctx, m, policy.Sender{Agency: m.From, OriginatorConsent: consent})
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(d)
			}
			if decidedAs != "" && decidedAs != cfg.Agency {
				fmt.Fprintf(out, "(decided as the gateway of %s would; this config is %s's)\n\n", decidedAs, cfg.Agency)
			}
			printDecision(out, p, m, &d, inbound)
			return nil
		},
	}
	explain.Flags().BoolVar(&asJSON, "json", false, "print the decision as JSON")
	explain.Flags().BoolVar(&inbound, "inbound", false, "decide as this gateway receiving the package")
	explain.Flags().StringVar(&as, "as", "", "decide as the gateway of this `agency`")
	explain.Flags().StringVar(&at, "at", "", "decide as at this RFC 3339 `time` (training records are judged then)")
	explain.Flags().StringVar(&consent, "consent", "", "the originator's consent `reference` for passing on a received package")

	reload := &cobra.Command{
		Use:   "reload",
		Short: "Validate the config, directory and policy and tell the running gateway to reload them",
		Long: `Reload checks the config, directory and policy file exactly as the gateway
will, and if they are valid and the config names a pid-file, sends SIGHUP to
the running gateway, which reloads all three together (and its own key). An
invalid change is never signalled; the gateway would refuse it anyway,
keep what is in force, and log and audit why. Listen addresses, the store,
the key backend and the agency change only with a restart: the gateway
refuses a reload that changes them, naming them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, cfg, err := policy.Load(configPath)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("%w: %w", policy.ErrReloadRefused, err)}
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "policy valid: %d built-in rules, %d administrator rules\n", len(p.Rules())-len(p.AdminRules()), len(p.AdminRules()))
			if cfg.PIDFile == "" {
				fmt.Fprintln(out, "no pid-file in the config: no running gateway signalled")
				return nil
			}
			pid, err := readPID(cfg.PIDFile)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
				return &exitError{code: 1, err: fmt.Errorf("signal gateway (pid %d from %s): %w", pid, cfg.PIDFile, err)}
			}
			fmt.Fprintf(out, "sent SIGHUP to the gateway (pid %d): it reloads the config, the directory and the policy together, or refuses the change and says why in its log\n", pid)
			return nil
		},
	}
	policyCmd.AddCommand(check, explain, reload)
	return policyCmd
}

func readPID(path string) (int, error) {
	b, err := config.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("pid-file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("pid-file %s: does not hold a process id", path)
	}
	return pid, nil
}

func printCheck(w io.Writer, p *policy.Policy, cfg *config.Config) {
	fmt.Fprintf(w, "config %s: OK\n", cfg.File)
	fmt.Fprintf(w, "  this gateway: %s (%s, %s)\n", cfg.Self().ID, cfg.Self().Name, cfg.Self().Kind)
	fmt.Fprintf(w, "  directory %s: %d agencies\n", cfg.DirectoryFile, len(cfg.Directory.Agencies))
	fmt.Fprintf(w, "  policy %s: %d administrator rules\n", cfg.Policy, len(p.AdminRules()))
	fmt.Fprintf(w, "  settings in force, every default filled in: conduit config show --config %s\n\n", cfg.File)
	fmt.Fprintln(w, "Rules in force, in order of precedence within each phase:")
	for _, r := range p.Rules() {
		sum := ""
		if d, ok := r.(policy.Described); ok {
			sum = d.Summary()
		}
		fmt.Fprintf(w, "  %-26s %s\n  %-26s   source: %s\n", r.ID(), sum, "", r.Source())
	}
	for _, warn := range partnerCertWarnings(cfg) {
		fmt.Fprintln(w, "warning: "+warn)
	}
}

// partnerCertWarnings looks at the partner certificate folder as the
// gateway will: a file it cannot use, or one whose user ID names another
// agency than the one whose pinned fingerprint it carries. Warnings only:
// the pin binds a key to its agency, and the gateway holds what is for a
// partner whose certificate cannot be used.
func partnerCertWarnings(cfg *config.Config) []string {
	if cfg.Keys.Partners == "" {
		return nil
	}
	var out []string
	for _, a := range cfg.Directory.Agencies {
		if a.ID == cfg.Agency {
			continue
		}
		path := filepath.Join(cfg.Keys.Partners, a.ID+".pub.asc")
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v; packages for %s will be held", path, err, a.ID))
			continue
		}
		c, err := keys.ReadCert(f)
		f.Close()
		switch {
		case err != nil:
			out = append(out, fmt.Sprintf("%s: %v; packages for %s will be held", path, err, a.ID))
		case c.Fingerprint() != keys.NormalizeFingerprint(a.Fingerprint):
			out = append(out, fmt.Sprintf("%s: fingerprint %s is not the one the directory pins for %s; it will wait for an administrator (conduit keys pending)", path, c.Fingerprint(), a.ID))
		default:
			if w := c.NameWarning(a.ID); w != "" {
				out = append(out, path+": "+w)
			}
		}
	}
	return out
}

func printDecision(w io.Writer, p *policy.Policy, m *envelope.Manifest, d *policy.Decision, inbound bool) {
	dir := "sent by " + m.From + " to " + strings.Join(m.To, ", ")
	if inbound {
		dir = "received by " + p.Self.ID + " from " + m.From
	}
	ref := m.Label.Reference
	if ref == "" {
		ref = "(no reference)"
	}
	fmt.Fprintf(w, "Package %s, %s, %s\n", ref, orNone(string(m.Label.Classification)), dir)
	fmt.Fprintf(w, "Decision: %s\n", strings.ToUpper(string(d.Decision)))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	section := func(title string, n int) bool {
		if n == 0 {
			fmt.Fprintf(w, "\n%s: none\n", title)
			return false
		}
		fmt.Fprintf(w, "\n%s:\n", title)
		return true
	}
	if section("Deliveries", len(d.Deliveries)) {
		for _, x := range d.Deliveries {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t(%s)\n", x.Agency, x.Mailbox, x.Priority, x.Rule)
		}
		tw.Flush()
	}
	if section("Refused", len(d.Refusals)) {
		for _, x := range d.Refusals {
			fmt.Fprintf(w, "  %s (%s): %s\n", x.Agency, x.Rule, x.Reason)
		}
	}
	if section("Held", len(d.Holds)) {
		for _, x := range d.Holds {
			fmt.Fprintf(w, "  %s (%s): %s\n", x.Agency, x.Rule, x.Reason)
		}
	}
	if section("Deadlines", len(d.Deadlines)) {
		for _, x := range d.Deadlines {
			fmt.Fprintf(w, "  %s within %s\n", x.Kind, hours(x.Hours))
		}
	}
	if d.Alerted() {
		fmt.Fprintln(w, "\nAdministrators are alerted.")
	}
	if section("Why (rules that matched, in order)", len(d.Trace)) {
		for i, s := range d.Trace {
			fmt.Fprintf(w, "  %2d. %s: %s\n      %s\n      source: %s\n", i+1, s.Rule, s.Effect, s.Detail, s.Source)
		}
	}
}

func hours(h int) string {
	switch {
	case h == 1:
		return "1 hour"
	case h >= 24*365 && h%24 == 0:
		return fmt.Sprintf("%d hours (%d days)", h, h/24)
	}
	return fmt.Sprintf("%d hours", h)
}

func orNone(s string) string {
	if s == "" {
		return "unclassified (no label classification)"
	}
	return s
}
