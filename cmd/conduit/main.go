// Command conduit is the Conduit gateway: one binary for the daemon, the
// sender's tools and the administrator's tools.
//
// Each command lives in a file of its own with a constructor that builds
// it and holds its flag values in the constructor's closure. newRootCmd
// builds the whole tree afresh, so every invocation (and every in-process
// test) starts from the flags' defaults with no state left over.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
)

// newRootCmd builds a fresh `conduit` command tree.
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "conduit",
		Short: "Conduit: a secure message-exchange gateway for prison intelligence",
		Long: `Conduit wraps intelligence packages in signed, encrypted envelopes that carry
their handling marking, enforces the agencies' sharing rules, and relays them
between agency gateways over SMTP with mandatory TLS.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newInitCmd(),
		newServeCmd(),
		newKeysCmd(),
		sealCommand(),
		openCommand(),
		newLabelCmd(),
		newConfigCmd(),
		newPolicyCmd(),
		newQueueCmd(),
		newQuarantineCmd(),
		newTriageCmd(),
		newDeadlinesCmd(),
		newPurgeCmd(),
		newNoticeCmd(),
		newAuditCmd(),
		newUserCmd(),
		newDemoCmd(),
		newStoreCmd(),
		newSendCmd(),
	)
	return root
}

// exitError carries a specific exit status out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err := newRootCmd().ExecuteContext(context.Background()); err != nil {
		// One line, so scripts and people can read the reason.
		fmt.Fprintln(os.Stderr, "conduit: "+err.Error())
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}
