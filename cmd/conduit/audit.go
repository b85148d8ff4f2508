package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
)

// auditKey reads the chain key: --key-file, else $CONDUIT_AUDIT_KEY_FILE,
// else the config's store.audit-key-file; nil when none is set.
func auditKey(cfg *config.Config, keyFile string) ([]byte, error) {
	if keyFile == "" {
		keyFile = os.Getenv(auditKeyFileEnv)
	}
	if keyFile == "" {
		keyFile = cfg.Store.AuditKeyFile
	}
	if keyFile == "" {
		return nil, nil
	}
	key, err := audit.ReadKeyFile(keyFile)
	if err != nil {
		return nil, &exitError{exitUsage, err}
	}
	return key, nil
}

// openTrail opens (creating if need be) the audit trail of a loaded
// config, with its chain key if it has one: for the commands that write to
// it (serve, notice send, purge).
func openTrail(ctx context.Context, cfg *config.Config) (audit.Trail, error) {
	key, err := auditKey(cfg, "")
	if err != nil {
		return nil, err
	}
	return openTrailCfg(ctx, cfg, key)
}

// openAudit opens the audit trail in the database named by a gateway
// config file. Like openStore, it refuses to create a database.
func openAudit(ctx context.Context, cfgPath, keyFile string) (audit.Trail, error) {
	cfg, err := existingDatabase(cfgPath)
	if err != nil {
		return nil, err
	}
	key, err := auditKey(cfg, keyFile)
	if err != nil {
		return nil, err
	}
	a, err := openTrailCfg(ctx, cfg, key)
	if errors.Is(err, audit.ErrKeyMismatch) && key == nil {
		return nil, &exitError{exitUsage, fmt.Errorf("%w (--key-file)", err)}
	}
	return a, err
}

// verifyExportFile checks an exported JSON-lines file instead of the
// database.
func verifyExportFile(cfgPath, keyFile, path string) (audit.VerifyResult, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return audit.VerifyResult{}, &exitError{exitUsage, err}
	}
	key, err := auditKey(cfg, keyFile)
	if err != nil {
		return audit.VerifyResult{}, err
	}
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return audit.VerifyResult{}, &exitError{exitUsage, err}
		}
		defer f.Close()
		r = f
	}
	res, err := audit.VerifyJSONL(r, key)
	if err != nil {
		return res, &exitError{exitUsage, fmt.Errorf("%s: %w", path, err)}
	}
	return res, nil
}

// auditTime formats an event time for a table.
func auditTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000Z") }

func auditDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printEvents(w io.Writer, l []audit.Event) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tKIND\tPACKAGE\tDESTINATION\tRULE\tACTOR\tDETAIL")
	for _, e := range l {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, auditTime(e.Time), e.Kind,
			auditDash(e.Package), auditDash(e.Destination), auditDash(e.Rule), auditDash(e.Actor), auditDash(strings.Join(strings.Fields(e.Detail), " ")))
	}
	tw.Flush()
}

