package main

import (
	"fmt"
	"io"

	"github.com/goccy/go-yaml"
	"github.com/spf13/cobra"

	"github.com/conduit-gateway/conduit/config"
)

// newConfigCmd builds `conduit config`.
func newConfigCmd() *cobra.Command {
	configCmd := &cobra.Command{Use: "config", Short: "Show the gateway's configuration as it is in force"}
	var cfgPath string
	show := &cobra.Command{
		Use:   "show --config FILE",
		Short: "Print the effective configuration, every default filled in, as YAML",
		Long: `Show loads the gateway's config file as conduit serve does (checking it, with
errors that name the file, line and field) and prints the configuration in
force as YAML: every setting the file leaves out appears with its default,
and paths are resolved against the config file's folder. The agency
directory is shown by its file name when it has one. Nothing secret is in
it: the config names key and passphrase files, never their content, and
the users' password hashes are shown as redacted, since the output tends
to travel (a support ticket, a change record).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			return writeEffectiveConfig(cmd.OutOrStdout(), cfg)
		},
	}
	show.Flags().StringVar(&cfgPath, "config", "", "the gateway's config file (required)")
	_ = show.MarkFlagRequired("config")
	configCmd.AddCommand(show)
	return configCmd
}

// redacted stands for a password hash in the shown configuration.
const redacted = "(redacted)"

// writeEffectiveConfig writes cfg in the config file's own form.
func writeEffectiveConfig(w io.Writer, cfg *config.Config) error {
	type shown struct {
		config.Config `yaml:",inline"`
		Directory     any `yaml:"directory"`
	}
	s := shown{Config: *cfg, Directory: cfg.DirectoryFile}
	s.Users = make([]config.User, len(cfg.Users))
	for i, u := range cfg.Users {
		u.PasswordHash = redacted
		s.Users[i] = u
	}
	if cfg.DirectoryFile == cfg.File {
		s.Directory = cfg.Directory
	}
	b, err := yaml.MarshalWithOptions(s, yaml.IndentSequence(true))
	if err != nil {
		return fmt.Errorf("config show: %w", err)
	}
	fmt.Fprintf(w, "# The configuration in force from %s, every default filled in.\n", cfg.File)
	_, err = w.Write(b)
	return err
}
