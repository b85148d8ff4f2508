package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/policy"
)

// openStore opens the store named by a gateway config file. It refuses to
// create a database: an administrator's typo must not make an empty one.
func openStore(ctx context.Context, cfgPath string) (cliStore, error) {
	cfg, err := existingDatabase(cfgPath)
	if err != nil {
		return nil, err
	}
	return openStoreCfg(ctx, cfg)
}

// existingDatabase loads a gateway config whose database (store.path)
// exists already, for the commands that work on a gateway's store or
// audit trail.
func existingDatabase(cfgPath string) (*config.Config, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, &exitError{exitUsage, err}
	}
	if dsn, err := cfg.Store.PostgresDSN(); err != nil {
		return nil, &exitError{exitUsage, err}
	} else if dsn != "" {
		return cfg, nil // a PostgreSQL database: its schema says whether a gateway ran
	}
	if cfg.Store.Path == "" {
		return nil, &exitError{exitUsage, fmt.Errorf("%s: store.path is not set: the gateway's database", cfgPath)}
	}
	if _, err := os.Stat(cfg.Store.Path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no database at %s (store.path in %s): has the gateway run yet?", cfg.Store.Path, cfgPath)
		}
		return nil, err
	}
	return cfg, nil
}

// administrator names who runs an administrative command, for the note
// kept with a drop, release or purge.
func administrator() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "unknown"
}

func parseID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, &exitError{exitUsage, fmt.Errorf("%q is not an item id (a positive number, as list shows)", s)}
	}
	return id, nil
}

