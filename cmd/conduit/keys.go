package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/gateway"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/policy"
)

// The key lifecycle: this agency's key is rotated (a new encryption
// subkey under the same pinned fingerprint) or revoked; partner key
// changes wait for an administrator's decision.

// addKeyLifecycleCmds adds the lifecycle subcommands to `conduit keys`.
func addKeyLifecycleCmds(keysCmd *cobra.Command) {
	var cfgPath, reason, lifetime, subkey string
	var compromised bool

	backendOf := func(ctx context.Context) (*config.Config, keys.Backend, *keys.Identity, error) {
		cfg, err := config.Load(cfgPath)
		if err != nil {
			return nil, nil, nil, &exitError{exitUsage, err}
		}
		pass, err := readPassphrase(cfg.Keys.PassphraseFile)
		if err != nil {
			return nil, nil, nil, &exitError{exitUsage, err}
		}
		be, err := gateway.OpenKeyBackend(ctx, cfg, pass, os.Getenv(vaultTokenEnv), nil)
		if err != nil {
			return nil, nil, nil, err
		}
		id, err := be.Identity(ctx)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("this gateway's key: %w", err)
		}
		return cfg, be, id, nil
	}

	rotate := &cobra.Command{
		Use:   "rotate --config FILE [--lifetime DURATION]",
		Short: "Add a new encryption subkey; the old one is kept for packages in flight",
		Long: `Rotate adds a new encryption subkey to this agency's key and stores it in the
key backend (the key file, or a new version in Vault). The primary key and so
the fingerprint partners pin do not change, and every earlier subkey is kept,
so packages sealed to the old one still open. The running gateway is
signalled (pid-file), reloads the key and sends the updated certificate to
every partner in a key-change notice signed by the pinned key; partners take
it without an administrator, since the pinned key signed it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			life, err := parseLifetime(lifetime)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			cfg, be, id, err := backendOf(ctx)
			if err != nil {
				return err
			}
			nid, err := keys.Rotate(id, time.Now(), life)
			if err != nil {
				return &exitError{exitCheck, err}
			}
			if err := be.Store(ctx, nid); err != nil {
				return fmt.Errorf("store the rotated key: %w", err)
			}
			st := keys.StatusOf(nid.Entity, time.Now())
			sub := st.Subkeys[len(st.Subkeys)-1]
			detail := fmt.Sprintf("rotated: new encryption subkey %s", sub.Fingerprint)
			if !sub.Expires.IsZero() {
				detail += ", expires " + sub.Expires.UTC().Format(time.RFC3339)
			}
			if err := keyAudit(ctx, cfg, "rotate", detail); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s; %d encryption subkeys kept\n", nid.Fingerprint(), detail, len(st.Subkeys))
			return signalGateway(cmd.OutOrStdout(), cfg)
		},
	}
	rotate.Flags().StringVar(&lifetime, "lifetime", "", `how long the new subkey is valid ("8760h", "365d"; default: no expiry)`)

	revoke := &cobra.Command{
		Use:   "revoke --config FILE --reason TEXT [--subkey FINGERPRINT] [--compromised]",
		Short: "Revoke this agency's key, or one encryption subkey, and tell every partner",
		Long: `With --subkey, revokes one encryption subkey (rotate first: another valid one
must remain); the running gateway reloads and announces the certificate.
Without it, revokes the agency's key itself: the revoked certificate is
queued to every partner signed while the key is still valid, then stored.
Partners then hold every delivery to this agency, and this gateway seals
nothing more, until a new key is generated and the partners approve it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if strings.TrimSpace(reason) == "" {
				return &exitError{exitUsage, errors.New("keys revoke needs --reason TEXT: partners see it")}
			}
			cfg, be, id, err := backendOf(ctx)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if subkey != "" {
				nid, err := keys.RevokeSubkey(id, subkey, oneLine(reason), !compromised, time.Now())
				if err != nil {
					return &exitError{exitCheck, err}
				}
				if err := be.Store(ctx, nid); err != nil {
					return fmt.Errorf("store the key: %w", err)
				}
				if err := keyAudit(ctx, cfg, "revoke", "subkey "+keys.NormalizeFingerprint(subkey)+" revoked: "+oneLine(reason)); err != nil {
					return err
				}
				fmt.Fprintf(out, "%s: subkey %s revoked\n", nid.Fingerprint(), keys.NormalizeFingerprint(subkey))
				return signalGateway(out, cfg)
			}
			nid, err := keys.Revoke(id, oneLine(reason), compromised, time.Now())
			if err != nil {
				return &exitError{exitCheck, err}
			}
			g, closeAll, err := cliGateway(ctx, cfgPath)
			if err != nil {
				return err
			}
			defer closeAll()
			dests, err := g.AnnounceKey(ctx, nid, "revoked: "+oneLine(reason))
			if err != nil {
				return fmt.Errorf("announce the revocation (nothing revoked yet): %w", err)
			}
			if err := be.Store(ctx, nid); err != nil {
				return fmt.Errorf("store the revoked key (the notices are queued): %w", err)
			}
			if err := keyAudit(ctx, cfg, "revoke", "key "+nid.Fingerprint()+" revoked: "+oneLine(reason)); err != nil {
				return err
			}
			fmt.Fprintf(out, "%s revoked; the revocation is queued for %s\n", nid.Fingerprint(), strings.Join(dests, ", "))
			return signalGateway(out, cfg)
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "why (partners see it)")
	revoke.Flags().StringVar(&subkey, "subkey", "", "revoke only this encryption subkey (fingerprint or key id)")
	revoke.Flags().BoolVar(&compromised, "compromised", false, "the key was compromised (not merely retired or superseded)")

	list := &cobra.Command{
		Use:   "list --config FILE",
		Short: "This agency's key and every partner's: fingerprint, subkeys, expiry, pending changes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			g, closeAll, err := cliGateway(ctx, cfgPath)
			if err != nil {
				return err
			}
			defer closeAll()
			now := time.Now()
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "AGENCY\tFINGERPRINT\tSUBKEYS\tEXPIRES\tSTATE")
			for _, k := range g.KeysInForce() {
				st := keys.StatusOf(k.Entity, now)
				exp := "never"
				if !st.Expires.IsZero() {
					exp = st.Expires.UTC().Format("2006-01-02")
				}
				state := "usable"
				if st.Usable != nil {
					state = st.Usable.Error()
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", k.Agency, st.Fingerprint, len(st.Subkeys), exp, state)
			}
			tw.Flush()
			for _, k := range g.KeysInForce() {
				if w := k.NameWarning(k.Agency); w != "" {
					fmt.Fprintln(cmd.OutOrStdout(), "warning: "+w)
				}
			}
			bad := g.PartnersUnusable()
			for _, a := range slices.Sorted(maps.Keys(bad)) {
				fmt.Fprintf(cmd.OutOrStdout(), "warning: %s has no usable key: %s; packages for it are held\n", a, bad[a])
			}
			return printPending(ctx, cmd.OutOrStdout(), g.Store())
		},
	}

	pending := &cobra.Command{
		Use:   "pending --config FILE",
		Short: "Partner key changes waiting for an administrator",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := openStore(cmd.Context(), cfgPath)
			if err != nil {
				return err
			}
			defer st.Close()
			return printPending(cmd.Context(), cmd.OutOrStdout(), st)
		},
	}

	var offerAgency string
	offer := &cobra.Command{
		Use:   "offer CERT-FILE --config FILE",
		Short: "Record a partner certificate received out of band: an update is taken, a new key waits for approval",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			f, err := os.Open(args[0])
			if err != nil {
				return &exitError{exitUsage, err}
			}
			c, err := keys.ReadCert(f)
			f.Close()
			if err != nil {
				return &exitError{exitCheck, err}
			}
			// The agency is the operator's to say: a key made with gpg or sq
			// for a partner names no agency id in its user ID.
			if offerAgency != "" {
				c.Agency = offerAgency
			}
			if c.Agency == "" {
				return &exitError{exitUsage, fmt.Errorf("%s: certificate %s names no agency: give --agency", args[0], c.Fingerprint())}
			}
			g, closeAll, err := cliGateway(ctx, cfgPath)
			if err != nil {
				return err
			}
			defer closeAll()
			rec, err := g.OfferPartnerCert(ctx, c, "operator "+administrator()+": "+args[0])
			if err != nil {
				return &exitError{exitCheck, err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "key %s of %s is %s\n", rec.Fingerprint, rec.Agency, rec.State)
			return nil
		},
	}

	offer.Flags().StringVar(&offerAgency, "agency", "", "the agency the certificate is for (default: the agency its user ID names)")

	decide := func(verb string, state store.KeyState) *cobra.Command {
		var why string
		c := &cobra.Command{
			Use:   verb + " AGENCY FINGERPRINT --config FILE --reason TEXT",
			Short: map[string]string{"approve": "Put a pending partner key in force (check it with the partner first)", "reject": "Refuse a pending partner key"}[verb],
			Args:  cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx := cmd.Context()
				if strings.TrimSpace(why) == "" {
					return &exitError{exitUsage, fmt.Errorf("keys %s needs --reason TEXT: how the key was checked with the partner (it is kept with the record)", verb)}
				}
				st, err := openStore(ctx, cfgPath)
				if err != nil {
					return err
				}
				defer st.Close()
				agency, fp := args[0], keys.NormalizeFingerprint(args[1])
				who := administrator()
				// The decision and its audit event are one transaction.
				ev, err := adminEvent(cfgPath, audit.Event{Kind: audit.KeyChange, Destination: agency, Rule: verb,
					Detail: fmt.Sprintf("key %s of %s %sd: %s", fp, agency, verb, oneLine(why))})
				if err != nil {
					return err
				}
				err = st.Update(ctx, func(tx store.Tx) error {
					if _, err := tx.DecidePartnerKey(agency, fp, state, who, oneLine(why)); err != nil {
						return err
					}
					return tx.Audit(ev)
				})
				if errors.Is(err, store.ErrKeyNotPending) {
					return &exitError{exitUsage, fmt.Errorf("%s has no pending key %s (see conduit keys pending)", agency, fp)}
				} else if err != nil {
					return err
				}
				adminLog(ctx, "partner key "+verb, "partner", agency, "fingerprint", fp, "by", who)
				if err := chainStaged(ctx, cfgPath); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "key %s of %s %sd by %s; the running gateway takes it within seconds\n", fp, agency, verb, who)
				return nil
			},
		}
		c.Flags().StringVar(&why, "reason", "", "how the key was checked (recorded)")
		return c
	}

	for _, c := range []*cobra.Command{rotate, revoke, list, pending, offer, decide("approve", store.KeyApproved), decide("reject", store.KeyRejected)} {
		c.Flags().StringVar(&cfgPath, "config", "", "the gateway's config file (required)")
		_ = c.MarkFlagRequired("config")
		keysCmd.AddCommand(c)
	}
}

