package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/conduit-gateway/conduit/gateway"
	"github.com/conduit-gateway/conduit/policy"
)

// newPurgeCmd builds `conduit purge`.
func newPurgeCmd() *cobra.Command {
	var cfgPath string
	var dry bool
	c := &cobra.Command{
		Use:   "purge --config FILE [--dry-run]",
		Short: "Destroy the stored copies of packages whose retention period has run out",
		Long: `Purge destroys, for every package whose retention clock (the policy's
retention rule) has run out, the envelopes of its finished queue items (and
the receipt sealed for it) and its delivered Maildir copies, and every
quarantined message kept longer than the period, and records each purge in
the audit trail. Stored copies are crypto-shredded: each one's data key is
destroyed with its bytes, and the WAL is checkpointed and truncated. The
running gateway does this by itself; purge does it now. --dry-run lists what
would go and destroys nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			pol, cfg, err := policy.Load(cfgPath)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			keep := time.Duration(pol.Params.Retention.Days) * 24 * time.Hour
			st, err := openStore(ctx, cfgPath)
			if err != nil {
				return err
			}
			defer st.Close()
			var aud interface {
				Drain(context.Context) (int, error)
			}
			if !dry {
				trail, err := openTrail(ctx, cfg)
				if err != nil {
					return err
				}
				defer trail.Close()
				aud = trail
			}
			ps, err := gateway.PurgeExpired(ctx, cfg, st, aud, time.Now(), keep, dry)
			if err != nil {
				return err
			}
			verb := "purged"
			if dry {
				verb = "would purge"
			}
			for _, p := range ps {
				if p.Quarantine != 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "%s quarantined message Q%d (retention ran out %s)\n", verb, p.Quarantine, p.Due.UTC().Format(time.RFC3339))
					continue
				}
				if p.Pending > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "kept package %s (retention ran out %s): %d queue item(s) still queued or held; purged once they are sent, fail or are dropped\n",
						p.PackageID, p.Due.UTC().Format(time.RFC3339), p.Pending)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s package %s (retention ran out %s): %d envelope(s), %d delivered copy(ies)\n",
					verb, p.PackageID, p.Due.UTC().Format(time.RFC3339), p.Envelopes, len(p.Files))
			}
			if len(ps) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "nothing has reached the end of its retention period")
			}
			return nil
		},
	}
	c.Flags().StringVar(&cfgPath, "config", "", "the gateway's config file (required)")
	c.Flags().BoolVar(&dry, "dry-run", false, "list what would be destroyed; destroy nothing")
	_ = c.MarkFlagRequired("config")
	return c
}