// storeError turns the store's sentinel errors into messages an
// administrator can act on.
func storeError(err error, what string, id int64) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("%s %d does not exist (see the list command)", what, id)
	case errors.Is(err, store.ErrWrongState):
		return fmt.Errorf("%s %d: %w", what, id, err)
	}
	return err
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine keeps table cells on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// itemJSON is the --json form of a queue item: metadata only.
type itemJSON struct {
	ID          int64     `json:"id"`
	PackageID   string    `json:"package_id"`
	Destination string    `json:"destination"`
	Recipients  []string  `json:"recipients"`
	MailFrom    string    `json:"mail_from"`
	Submitter   string    `json:"submitter"`
	Priority    string    `json:"priority"`
	Marking     string    `json:"marking"`
	Size        int64     `json:"size"`
	State       string    `json:"state"`
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt"`
	LastError   string    `json:"last_error,omitempty"`
	RemoteID    string    `json:"remote_id,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
	// Receipt is the destination's signed receipt, when it has come.
	Receipt *receiptJSON `json:"receipt,omitempty"`
}

func toItemJSON(it store.Item) itemJSON {
	size := it.Size
	if size == 0 {
		size = int64(len(it.Envelope))
	}
	r := it.Recipients
	if r == nil {
		r = []string{}
	}
	return itemJSON{it.ID, it.PackageID, it.Destination, r, it.MailFrom, it.Submitter, it.Priority.String(),
		it.Marking, size, string(it.State), it.Attempts, it.NextAttempt, it.LastError, it.RemoteID, it.Reason,
		it.Created, it.Updated, nil}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printItems(w io.Writer, items []store.Item) {
	if len(items) == 0 {
		fmt.Fprintln(w, "no items")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tPRIORITY\tDESTINATION\tPACKAGE\tMARKING\tSIZE\tATTEMPTS\tNEXT ATTEMPT\tCREATED\tNOTE")
	for _, it := range items {
		note := it.LastError
		if it.State == store.Dropped || it.State == store.Failed {
			note = it.Reason
		} else if it.State == store.Sent {
			note = "remote id " + it.RemoteID
		}
		next := timeOrDash(it.NextAttempt)
		if it.State != store.Queued {
			next = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", it.ID, it.State, it.Priority, it.Destination,
			it.PackageID, dash(it.Marking), it.Size, it.Attempts, next, timeOrDash(it.Created), dash(oneLine(note)))
	}
	tw.Flush()
}

type receiptJSON struct {
	Delivered time.Time `json:"delivered"`
	Received  time.Time `json:"received"`
	Mailboxes []string  `json:"mailboxes"`
	Signer    string    `json:"signer"`
}

func printItem(w io.Writer, it store.Item) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("id", strconv.FormatInt(it.ID, 10))
	row("state", string(it.State))
	row("package", it.PackageID)
	row("destination", it.Destination)
	row("recipients", strings.Join(it.Recipients, ", "))
	row("mail from", dash(it.MailFrom))
	row("submitter", dash(it.Submitter))
	row("priority", it.Priority.String())
	row("marking", dash(it.Marking))
	row("envelope", fmt.Sprintf("%d bytes (ciphertext; --raw writes it to stdout)", len(it.Envelope)))
	row("attempts", strconv.Itoa(it.Attempts))
	row("next attempt", timeOrDash(it.NextAttempt))
	row("last error", dash(oneLine(it.LastError)))
	row("remote id", dash(it.RemoteID))
	row("reason", dash(oneLine(it.Reason)))
	row("created", timeOrDash(it.Created))
	row("updated", timeOrDash(it.Updated))
	tw.Flush()
}

// newQueueCmd builds `conduit queue`.
func newQueueCmd() *cobra.Command {
	queueCmd := &cobra.Command{
		Use:   "queue",
		Short: "List, show, retry, release and drop outbound queue items",
		Long: `The outbound queue holds one item per package and destination agency: the
sealed envelope (ciphertext only) and its delivery state (queued, held, sent,
failed, dropped). These commands work on the gateway's database while the
gateway runs; they never print package content.`,
	}
	var cfgPath string
	queueCmd.PersistentFlags().StringVar(&cfgPath, "config", "", "the gateway's config file (required)")
	_ = queueCmd.MarkPersistentFlagRequired("config")

	var state, dest, pkg string
	var limit int
	var listJSON bool
	list := &cobra.Command{
		Use:   "list [--state S] [--destination AGENCY] [--package ID] [--json]",
		Short: "List queue items, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch store.State(state) {
			case "", store.Queued, store.OnHold, store.Sent, store.Failed, store.Dropped:
			default:
				return &exitError{exitUsage, fmt.Errorf("--state %q: one of queued, held, sent, failed, dropped", state)}
			}
			ctx := cmd.Context()
			st, err := openStore(ctx, cfgPath)
			if err != nil {
				return err
			}
			defer st.Close()
			items, err := st.List(ctx, store.Filter{State: store.State(state), Destination: dest, PackageID: pkg, Limit: limit})
			if err != nil {
				return err
			}
			if listJSON {
				out := make([]itemJSON, 0, len(items))
				for _, it := range items {
					out = append(out, toItemJSON(it))
				}
				return writeJSON(cmd.OutOrStdout(), out)
			}
			printItems(cmd.OutOrStdout(), items)
			return nil
		},
	}
	list.Flags().StringVar(&state, "state", "", "only items in this state: queued, held, sent, failed or dropped")
	list.Flags().StringVar(&dest, "destination", "", "only items for this destination agency id")
	list.Flags().StringVar(&pkg, "package", "", "only items of this package id")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many items (0: all)")
	list.Flags().BoolVar(&listJSON, "json", false, "print one JSON document (an array of items)")

	var showJSON, showRaw bool
	show := &cobra.Command{
		Use:   "show ID [--json | --raw]",
		Short: "Show one item's metadata (--raw: write its sealed envelope to stdout)",
		Long: `Show prints one queue item's metadata. The envelope itself is never printed
unless --raw is given: then its bytes (the sealed, encrypted envelope, exactly
as it will be relayed) are written to stdout and nothing else.`,
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
			it, err := st.Get(ctx, id)
			if err != nil {
				return storeError(err, "queue item", id)
			}
			switch {
			case showRaw:
				_, err = cmd.OutOrStdout().Write(it.Envelope)
				return err
			}
			rs, err := st.Receipts(ctx, it.PackageID)
			if err != nil {
				return err
			}
			var receipt *store.Receipt
			for i := range rs {
				if rs[i].Agency == it.Destination {
					receipt = &rs[i]
				}
			}
			if showJSON {
				j := toItemJSON(it)
				if receipt != nil {
					j.Receipt = &receiptJSON{Delivered: receipt.Delivered, Received: receipt.Received, Mailboxes: receipt.Mailboxes, Signer: receipt.Signer}
				}
				return writeJSON(cmd.OutOrStdout(), j)
			}
			printItem(cmd.OutOrStdout(), it)
			if receipt != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "receipt:       delivered %s to %s (signed by %s, received %s)\n",
					timeOrDash(receipt.Delivered), strings.Join(receipt.Mailboxes, ", "), receipt.Signer, timeOrDash(receipt.Received))
			} else if it.State == store.Sent {
				fmt.Fprintln(cmd.OutOrStdout(), "receipt:       none yet")
			}
			return nil
		},
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print one JSON document")
	show.Flags().BoolVar(&showRaw, "raw", false, "write the sealed envelope's bytes to stdout")

	retry := &cobra.Command{
		Use:   "retry ID",
		Short: "Make a queued or failed item due at once",
		Long: `Retry makes a queued item due at once, or puts a failed item back in the
queue, due at once. The running gateway takes it on its next pass. A failed
item older than the queue's maximum age may fail again at once: the age
counts from when the package was first queued.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			st, err := openStore(ctx, cfgPath)
			if err != nil {
				return err
			}
			defer st.Close()
			ev, err := adminEvent(cfgPath, audit.Event{Kind: audit.Retried, Detail: fmt.Sprintf("queue item %d made due by an administrator", id)})
			if err != nil {
				return err
			}
			if err := st.Update(ctx, func(tx store.Tx) error {
				if err := tx.RetryNow(id); err != nil {
					return err
				}
				return tx.Audit(ev)
			}); err != nil {
				return storeError(err, "queue item", id)
			}
			adminLog(ctx, "queue item retried", "item", id)
			if err := chainStaged(ctx, cfgPath); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "queue item %d is due now; the running gateway will try it on its next pass\n", id)
			return nil
		},
	}

	var reason string
	drop := &cobra.Command{
		Use:   "drop ID --reason TEXT",
		Short: "Remove a queued or failed item from delivery, with a reason",
		Long: `Drop removes an item from delivery: it will not be sent. The item stays in
the database as dropped, with the reason and who dropped it. --reason is
required. A delivery already under way when the item is dropped may still
complete; the item is then recorded as sent.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return reasonedAction(cmd, cfgPath, args[0], reason, queueAction{
				verb: "drop", why: "say why the item is removed from delivery",
				do:    func(tx store.Tx, id int64, note string) error { return tx.Drop(id, note) },
				event: audit.Dropped, done: "dropped queue item %d (package %s to %s); it will not be sent",
			})
		},
	}
	drop.Flags().StringVar(&reason, "reason", "", "why the item is dropped (required; kept with the record)")

	var relReason string
	release := &cobra.Command{
		Use:   "release ID --reason TEXT",
		Short: "Send a held item: the sharing policy held it for a release",
		Long: `Release queues an item the sharing policy held (handling code 5 waiting for
the originator, a mailbox without a training record, an administrator's hold
rule) for delivery now. It was sealed when it was submitted; releasing sends
that envelope. --reason is required and kept with who released it: say what
made the release lawful (the originator's consent, the training record).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return reasonedAction(cmd, cfgPath, args[0], relReason, queueAction{
				verb: "release", why: "say what makes sending it lawful now", rule: "hold",
				do:    func(tx store.Tx, id int64, note string) error { return tx.Release(id, note) },
				event: audit.Released, done: "released queue item %d (package %s to %s); the running gateway sends it on its next pass",
			})
		},
	}
	release.Flags().StringVar(&relReason, "reason", "", "what makes sending it lawful now (required; kept with the record)")

	queueCmd.AddCommand(list, show, retry, drop, release)
	return queueCmd
}