// newAuditCmd builds `conduit audit`.
func newAuditCmd() *cobra.Command {
	auditCmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify, query and export the audit trail",
		Long: `The audit trail is the gateway's append-only, hash-chained record of every
decision and movement of a package: metadata and the rules applied, never
package content or a subject's identity. It lives in the gateway's database
(store.path) and these commands work on it while the gateway runs.

If the gateway chains the trail with a key (HMAC, store.audit-key-file in
the config), the commands read the same key file; --key-file or
CONDUIT_AUDIT_KEY_FILE name another. Without a key the chain proves the log
consistent; with one, nobody without the key can have rewritten it.`,
	}
	var cfgPath, keyFile string
	auditCmd.PersistentFlags().StringVar(&cfgPath, "config", "", "the gateway's config file (required)")
	auditCmd.PersistentFlags().StringVar(&keyFile, "key-file", "", "the chain's HMAC key file (default $CONDUIT_AUDIT_KEY_FILE, then store.audit-key-file)")
	_ = auditCmd.MarkPersistentFlagRequired("config")

	var verifyFile string
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Check the whole chain; exit 3 naming the first bad entry",
		Long: `Verify recomputes every entry's hash in order and checks each links to the one
before. It prints "N entries, chain intact" and the head (the newest entry's
number and hash: record it elsewhere to anchor the trail), or exits with
status 3 naming the first bad entry and whether it was edited, deleted,
reordered or rewritten without the key.

With --file, it checks an export (a SIEM's copy) instead of the database:
the lines must be a contiguous run (exported without --package, --rule or
--kind); compare the head it prints with the database's.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var r audit.VerifyResult
			if verifyFile != "" {
				var err error
				if r, err = verifyExportFile(cfgPath, keyFile, verifyFile); err != nil {
					return err
				}
			} else {
				a, err := openAudit(ctx, cfgPath, keyFile)
				var ee *exitError
				if errors.Is(err, audit.ErrKeyMismatch) && !errors.As(err, &ee) {
					// A key is given but is not the chain's: not proven.
					return &exitError{exitCheck, fmt.Errorf("audit chain not proven: %w", err)}
				}
				if err != nil {
					return err
				}
				defer a.Close()
				if r, err = a.Verify(ctx); err != nil {
					return err
				}
			}
			if !r.OK {
				return &exitError{exitCheck, fmt.Errorf("audit chain broken at %s", r)}
			}
			mode := "unkeyed"
			if r.Keyed {
				mode = "keyed"
			}
			fmt.Fprintln(cmd.OutOrStdout(), r)
			fmt.Fprintf(cmd.OutOrStdout(), "head: entry %d, hash %s (%s)\n", r.HeadSeq, r.HeadHash, mode)
			return nil
		},
	}

	verify.Flags().StringVar(&verifyFile, "file", "", "check this exported JSON-lines file (- for stdin) instead of the database")

	var pkg, since, rule, kind string
	var limit int
	var asJSON bool
	filter := func(cmd *cobra.Command) (audit.Filter, error) {
		f := audit.Filter{Package: pkg, Rule: rule, Kind: audit.Kind(kind), Limit: limit}
		if kind != "" && !f.Kind.Valid() {
			return f, &exitError{exitUsage, fmt.Errorf("--kind %q: one of %v", kind, audit.Kinds)}
		}
		if since != "" {
			t, err := audit.ParseSince(since, time.Now())
			if err != nil {
				return f, &exitError{exitUsage, fmt.Errorf("--since %w", err)}
			}
			f.Since = t
		}
		return f, nil
	}
	query := &cobra.Command{
		Use:   "query [--package ID] [--since T] [--rule R] [--kind K] [--json]",
		Short: "What happened to a package, or under a rule, or since a time",
		Long: `Query prints the events that match every filter given, oldest first.
--since takes a time (2026-11-23T10:00:00Z), a date (2026-11-23, midnight UTC)
or an age (36h, 7d). --json prints JSON lines, as export does.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := filter(cmd)
			if err != nil {
				return err
			}
			if f.Package == "" && f.Rule == "" && f.Kind == "" && f.Since.IsZero() {
				return &exitError{exitUsage, errors.New("give --package, --since, --rule or --kind (export writes the whole trail)")}
			}
			ctx := cmd.Context()
			a, err := openAudit(ctx, cfgPath, keyFile)
			if err != nil {
				return err
			}
			defer a.Close()
			if asJSON {
				_, err := a.Export(ctx, cmd.OutOrStdout(), f)
				return err
			}
			l, err := a.Query(ctx, f)
			if err != nil {
				return err
			}
			printEvents(cmd.OutOrStdout(), l)
			return nil
		},
	}
	query.Flags().StringVar(&pkg, "package", "", "only events about this package id")
	query.Flags().StringVar(&since, "since", "", "only events at or after this time, date or age")
	query.Flags().StringVar(&rule, "rule", "", "only events citing this policy rule or check")
	query.Flags().StringVar(&kind, "kind", "", "only events of this kind (received, refused, redirected...)")
	query.Flags().IntVar(&limit, "limit", 1000, "at most this many events (0: all)")
	query.Flags().BoolVar(&asJSON, "json", false, "print JSON lines")

	var afterSeq int64
	export := &cobra.Command{
		Use:   "export [--since T] [--after-seq N] > events.jsonl",
		Short: "Write the trail as JSON lines for a SIEM",
		Long: `Export writes one JSON object a line, oldest first: seq, time, agency, kind,
package, destination, rule, actor, detail, prev_hash, hash (hex). A SIEM that
keeps the lines holds a copy of the chain that anchors it; --after-seq
resumes after the last seq it has.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := filter(cmd)
			if err != nil {
				return err
			}
			f.AfterSeq, f.Limit = afterSeq, 0
			ctx := cmd.Context()
			a, err := openAudit(ctx, cfgPath, keyFile)
			if err != nil {
				return err
			}
			defer a.Close()
			_, err = a.Export(ctx, cmd.OutOrStdout(), f)
			return err
		},
	}
	export.Flags().StringVar(&since, "since", "", "only events at or after this time, date or age")
	export.Flags().StringVar(&pkg, "package", "", "only events about this package id")
	export.Flags().StringVar(&rule, "rule", "", "only events citing this policy rule or check")
	export.Flags().StringVar(&kind, "kind", "", "only events of this kind")
	export.Flags().Int64Var(&afterSeq, "after-seq", 0, "only events after this seq")

	auditCmd.AddCommand(verify, query, export)
	return auditCmd
}
