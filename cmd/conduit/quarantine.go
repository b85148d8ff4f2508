package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/gateway/store"
)

// qItemJSON is the --json form of a quarantined message: metadata only.
type qItemJSON struct {
	ID         int64     `json:"id"`
	State      string    `json:"state"`
	Received   time.Time `json:"received"`
	RemoteAddr string    `json:"remote_addr"`
	Helo       string    `json:"helo"`
	MailFrom   string    `json:"mail_from"`
	Recipients []string  `json:"recipients"`
	Check      string    `json:"check"`
	Reason     string    `json:"reason"`
	PackageID  string    `json:"package_id,omitempty"`
	Size       int64     `json:"size"`
	Note       string    `json:"note,omitempty"`
	Updated    time.Time `json:"updated"`
}

func toQItemJSON(q store.QItem) qItemJSON {
	r := q.Recipients
	if r == nil {
		r = []string{}
	}
	return qItemJSON{q.ID, string(q.State), q.Received, q.RemoteAddr, q.Helo, q.MailFrom, r, q.Check, q.Reason,
		q.PackageID, q.Size, q.Note, q.Updated}
}

func printQItems(w io.Writer, l []store.QItem) {
	if len(l) == 0 {
		fmt.Fprintln(w, "no quarantined messages")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tRECEIVED\tFROM\tCHECK\tPACKAGE\tSIZE\tREASON\tNOTE")
	for _, q := range l {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", q.ID, q.State, timeOrDash(q.Received), dash(q.RemoteAddr),
			dash(q.Check), dash(q.PackageID), q.Size, dash(oneLine(q.Reason)), dash(oneLine(q.Note)))
	}
	tw.Flush()
}

func printQItem(w io.Writer, q store.QItem) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("id", strconv.FormatInt(q.ID, 10))
	row("state", string(q.State))
	row("received", timeOrDash(q.Received))
	row("remote address", dash(q.RemoteAddr))
	row("helo", dash(q.Helo))
	row("mail from", dash(q.MailFrom))
	row("recipients", dash(strings.Join(q.Recipients, ", ")))
	row("failed check", dash(q.Check))
	row("reason", dash(oneLine(q.Reason)))
	row("package", dash(q.PackageID))
	if q.State == store.Purged {
		row("message", fmt.Sprintf("%d bytes, destroyed when purged", q.Size))
	} else {
		row("message", fmt.Sprintf("%d bytes (--raw writes it to stdout)", q.Size))
	}
	row("note", dash(oneLine(q.Note)))
	row("updated", timeOrDash(q.Updated))
	tw.Flush()
}