// adminLog records an administrator's action. The audit trail (a later
// issue) will take these; until then they go to the log at warning level,
// the level the CLI shows, so that they are not lost. Never content: ids,
// agencies and the administrator's name only.
func adminLog(ctx context.Context, msg string, args ...any) {
	slog.Default().Log(ctx, slog.LevelWarn, "admin: "+msg, args...)
}

// queueAction is an administrator's change to one queue item that needs a
// reason: drop, release.
type queueAction struct {
	verb, why, rule string
	do              func(tx store.Tx, id int64, note string) error
	event           audit.Kind
	done            string // printf: id, package, destination
}

// reasonedAction does a queueAction: the reason is required, kept with the
// item with who gave it, logged and audited.
func reasonedAction(cmd *cobra.Command, cfgPath, arg, reason string, a queueAction) error {
	id, err := parseID(arg)
	if err != nil {
		return err
	}
	if strings.TrimSpace(reason) == "" {
		return &exitError{exitUsage, fmt.Errorf("queue %s needs --reason TEXT: %s (it is kept with the record)", a.verb, a.why)}
	}
	ctx := cmd.Context()
	st, err := openStore(ctx, cfgPath)
	if err != nil {
		return err
	}
	defer st.Close()
	it, err := st.Get(ctx, id)
	if err != nil {
		return storeError(err, "queue item", id)
	}
	who := administrator()
	ev, err := adminEvent(cfgPath, audit.Event{Kind: a.event, Package: it.PackageID, Destination: it.Destination,
		Rule: a.rule, Detail: fmt.Sprintf("queue item %d: %s", id, oneLine(reason))})
	if err != nil {
		return err
	}
	// The action, the hold clock it stops and its audit event: one
	// transaction.
	if err := st.Update(ctx, func(tx store.Tx) error {
		if err := a.do(tx, id, who+": "+oneLine(reason)); err != nil {
			return err
		}
		if it.State == store.OnHold {
			// Released or dropped, a held item no longer waits for the
			// originator: its hold clock (handling code 5) stops.
			if _, err := tx.CompleteDeadlines(it.PackageID, policy.DeadlineHold, it.Destination, time.Now(), who+": "+a.verb); err != nil {
				return err
			}
		}
		return tx.Audit(ev)
	}); err != nil {
		return storeError(err, "queue item", id)
	}
	adminLog(ctx, "queue item "+a.verb, "item", id, "package", it.PackageID, "destination", it.Destination, "by", who)
	if err := chainStaged(ctx, cfgPath); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), a.done+". Reason recorded: %s: %s\n", id, it.PackageID, it.Destination, who, oneLine(reason))
	return nil
}

// adminEvent completes the audit event of an administrator's action,
// which the action's store transaction writes (store.Tx.Audit): the
// action is never done without its record. chainStaged then moves it into
// the chain.
func adminEvent(cfgPath string, e audit.Event) (audit.Event, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return e, &exitError{exitUsage, err}
	}
	e.Agency, e.Actor, e.Time = cfg.Agency, administrator(), time.Now().UTC()
	return e, nil
}

// chainStaged opens the gateway's audit trail, which moves the events
// staged with the action into the hash chain (the running gateway would
// do it within a second too). A trail that cannot be opened is an error
// the administrator sees (exit 1), so it is never silent; the event stays
// staged, and is chained at the next open.
func chainStaged(ctx context.Context, cfgPath string) error {
	a, err := openAudit(ctx, cfgPath, "")
	if err != nil {
		return fmt.Errorf("the action was done and its audit event recorded, but not yet chained: %w", err)
	}
	return a.Close()
}
