package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/provision"
)

// newInitCmd builds `conduit init`.
func newInitCmd() *cobra.Command {
	var o provision.Options
	var kind string
	c := &cobra.Command{
		Use:   "init DIR --agency ID --kind KIND --mailbox ADDRESS [flags]",
		Short: "Set up this agency's gateway in a new folder",
		Long: `Init sets up an agency's gateway in DIR: its OpenPGP key (encrypted at rest,
the passphrase in keys/passphrase), a TLS key with a certificate request naming
the agency and the gateway host (or a certificate, with --ca-cert and --ca-key),
a commented conduit.yaml, directory.yaml and policy.yaml, the folders the
gateway writes, a first administrator account, and AGENCY.entry.yaml with
AGENCY.pub.asc: the directory entry and certificate to send to partners.
It prints the next steps.`,
		Example: `  conduit init /etc/conduit --agency hmp-northgate --kind prison --region north-east \
    --host conduit.hmp-northgate.example --mailbox intel@hmp-northgate.example \
    --mailbox governing-governor=governor@hmp-northgate.example --lmtp unix:/run/dovecot/lmtp`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Dir, o.Kind = args[0], config.Kind(kind)
			r, err := provision.Init(o)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Set up %s in %s.\n\n", o.Agency, r.Dir)
			fmt.Fprintf(w, "  OpenPGP fingerprint  %s\n  TLS pin              %s\n  gateway              %s\n  directory entry      %s\n  certificate          %s\n\n",
				r.Fingerprint, r.TLSPin, r.Gateway, r.Entry, r.PublicKey)
			fmt.Fprintln(w, "Next:")
			for i, s := range r.Steps {
				fmt.Fprintf(w, "  %d. %s\n", i+1, s)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.Agency, "agency", "", "this agency's id, as partners know it (hmp-northgate)")
	f.StringVar(&kind, "kind", "", "the agency's kind (pio, prison, ccu-regional, ...)")
	f.StringVar(&o.Name, "name", "", "the agency's name (default: the id)")
	f.StringVar(&o.Region, "region", "", "region (prisons, RPIUs, probation)")
	f.StringSliceVar(&o.Covers, "covers", nil, "regions a regional CCU covers")
	f.StringVar(&o.Force, "force", "", "the police force (a PIO or FIB; a prison without a PIO)")
	f.StringSliceVar(&o.Serves, "serves", nil, "the prisons a PIO unit serves")
	f.StringVar(&o.Host, "host", "", "the gateway's host name as partners reach it (default: this machine's)")
	f.StringVar(&o.Inbound, "inbound", "", `listen address for partner gateways (default ":25")`)
	f.StringVar(&o.Submission, "submission", "", `listen address for staff and the agency's mail server (default ":587")`)
	f.StringVar(&o.Admin, "admin", "", `listen address of /metrics and health checks (default "127.0.0.1:9025")`)
	f.StringArrayVar(&o.Mailboxes, "mailbox", nil, "a mailbox: ADDRESS for the intake, FUNCTION=ADDRESS for others (repeat)")
	f.StringVar(&o.Trained, "trained", "", "date the mailbox holders last completed data-protection training (YYYY-MM-DD)")
	f.StringVar(&o.State, "state", "", `the folder the gateway writes: store, pid file, Maildir (default "var" in DIR; /var/lib/conduit with the systemd unit)`)
	f.StringVar(&o.LMTP, "lmtp", "", "deliver received packages by LMTP (unix:/run/dovecot/lmtp or host:port) instead of a Maildir")
	f.StringVar(&o.Profile, "profile", "", "OpenPGP profile: rfc4880 (default) or rfc9580")
	f.StringVar(&o.CACert, "ca-cert", "", "PEM certificate of the CA that signs the gateway certificate (with --ca-key)")
	f.StringVar(&o.CAKey, "ca-key", "", "PEM private key of that CA")
	f.DurationVar(&o.Validity, "validity", 0, "validity of a certificate issued with --ca-cert (default 8760h)")
	f.StringVar(&o.AdminUser, "admin-user", "", `the first administrator's account name (default "admin")`)
	f.StringVar(&o.AdminAddress, "admin-address", "", "the administrator's mailbox (default: the intake mailbox)")
	f.StringVar(&o.RelayUser, "relay-account", "", "add a relay account with this name for the agency's mail server (Postfix)")
	f.StringVar(&o.VaultAddress, "vault", "", "keep the secret key in Vault at this address (then conduit keys vault-import)")
	c.MarkFlagRequired("agency")
	c.MarkFlagRequired("kind")
	return c
}
