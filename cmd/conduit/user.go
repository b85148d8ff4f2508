package main

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/gateway/authlimit"
	"github.com/conduit-gateway/conduit/gateway/store"
)

// newUserCmd builds `conduit user`.
func newUserCmd() *cobra.Command {
	userCmd := &cobra.Command{Use: "user", Short: "Manage submission accounts"}
	userCmd.AddCommand(&cobra.Command{
		Use:   "hash",
		Short: "Read a password on standard input and print its bcrypt hash for the config's users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
			pw := strings.TrimRight(line, "\r\n")
			if pw == "" {
				if err != nil {
					return &exitError{exitUsage, errors.New("no password on standard input")}
				}
				return &exitError{exitUsage, errors.New("the password is empty")}
			}
			h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), string(h))
			return nil
		},
	})
	userCmd.AddCommand(newUserUnlockCmd(), newUserLockoutsCmd())
	return userCmd
}

// newUserUnlockCmd builds `conduit user unlock`: it lifts an account's
// lockout after failed logins, before its time runs out; the running
// gateway sees it at the account's next login.
func newUserUnlockCmd() *cobra.Command {
	var cfgPath, reason, address string
	c := &cobra.Command{
		Use:   "unlock NAME --config FILE --reason TEXT | unlock --address IP --config FILE --reason TEXT",
		Short: "Lift a submission account's (or a client address's) lockout after failed logins",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 1) == (address != "") {
				return &exitError{exitUsage, errors.New("give an account NAME or --address IP, not both")}
			}
			if strings.TrimSpace(reason) == "" {
				return &exitError{exitUsage, errors.New("user unlock needs --reason TEXT: say why (it is kept in the audit trail)")}
			}
			ctx := cmd.Context()
			if c, err := config.Load(cfgPath); err == nil {
				if dsn, _ := c.Store.PostgresDSN(); dsn != "" {
					return &exitError{exitUsage, errors.New("with the PostgreSQL store each gateway process keeps its login lockouts in memory: they end with their time (auth.lockout) or a restart of the gateways")}
				}
			}
			cfg, err := existingDatabase(cfgPath)
			if err != nil {
				return err
			}
			key, what := "", ""
			if address != "" {
				ip, err := netip.ParseAddr(address)
				if err != nil {
					return &exitError{exitUsage, fmt.Errorf("--address %q is not an IP address", address)}
				}
				key, what = authlimit.AddressKey(authlimit.Prefix(ip)), "client address "+authlimit.Prefix(ip).String()
			} else {
				name := args[0]
				if !slices.ContainsFunc(cfg.Users, func(u config.User) bool { return u.Name == name }) {
					return &exitError{exitUsage, fmt.Errorf("%q is not a user in %s", name, cfgPath)}
				}
				key, what = authlimit.AccountKey(name), "account "+name
			}
			locks, err := authlimit.OpenSQLLocks(ctx, cfg.Store.Path)
			if err != nil {
				return err
			}
			defer locks.Close()
			was, err := locks.Unlock(ctx, key)
			if err != nil {
				return err
			}
			ev, err := adminEvent(cfgPath, audit.Event{Kind: audit.AuthUnlocked, Detail: what + ": " + oneLine(reason)})
			if err != nil {
				return err
			}
			st, err := store.OpenSQLite(ctx, cfg.Store.Path)
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.Update(ctx, func(tx store.Tx) error { return tx.Audit(ev) }); err != nil {
				return err
			}
			if err := chainStaged(ctx, cfgPath); err != nil {
				return err
			}
			if was {
				fmt.Fprintf(cmd.OutOrStdout(), "unlocked %s; its failed logins are forgotten.\n", what)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "%s was not locked out; nothing changed.\n", what)
			}
			return nil
		},
	}
	c.Flags().StringVar(&cfgPath, "config", "conduit.yaml", "the gateway's config file")
	c.Flags().StringVar(&reason, "reason", "", "why the lockout is lifted (kept in the audit trail)")
	c.Flags().StringVar(&address, "address", "", "lift a client address's lockout instead of an account's")
	return c
}

// newUserLockoutsCmd builds `conduit user lockouts`.
func newUserLockoutsCmd() *cobra.Command {
	var cfgPath string
	c := &cobra.Command{
		Use:   "lockouts --config FILE",
		Short: "List the accounts and client addresses locked out after failed logins",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, err := existingDatabase(cfgPath)
			if err != nil {
				return err
			}
			locks, err := authlimit.OpenSQLLocks(ctx, cfg.Store.Path)
			if err != nil {
				return err
			}
			defer locks.Close()
			ls, err := locks.List(ctx, time.Now())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if len(ls) == 0 {
				fmt.Fprintln(w, "no lockouts in force.")
			}
			for _, l := range ls {
				fmt.Fprintf(w, "%s\tlocked %s until %s: %s\n", l.Key, l.Locked.UTC().Format(time.RFC3339), l.Until.UTC().Format(time.RFC3339), l.Reason)
			}
			return nil
		},
	}
	c.Flags().StringVar(&cfgPath, "config", "conduit.yaml", "the gateway's config file")
	return c
}