func printPending(ctx context.Context, w io.Writer, st store.PartnerKeys) error {
	ks, err := st.ListPartnerKeys(ctx, "", store.KeyPending)
	if err != nil {
		return err
	}
	if len(ks) == 0 {
		fmt.Fprintln(w, "no partner key changes pending")
		return nil
	}
	fmt.Fprintf(w, "%d partner key change(s) pending: check each fingerprint with the partner by a trusted channel, then approve or reject\n", len(ks))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENCY\tNEW FINGERPRINT\tPINNED NOW\tSEEN\tEXPIRES\tSOURCE")
	for _, k := range ks {
		exp := "?"
		if c, err := keys.ReadCert(strings.NewReader(string(k.Cert))); err == nil {
			if st := keys.StatusOf(c.Entity, time.Now()); st.Expires.IsZero() {
				exp = "never"
			} else {
				exp = st.Expires.UTC().Format("2006-01-02")
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.Agency, k.Fingerprint, orDash(k.Replaces), k.Seen.Format(time.RFC3339), exp, k.Source)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseLifetime reads a Go duration, or a number of days ("365d").
func parseLifetime(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	var days int
	if n, err := fmt.Sscanf(s, "%dd", &days); err == nil && n == 1 && fmt.Sprintf("%dd", days) == s {
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--lifetime %q: give a positive duration such as 8760h or 365d", s)
	}
	return d, nil
}

// keyAudit records a change of this agency's key in its audit trail. The
// key lives outside the store (a file, Vault), so the event is appended
// after the change; a trail that cannot be written is an error the
// administrator sees.
func keyAudit(ctx context.Context, cfg *config.Config, rule, detail string) error {
	who := administrator()
	adminLog(ctx, "own key "+rule, "by", who)
	a, err := openAudit(ctx, cfg.File, "")
	if err != nil {
		return fmt.Errorf("the key was changed but the audit trail cannot be opened: %w", err)
	}
	defer a.Close()
	if _, err := a.Append(ctx, audit.Event{Agency: cfg.Agency, Kind: audit.KeyChange, Actor: who, Time: time.Now().UTC(), Rule: rule, Detail: detail}); err != nil {
		return fmt.Errorf("the key was changed but not audited: %w", err)
	}
	return nil
}

// signalGateway tells the running gateway (pid-file) to reload its key.
func signalGateway(w io.Writer, cfg *config.Config) error {
	if cfg.PIDFile == "" {
		fmt.Fprintln(w, "no pid-file in the config: restart the gateway, or send it SIGHUP, to take the new key")
		return nil
	}
	pid, err := readPID(cfg.PIDFile)
	if err != nil {
		fmt.Fprintf(w, "no running gateway found (%v): it takes the key when it starts\n", err)
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return &exitError{code: 1, err: fmt.Errorf("signal gateway (pid %d from %s): %w", pid, cfg.PIDFile, err)}
	}
	fmt.Fprintf(w, "sent SIGHUP to the gateway (pid %d): it reloads the key and announces it to its partners\n", pid)
	return nil
}

// cliGateway is a gateway for a command that needs the keys and the
// store, without listening (like notice send).
func cliGateway(ctx context.Context, cfgPath string) (*gateway.Gateway, func(), error) {
	pol, cfg, err := policy.Load(cfgPath)
	if err != nil {
		return nil, nil, &exitError{exitUsage, err}
	}
	st, err := openStoreCfg(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	trail, err := openTrail(ctx, cfg)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	g, err := gateway.New(ctx, cfg, gatewayOptions(gateway.Options{Store: st, Audit: trail, Policy: pol}))
	if err != nil {
		trail.Close()
		st.Close()
		return nil, nil, &exitError{exitUsage, err}
	}
	return g, func() { g.Close(); trail.Close(); st.Close() }, nil
}
