package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/gateway"
	"github.com/conduit-gateway/conduit/keys"
)

// The Vault key commands: `keys generate --config` makes the agency key
// straight into the configured Vault (the secret never touches this
// machine's disk), `keys vault-import` moves a file key into Vault,
// `keys vault-versions` lists the stored versions, and `keys export
// --config` prints the public certificate. They write, so they need the
// operator's policy (docs/vault-policy-operator.hcl): give an operator's
// token in CONDUIT_VAULT_TOKEN; the gateway's own role only reads.

// vaultFromConfig opens the Vault backend a gateway config names.
func vaultFromConfig(cfgPath string) (*config.Config, *keys.Vault, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, nil, &exitError{exitUsage, err}
	}
	if cfg.Keys.KeyBackend() != config.BackendVault {
		return nil, nil, &exitError{exitUsage, fmt.Errorf("%s: keys.backend is %s, not vault", cfgPath, cfg.Keys.KeyBackend())}
	}
	v, err := keys.NewVault(gateway.VaultConfig(cfg, os.Getenv(vaultTokenEnv), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	if err != nil {
		return nil, nil, &exitError{exitUsage, err}
	}
	return cfg, v, nil
}

// subcommand finds a subcommand by name.
func subcommand(parent *cobra.Command, name string) *cobra.Command {
	for _, c := range parent.Commands() {
		if c.Name() == name {
			return c
		}
	}
	return nil
}

// addVaultKeyCmds adds the Vault subcommands to `conduit keys` and the
// --config forms to its generate and export.
func addVaultKeyCmds(keysCmd *cobra.Command) {
	extendGenerate(subcommand(keysCmd, "generate"))
	extendExport(subcommand(keysCmd, "export"))

	var cfgPath, secret, passFile string
	var newVersion bool
	imp := &cobra.Command{
		Use:   "vault-import --config gateway.yaml --secret PREFIX.key",
		Short: "Move an agency secret key from a file into the configured Vault",
		Long: `vault-import reads the secret key file (decrypting it with --passphrase-file
or CONDUIT_PASSPHRASE) and stores it in the Vault KV v2 secret the config
names, as its first version. If a version exists already it refuses, unless
--new-version: then the key is stored as the next version (check-and-set on
the current one). Delete the file afterwards: from then on the key lives in
Vault only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" || secret == "" {
				return &exitError{exitUsage, errors.New("keys vault-import needs --config and --secret")}
			}
			cfg, v, err := vaultFromConfig(cfgPath)
			if err != nil {
				return err
			}
			id, err := loadIdentity(cmd.Context(), secret, passFile)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			if id.Agency != cfg.Agency {
				return &exitError{exitUsage, fmt.Errorf("%s is the key of %q, the config's gateway is %q", secret, id.Agency, cfg.Agency)}
			}
			cas, err := casFor(cmd.Context(), v, newVersion)
			if err != nil {
				return err
			}
			n, err := v.StoreAt(cmd.Context(), id, cas)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s stored as version %d\n", id.Agency, id.Fingerprint(), n)
			return nil
		},
	}
	imp.Flags().StringVar(&cfgPath, "config", "", "the gateway's config file (keys.backend: vault)")
	imp.Flags().StringVar(&secret, "secret", "", "the secret key file to import")
	imp.Flags().StringVar(&passFile, "passphrase-file", "", "passphrase file for the secret key")
	imp.Flags().BoolVar(&newVersion, "new-version", false, "store as the next version when one exists")

	var listCfg string
	versions := &cobra.Command{
		Use:   "vault-versions --config gateway.yaml",
		Short: "List the versions of the agency key stored in Vault",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, v, err := vaultFromConfig(listCfg)
			if err != nil {
				return err
			}
			vs, err := v.Versions(cmd.Context())
			if err != nil {
				return err
			}
			for _, ver := range vs {
				state, fp, subs := "readable", "-", 0
				if ver.Deleted {
					state = "deleted"
				} else if id, err := v.IdentityVersion(cmd.Context(), ver.Number); err != nil {
					state = "unreadable: " + err.Error()
				} else {
					fp, subs = id.Fingerprint(), len(id.Entity.Subkeys)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d\t%s\t%s\t%d encryption subkeys\t%s\n", ver.Number, ver.Created.UTC().Format(time.RFC3339), fp, subs, state)
			}
			return nil
		},
	}
	versions.Flags().StringVar(&listCfg, "config", "", "the gateway's config file (keys.backend: vault)")
	keysCmd.AddCommand(imp, versions)
}

// casFor is the check-and-set version for a first store: 0 (none may
// exist), or the current version when newVersion allows replacing it.
func casFor(ctx context.Context, v *keys.Vault, newVersion bool) (int, error) {
	cur, err := v.CurrentVersion(ctx)
	switch {
	case errors.Is(err, keys.ErrNoKeyStored):
		return 0, nil
	case err != nil:
		return 0, err
	case cur > 0 && !newVersion:
		return 0, &exitError{exitUsage, fmt.Errorf("a key is stored already (version %d); give --new-version to store the next version, or use conduit keys rotate", cur)}
	}
	return cur, nil
}

// extendGenerate gives `keys generate` a --config flag: the key is made in
// memory and stored straight into the configured Vault; with
// vault.transit the signing key is the Transit key (created with
// --transit-type if it does not exist) and never leaves Vault.
func extendGenerate(gen *cobra.Command) {
	var cfgPath, transitType string
	gen.Flags().StringVar(&cfgPath, "config", "", "store the key in the Vault this gateway config names (keys.backend: vault) instead of files; --agency defaults to the config's")
	gen.Flags().StringVar(&transitType, "transit-type", keys.TransitECDSAP384, "with vault.transit: the type of Transit key to create if it does not exist (ecdsa-p384 or rsa-3072)")
	fileRun := gen.RunE
	gen.RunE = func(cmd *cobra.Command, args []string) error {
		if cfgPath == "" {
			return fileRun(cmd, args)
		}
		agency, _ := cmd.Flags().GetString("agency")
		email, _ := cmd.Flags().GetString("email")
		out, _ := cmd.Flags().GetString("out")
		profile, _ := cmd.Flags().GetString("profile")
		cfg, v, err := vaultFromConfig(cfgPath)
		if err != nil {
			return err
		}
		if agency == "" {
			agency = cfg.Agency
		}
		if agency != cfg.Agency {
			return &exitError{exitUsage, fmt.Errorf("--agency %s, but the config's gateway is %s", agency, cfg.Agency)}
		}
		if email == "" {
			return &exitError{exitUsage, errors.New("keys generate needs --email, the gateway's address")}
		}
		ctx := cmd.Context()
		cas, err := casFor(ctx, v, false)
		if err != nil {
			return err
		}
		var id *keys.Identity
		if cfg.Vault.Transit != nil {
			if err := v.EnsureTransitKey(ctx, transitType); err != nil {
				return err
			}
			id, err = v.GenerateTransit(ctx, agency, email, time.Now())
		} else {
			prof, perr := keys.ParseProfile(profile)
			if perr != nil {
				return &exitError{exitUsage, perr}
			}
			id, err = keys.Generate(agency, email, prof, time.Now())
		}
		if err != nil {
			return err
		}
		n, err := v.StoreAt(ctx, id, cas)
		if err != nil {
			return err
		}
		if out != "" {
			var pub bytes.Buffer
			if err := keys.WritePublic(&pub, id.Entity); err != nil {
				return err
			}
			if err := writeNew(out+".pub.asc", pub.Bytes(), 0o644); err != nil {
				return err
			}
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s %s %s vault version %d\n", agency, keys.ProfileOf(id.Entity), id.Fingerprint(), n)
		return nil
	}
}

// extendExport gives `keys export` a --config flag: the public
// certificate of the key stored in Vault.
func extendExport(export *cobra.Command) {
	var cfgPath string
	var version int
	export.Flags().StringVar(&cfgPath, "config", "", "export the key stored in the Vault this gateway config names")
	export.Flags().IntVar(&version, "version", 0, "with --config: a stored version (default: the current one)")
	fileRun := export.RunE
	export.RunE = func(cmd *cobra.Command, args []string) error {
		if cfgPath == "" {
			return fileRun(cmd, args)
		}
		_, v, err := vaultFromConfig(cfgPath)
		if err != nil {
			return err
		}
		var id *keys.Identity
		if version > 0 {
			id, err = v.IdentityVersion(cmd.Context(), version)
		} else {
			id, err = v.Identity(cmd.Context())
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "%s %s\n", id.Agency, id.Fingerprint())
		return keys.WritePublic(cmd.OutOrStdout(), id.Entity)
	}
}
