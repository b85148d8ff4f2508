package main

import (
	"fmt"
	"strings"

	"github.com/conduit-gateway/conduit/envelope"
	"github.com/spf13/cobra"
)

// newLabelCmd builds `conduit label`.
func newLabelCmd() *cobra.Command {
	labelCmd := &cobra.Command{
		Use:   "label",
		Short: "Work with handling labels",
	}
	var explain bool
	check := &cobra.Command{
		Use:   "check LABEL",
		Short: "Validate a handling label and print its canonical form",
		Long: `Check parses a handling label in header form (the value of a Handling-Label
header, as marking tools produce it), validates it and prints its canonical
form, or says exactly which field is wrong and what is allowed.`,
		Example: `  conduit label check 'v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5; source=B; intelligence=2; handling=1; basis=fact; subjects=suspected; purpose=crime; sanitised=yes; originator=met-pio; reference=MET-1; created=2026-11-23T10:00:00Z'`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := envelope.ParseLabel(strings.Join(args, " "))
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			fmt.Fprintln(cmd.OutOrStdout(), l.Canonical())
			if explain {
				for _, line := range l.Describe() {
					fmt.Fprintln(cmd.OutOrStdout(), "  "+line)
				}
			}
			return nil
		},
	}
	check.Flags().BoolVar(&explain, "explain", false, "also print what each field means")
	labelCmd.AddCommand(check)
	return labelCmd
}