// newQuarantineCmd builds `conduit quarantine`.
func newQuarantineCmd() *cobra.Command {
	qCmd := &cobra.Command{
		Use:   "quarantine",
		Short: "List, show, release and purge quarantined messages",
		Long: `Messages received from partner gateways that fail a check (a signature that
does not verify, a signer not pinned in the directory, a replay, a refused
marking...) are kept whole in quarantine, never dropped. A quarantined
message is held, then released or purged:

  held      kept for an administrator;
  released  the running gateway re-processes it with every check: when they
            pass it is delivered and the record becomes purged with the note
            "re-processed"; when a check fails again the message is
            quarantined anew (a new id, held, with the new reason) and
            this record becomes purged with a note naming the new id;
  purged    its bytes are destroyed; the record (sender, check, reason,
            size, note) is kept.`,
	}
	var cfgPath string
	qCmd.PersistentFlags().StringVar(&cfgPath, "config", "", "the gateway's config file (required)")
	_ = qCmd.MarkPersistentFlagRequired("config")

	var state string
	var listJSON bool
	list := &cobra.Command{
		Use:   "list [--state held|released|purged] [--json]",
		Short: "List quarantined messages, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch store.QState(state) {
			case "", store.Held, store.Released, store.Purged:
			default:
				return &exitError{exitUsage, fmt.Errorf("--state %q: one of held, released, purged", state)}
			}
			ctx := cmd.Context()
			st, err := openStore(ctx, cfgPath)
			if err != nil {
				return err
			}
			defer st.Close()
			l, err := st.ListQuarantine(ctx, store.QState(state))
			if err != nil {
				return err
			}
			if listJSON {
				out := make([]qItemJSON, 0, len(l))
				for _, q := range l {
					out = append(out, toQItemJSON(q))
				}
				return writeJSON(cmd.OutOrStdout(), out)
			}
			printQItems(cmd.OutOrStdout(), l)
			return nil
		},
	}
	list.Flags().StringVar(&state, "state", "", "only messages in this state: held, released or purged")
	list.Flags().BoolVar(&listJSON, "json", false, "print one JSON document (an array of messages)")

	var showJSON, showRaw bool
	show := &cobra.Command{
		Use:   "show ID [--json | --raw]",
		Short: "Show a quarantined message's record (--raw: write the message to stdout)",
		Long: `Show prints a quarantined message's record: who sent it, which check failed
and why. The message itself is printed only with --raw: its bytes, exactly as
received, are written to stdout and nothing else. A purged message has none.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			if showJSON && showRaw {
				return &exitError{exitUsage, errors.New("--json and --raw cannot be used together")}
			}
			ctx := cmd.Context()
			st, err := openStore(ctx, cfgPath)
			if err != nil {
				return err
			}
			defer st.Close()
			q, err := st.GetQuarantine(ctx, id)
			if err != nil {
				return storeError(err, "quarantined message", id)
			}
			switch {
			case showRaw:
				if q.State == store.Purged {
					return fmt.Errorf("quarantined message %d was purged: its bytes are destroyed (%s)", id, oneLine(q.Note))
				}
				_, err = cmd.OutOrStdout().Write(q.Raw)
				return err
			case showJSON:
				return writeJSON(cmd.OutOrStdout(), toQItemJSON(q))
			}
			printQItem(cmd.OutOrStdout(), q)
			return nil
		},
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print one JSON document")
	show.Flags().BoolVar(&showRaw, "raw", false, "write the message's bytes, as received, to stdout")

	var relReason string
	release := &cobra.Command{
		Use:   "release ID --reason TEXT",
		Short: "Release a held message: the running gateway re-processes it with every check",
		Long: `Release marks a held message released, with the reason and who released it.
Releasing does not bypass any check: the running gateway re-processes the
message with every check, as if it had just been received. If they now pass
(for example because the sender's certificate has been pinned in the
directory), it is delivered and its record becomes purged with the note
"re-processed". If a check fails again it is quarantined anew, held, under a
new id with the new reason, and this record becomes purged with a note naming
the new id. Fix the cause before releasing.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return setQState(cmd, cfgPath, args[0], store.Released, relReason)
		},
	}
	release.Flags().StringVar(&relReason, "reason", "", "why it is released (required; kept with the record)")

	var purgeReason string
	purge := &cobra.Command{
		Use:   "purge ID --reason TEXT",
		Short: "Destroy a quarantined message's bytes, keeping its record",
		Long: `Purge destroys a held or released message's bytes (overwritten in the
database, and the write-ahead log checkpointed) and keeps its record: sender,
failed check, reason, size, and the note of who purged it and why. It cannot
be undone.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return setQState(cmd, cfgPath, args[0], store.Purged, purgeReason)
		},
	}
	purge.Flags().StringVar(&purgeReason, "reason", "", "why it is purged (required; kept with the record)")

	qCmd.AddCommand(list, show, release, purge)
	return qCmd
}

func setQState(cmd *cobra.Command, cfgPath, arg string, to store.QState, reason string) error {
	verb := map[store.QState]string{store.Released: "release", store.Purged: "purge"}[to]
	id, err := parseID(arg)
	if err != nil {
		return err
	}
	if strings.TrimSpace(reason) == "" {
		return &exitError{exitUsage, fmt.Errorf("quarantine %s needs --reason TEXT: say why (it is kept with the record)", verb)}
	}
	ctx := cmd.Context()
	st, err := openStore(ctx, cfgPath)
	if err != nil {
		return err
	}
	defer st.Close()
	q, err := st.GetQuarantine(ctx, id)
	if err != nil {
		return storeError(err, "quarantined message", id)
	}
	who := administrator()
	note := who + ": " + oneLine(reason)
	kind := audit.Released
	if to == store.Purged {
		kind = audit.Purged
	}
	ev, err := adminEvent(cfgPath, audit.Event{Kind: kind, Package: q.PackageID, Rule: q.Check,
		Detail: fmt.Sprintf("Q%d: %s", id, oneLine(reason))})
	if err != nil {
		return err
	}
	if err := st.Update(ctx, func(tx store.Tx) error {
		if err := tx.SetQuarantineState(id, to, note); err != nil {
			return err
		}
		return tx.Audit(ev)
	}); err != nil {
		return storeError(err, "quarantined message", id)
	}
	adminLog(ctx, "quarantined message "+string(to), "quarantine", id, "check", q.Check, "by", who)
	if err := chainStaged(ctx, cfgPath); err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	switch to {
	case store.Released:
		fmt.Fprintf(w, "released quarantined message %d (failed check: %s).\n", id, dash(q.Check))
		fmt.Fprintln(w, "The running gateway will re-process it with every check: if they pass it is delivered")
		fmt.Fprintln(w, "and this record becomes purged (\"re-processed\"); if a check fails again it is")
		fmt.Fprintln(w, "quarantined anew under a new id, named in this record's note.")
		fmt.Fprintf(w, "Follow it with `conduit quarantine show %d` and `conduit quarantine list --state held`.\n", id)
	case store.Purged:
		fmt.Fprintf(w, "purged quarantined message %d: its %d bytes are destroyed; the record is kept. Note: %s\n", id, q.Size, note)
	}
	return nil
}
