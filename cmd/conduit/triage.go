package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/policy"
)

// newTriageCmd builds `conduit triage`.
func newTriageCmd() *cobra.Command {
	var cfgPath, note string
	triage := &cobra.Command{Use: "triage", Short: "Record the triage of received reports (the 72-hour clock)"}
	triage.PersistentFlags().StringVar(&cfgPath, "config", "", "the gateway's config file (required)")
	_ = triage.MarkPersistentFlagRequired("config")
	done := &cobra.Command{
		Use:   "done PACKAGE-ID [--note TEXT]",
		Short: "Stop a received package's triage clock",
		Long: `Done records that a received report has been triaged, stopping its 72-hour
clock (MoU 6.1: reports are triaged within 72 hours). Who did it and the note
are kept with the clock. Staff can do the same by replying to the delivered
package, addressed to the gateway address its Conduit-Triage header names.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			st, err := openStore(ctx, cfgPath)
			if err != nil {
				return err
			}
			defer st.Close()
			ev, err := adminEvent(cfgPath, audit.Event{Kind: audit.Triaged, Package: args[0], Rule: "triage-72h", Detail: "triaged: " + oneLine(note)})
			if err != nil {
				return err
			}
			// No clock stopped, no event written.
			var n int
			err = st.Update(ctx, func(tx store.Tx) error {
				if n, err = tx.CompleteDeadlines(args[0], policy.DeadlineTriage, "", time.Now(), administrator()+": "+oneLine(note)); err != nil || n == 0 {
					return err
				}
				return tx.Audit(ev)
			})
			if err != nil {
				return err
			}
			if n == 0 {
				return &exitError{exitUsage, fmt.Errorf("package %s has no open triage clock here", args[0])}
			}
			adminLog(ctx, "triage recorded", "package", args[0])
			if err := chainStaged(ctx, cfgPath); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "triage of package %s recorded\n", args[0])
			return nil
		},
	}
	done.Flags().StringVar(&note, "note", "triaged", "what was decided (kept with the clock)")
	triage.AddCommand(done)
	return triage
}

// newDeadlinesCmd builds `conduit deadlines`.
func newDeadlinesCmd() *cobra.Command {
	var dlCfg string
	dl := &cobra.Command{
		Use:   "deadlines --config FILE",
		Short: "List the open clocks: acknowledgements awaited, reports to triage, holds waiting for the originator, retention",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			st, err := openStore(ctx, dlCfg)
			if err != nil {
				return err
			}
			defer st.Close()
			ds, err := st.Deadlines(ctx, time.Now(), false)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "PACKAGE\tKIND\tAGENCY\tDUE\tSTATE")
			for _, d := range ds {
				state := "open"
				if !d.Alerted.IsZero() {
					state = "overdue, alerted " + d.Alerted.UTC().Format(time.RFC3339)
				} else if time.Now().After(d.Due) {
					state = "overdue"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.PackageID, d.Kind, d.Agency, d.Due.UTC().Format(time.RFC3339), state)
			}
			tw.Flush()
			if len(ds) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), strings.TrimSpace("no open clocks"))
			}
			return nil
		},
	}
	dl.Flags().StringVar(&dlCfg, "config", "", "the gateway's config file (required)")
	_ = dl.MarkFlagRequired("config")

	var ackCfg, ackAgency, ackNote string
	ack := &cobra.Command{
		Use:   "ack PACKAGE-ID --agency ID --note TEXT --config FILE",
		Short: "Record that a destination acknowledged an escalated package (stops its acknowledgement clock)",
		Long: `Ack records that a destination acknowledged an immediately escalated package
by another channel (a telephone call, a plain PGP/MIME partner's reply), stopping
its acknowledgement clock (MoU 6.1: major or imminent risk escalated
immediately). A partner without Conduit sends no signed receipt, so its clock
is stopped by its signed reply or by this command, never left waiting. Who did
it and the note are kept with the clock and in the audit trail.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if strings.TrimSpace(ackNote) == "" || ackAgency == "" {
				return &exitError{exitUsage, fmt.Errorf("deadlines ack needs --agency and --note: who acknowledged, and how")}
			}
			st, err := openStore(ctx, ackCfg)
			if err != nil {
				return err
			}
			defer st.Close()
			ev, err := adminEvent(ackCfg, audit.Event{Kind: audit.Receipt, Package: args[0], Destination: ackAgency, Rule: "imminent-risk-escalation",
				Detail: "acknowledgement recorded by an administrator: " + oneLine(ackNote)})
			if err != nil {
				return err
			}
			var n int
			err = st.Update(ctx, func(tx store.Tx) error {
				if n, err = tx.CompleteDeadlines(args[0], policy.DeadlineAcknowledge, ackAgency, time.Now(), administrator()+": "+oneLine(ackNote)); err != nil || n == 0 {
					return err
				}
				return tx.Audit(ev)
			})
			if err != nil {
				return err
			}
			if n == 0 {
				return &exitError{exitUsage, fmt.Errorf("package %s has no open acknowledgement clock for %s here", args[0], ackAgency)}
			}
			adminLog(ctx, "acknowledgement recorded", "package", args[0], "agency", ackAgency)
			if err := chainStaged(ctx, ackCfg); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "acknowledgement of package %s by %s recorded\n", args[0], ackAgency)
			return nil
		},
	}
	ack.Flags().StringVar(&ackCfg, "config", "", "the gateway's config file (required)")
	ack.Flags().StringVar(&ackAgency, "agency", "", "the destination that acknowledged")
	ack.Flags().StringVar(&ackNote, "note", "", "how it was acknowledged (kept with the clock)")
	_ = ack.MarkFlagRequired("config")
	dl.AddCommand(ack)
	return dl
}
