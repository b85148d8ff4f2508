package main

import (
	"bufio"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"
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
	return userCmd
}
