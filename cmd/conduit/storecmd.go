package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/spf13/cobra"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/sqlschema"
)

// newStoreCmd builds `conduit store`.
func newStoreCmd() *cobra.Command {
	c := &cobra.Command{Use: "store", Short: "Work on the gateway's database as a whole"}
	c.AddCommand(newStoreMigrateCmd())
	return c
}

func newStoreMigrateCmd() *cobra.Command {
	var from, to, keyFile string
	c := &cobra.Command{
		Use:   "migrate --from FILE --to DSN",
		Short: "Move an agency's store from SQLite to PostgreSQL",
		Long: `Migrate copies everything an agency's SQLite database holds into an empty
PostgreSQL database: the queue with its sealed envelopes and data keys, the
replay cache, receipts, clocks, the quarantine, partner keys and pending
changes, the audit outbox and the audit hash chain as it is. It checks the
chain before copying, copies in one transaction, then compares the row
counts and verifies the copied chain (the same head as the original).

Stop the agency's gateway first. Then point store.postgres (or
store.postgres-file) at the database, remove store.path, and start the
gateways. --to may be left out when CONDUIT_STORE_POSTGRES is set; the
password may come from PGPASSWORD or ~/.pgpass.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			if to == "" {
				to = os.Getenv(config.EnvStorePostgres)
			}
			if from == "" || to == "" {
				return &exitError{exitUsage, errors.New("--from (the SQLite file) and --to (the PostgreSQL connection string) are required")}
			}
			if _, err := os.Stat(from); err != nil {
				return &exitError{exitUsage, fmt.Errorf("--from: %w", err)}
			}
			var key []byte
			if keyFile != "" {
				var err error
				if key, err = audit.ReadKeyFile(keyFile); err != nil {
					return &exitError{exitUsage, err}
				}
			}
			db, err := sqlschema.OpenDB(from, store.StorePragmas...)
			if err != nil {
				return fmt.Errorf("open %s: %w", from, err)
			}
			defer db.Close()
			if _, err := store.NewSQLite(ctx, db); err != nil {
				return fmt.Errorf("open %s: %w", from, err)
			}
			srcTrail, err := audit.NewSQLite(ctx, db, key)
			if err != nil {
				return fmt.Errorf("open the audit trail in %s: %w (--audit-key-file for a keyed chain)", from, err)
			}
			before, err := srcTrail.Verify(ctx)
			if err != nil {
				return err
			}
			if !before.OK {
				return fmt.Errorf("the audit chain in %s does not verify (%s): nothing copied", from, before)
			}
			dst, err := store.OpenPostgres(ctx, to)
			if err != nil {
				return err
			}
			defer dst.Close()
			dstTrail, err := audit.NewPostgres(ctx, dst.Pool(), key)
			if err != nil {
				return err
			}
			if _, err := store.CopyToPostgres(ctx, db, dst); err != nil {
				return err
			}
			// The check after: every table the same size, and the copied
			// chain intact with the original's head.
			want, err := store.SQLiteCounts(ctx, db)
			if err != nil {
				return err
			}
			got, err := dst.Counts(ctx)
			if err != nil {
				return err
			}
			var tables []string
			for t := range want {
				tables = append(tables, t)
			}
			sort.Strings(tables)
			for _, t := range tables {
				fmt.Fprintf(out, "%-16s %8d rows\n", t, got[t])
				if got[t] != want[t] {
					return fmt.Errorf("%s: %d rows copied of %d", t, got[t], want[t])
				}
			}
			after, err := dstTrail.Verify(ctx)
			if err != nil {
				return err
			}
			if !after.OK || after.HeadSeq != before.HeadSeq || !bytes.Equal(after.HeadHash, before.HeadHash) {
				return fmt.Errorf("the copied audit chain does not match: %s (head %d %s, want %d %s)", after, after.HeadSeq, after.HeadHash, before.HeadSeq, before.HeadHash)
			}
			fmt.Fprintf(out, "audit chain: %s; head %d %s, the same as in %s\n", after, after.HeadSeq, after.HeadHash, from)
			return nil
		},
	}
	c.Flags().StringVar(&from, "from", "", "the agency's SQLite database (store.path)")
	c.Flags().StringVar(&to, "to", "", "the PostgreSQL connection string (postgres://user@host/db)")
	c.Flags().StringVar(&keyFile, "audit-key-file", "", "the audit chain's HMAC key file, for a keyed chain")
	return c
}
