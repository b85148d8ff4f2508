package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway"
	"github.com/conduit-gateway/conduit/policy"
)

// newNoticeCmd builds `conduit notice`.
func newNoticeCmd() *cobra.Command {
	var cfgPath, kind, pkg, textFile, label, originator, from string
	send := &cobra.Command{
		Use:   "send --config FILE --kind KIND --package ID --text FILE --label LABEL [--originator AGENCY]",
		Short: "Send a rectification, breach or subject-access notice about a package",
		Long: `Send seals a notice about a package already exchanged and queues it for the
running gateway, which sends it and records each destination's receipt
(MoU Annex A: Accuracy, Data loss, Subject rights).

  rectification          from the originator: to every agency the package was
                         sent to; from anyone else: to the originator
  breach                 to the originator, immediately
  subject-access         consultation before answering a subject access
                         request, to the originator
  unlawful-transmission  to the originator, immediately

The notice is marked like any package (--label, header form; created is filled
in). --originator is the package's originator when it is not this agency. The
text file is sealed; it is never logged.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			switch kind {
			case policy.NoticeRectification, policy.NoticeBreach, policy.NoticeSubjectAccess, policy.NoticeUnlawful, "sar":
			default:
				return &exitError{exitUsage, fmt.Errorf("--kind %q: one of rectification, breach, subject-access (sar), unlawful-transmission", kind)}
			}
			if kind == "sar" {
				kind = policy.NoticeSubjectAccess
			}
			if pkg == "" || textFile == "" || label == "" {
				return &exitError{exitUsage, errors.New("notice send needs --package, --text and --label")}
			}
			pol, cfg, err := policy.Load(cfgPath)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			// The configured legacy-marking table, as everywhere.
			l, err := envelope.ParseLabelPartialWith(label, cfg.Legacy())
			if err != nil {
				return &exitError{exitCheck, err}
			}
			text, err := os.Open(textFile)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			defer text.Close()
			if originator == "" {
				originator = cfg.Agency
			}
			st, err := openStoreCfg(ctx, cfg)
			if err != nil {
				return err
			}
			defer st.Close()
			trail, err := openTrail(ctx, cfg)
			if err != nil {
				return err
			}
			defer trail.Close()
			g, err := gateway.New(ctx, cfg, gatewayOptions(gateway.Options{Store: st, Audit: trail, Policy: pol}))
			if err != nil {
				return &exitError{exitUsage, err}
			}
			defer g.Close()
			if from == "" {
				from = administrator()
			}
			id, dests, err := g.SendNotice(ctx, gateway.Notice{Kind: kind, PackageID: pkg, Originator: originator, Label: l, Text: text, Sender: from})
			if err != nil {
				return &exitError{exitCheck, err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "notice %s (%s of package %s) queued for %s; their receipts show in conduit queue list --package %s\n",
				id, kind, pkg, strings.Join(dests, ", "), id)
			return nil
		},
	}
	send.Flags().StringVar(&cfgPath, "config", "", "the gateway's config file (required)")
	send.Flags().StringVar(&kind, "kind", "", "rectification, breach, subject-access (sar) or unlawful-transmission")
	send.Flags().StringVar(&pkg, "package", "", "the package the notice concerns")
	send.Flags().StringVar(&textFile, "text", "", "file with the notice's text")
	send.Flags().StringVar(&label, "label", "", "the notice's handling label (header form)")
	send.Flags().StringVar(&originator, "originator", "", "the package's originator, when not this agency")
	send.Flags().StringVar(&from, "from", "", "the sender's address (default: the administrator)")
	_ = send.MarkFlagRequired("config")
	notice := &cobra.Command{Use: "notice", Short: "Notices about packages already exchanged"}
	notice.AddCommand(send)
	return notice
}
