package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/marking"
)

// Exit statuses of seal and open, so scripts can branch on the failure.
const (
	exitUsage = 2 // bad arguments or input files
	exitCheck = 3 // an envelope check failed (open) or the label was refused (seal)
)

func readPassphrase(path string) ([]byte, error) {
	if path == "" {
		if v := os.Getenv(passphraseEnv); v != "" {
			return []byte(v), nil
		}
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("passphrase file: %w", err)
	}
	return bytes.TrimRight(b, "\r\n"), nil
}

func loadIdentity(ctx context.Context, path, passFile string) (*keys.Identity, error) {
	pass, err := readPassphrase(passFile)
	if err != nil {
		return nil, err
	}
	f := &keys.File{Path: path, Passphrase: pass}
	return f.Identity(ctx)
}

func loadCert(path string) (*keys.Cert, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	defer f.Close()
	c, err := keys.ReadCert(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// newKeysCmd builds `conduit keys`: generate and export here, the
// lifecycle subcommands in keys.go, the Vault ones in keys_vault.go.
func newKeysCmd() *cobra.Command {
	keysCmd := &cobra.Command{Use: "keys", Short: "Agency keys: generate, export, rotate, revoke; partner key changes"}

	var agency, email, out, passFile, profile string
	gen := &cobra.Command{
		Use:   "generate --agency ID --email ADDR --out PREFIX",
		Short: "Generate an agency identity: PREFIX.pub.asc and PREFIX.key",
		Long: `Generate creates this agency's OpenPGP identity (a signing primary key and an
encryption subkey) and writes PREFIX.pub.asc, the public certificate to give
to partner agencies, and PREFIX.key, the secret key. With --passphrase-file
(or CONDUIT_PASSPHRASE) the secret key is encrypted at rest; without one it
is written readable by its owner only, and a warning says so.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if agency == "" || email == "" || out == "" {
				return &exitError{exitUsage, errors.New("keys generate needs --agency, --email and --out")}
			}
			if !envelope.IsAgencyID(agency) {
				return &exitError{exitUsage, fmt.Errorf("--agency %q is not an agency id (lower-case letters, digits, hyphens)", agency)}
			}
			prof, err := keys.ParseProfile(profile)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			pass, err := readPassphrase(passFile)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			id, err := keys.Generate(agency, email, prof, time.Now())
			if err != nil {
				return err
			}
			var sec, pub bytes.Buffer
			if err := id.WriteSecret(&sec, pass); err != nil {
				return err
			}
			if err := keys.WritePublic(&pub, id.Entity); err != nil {
				return err
			}
			if err := writeNew(out+".key", sec.Bytes(), 0o600); err != nil {
				return err
			}
			if err := writeNew(out+".pub.asc", pub.Bytes(), 0o644); err != nil {
				return err
			}
			if len(pass) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+out+".key is NOT encrypted at rest; use --passphrase-file for a key that leaves this machine")
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s %s\n", agency, prof, id.Fingerprint())
			return nil
		},
	}
	gen.Flags().StringVar(&agency, "agency", "", "this agency's directory id, e.g. met-pio")
	gen.Flags().StringVar(&email, "email", "", "the gateway's address, e.g. conduit@met.example")
	gen.Flags().StringVar(&out, "out", "", "path prefix for PREFIX.pub.asc and PREFIX.key")
	gen.Flags().StringVar(&passFile, "passphrase-file", "", "file holding the passphrase that encrypts the secret key")
	gen.Flags().StringVar(&profile, "profile", "rfc4880", "rfc4880 (v4 keys, GnuPG 2.2 and Sequoia) or rfc9580 (v6 keys, AEAD)")

	var exportKey, exportPass string
	export := &cobra.Command{
		Use:   "export --key PREFIX.key",
		Short: "Print the public certificate of a secret key, with its fingerprint",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, err := loadIdentity(cmd.Context(), exportKey, exportPass)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%s %s\n", id.Agency, id.Fingerprint())
			return keys.WritePublic(cmd.OutOrStdout(), id.Entity)
		},
	}
	export.Flags().StringVar(&exportKey, "key", "", "secret key file")
	export.Flags().StringVar(&exportPass, "passphrase-file", "", "passphrase file for the secret key")
	keysCmd.AddCommand(gen, export)
	addKeyLifecycleCmds(keysCmd)
	addVaultKeyCmds(keysCmd)
	return keysCmd
}

// writeNew writes a file that must not exist yet: generating keys over an
// agency's existing identity would strand every package in flight.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return &exitError{exitUsage, fmt.Errorf("write %s: %w", path, err)}
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func sealCommand() *cobra.Command {
	var signer, passFile, label, manifestPath, profile, pkgID string
	var recipients, agencies []string
	var plain bool
	c := &cobra.Command{
		Use:   "seal --signer PREFIX.key --recipient CERT.asc [--recipient CERT.asc ...] --label LABEL < message.eml > sealed.eml",
		Short: "Sign and encrypt a message into a Conduit envelope",
		Long: `Seal reads an RFC 5322 message on standard input and writes a PGP/MIME
envelope (RFC 3156, signed then encrypted) on standard output. The message's
headers are protected inside (RFC 9788); outside only the marking of the
label and an opaque package id are visible.

The label is given in its header form (see "conduit label check"), or taken
from a package manifest (--manifest, the YAML package file), whose subjects,
risk flags and topic then travel inside the envelope.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if signer == "" || len(recipients) == 0 {
				return &exitError{exitUsage, errors.New("seal needs --signer and at least one --recipient")}
			}
			id, err := loadIdentity(ctx, signer, passFile)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			p := envelope.SealParams{Signer: id, PackageID: pkgID, Plain: plain}
			if profile != "" {
				if p.Profile, err = keys.ParseProfile(profile); err != nil {
					return &exitError{exitUsage, err}
				}
			}
			if len(agencies) > 0 && len(agencies) != len(recipients) {
				return &exitError{exitUsage, fmt.Errorf("--agency is given %d times for %d --recipient certificates: give one per recipient, in the same order", len(agencies), len(recipients))}
			}
			for i, r := range recipients {
				c, err := loadCert(r)
				if err != nil {
					return &exitError{exitUsage, err}
				}
				// Any valid encryption-capable certificate will do, whatever
				// its user ID says (a partner's key made by gpg or sq); the
				// agency it is for is --agency's to say, where it matters.
				if err := c.Usable(time.Now()); err != nil {
					return &exitError{exitUsage, fmt.Errorf("%s: certificate %s cannot be encrypted to: %w", r, c.Fingerprint(), err)}
				}
				if len(agencies) > 0 {
					if !envelope.IsAgencyID(agencies[i]) {
						return &exitError{exitUsage, fmt.Errorf("--agency %q is not an agency id (lower-case letters, digits, hyphens)", agencies[i])}
					}
					c.Agency = agencies[i]
				}
				if w := c.NameWarning(c.Agency); w != "" {
					fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+w)
				}
				p.Recipients = append(p.Recipients, c)
			}
			if manifestPath != "" {
				f, err := os.Open(manifestPath)
				if err != nil {
					return &exitError{exitUsage, err}
				}
				m, err := envelope.ParseManifest(f)
				f.Close()
				if err != nil {
					return &exitError{exitCheck, fmt.Errorf("%s: %w", manifestPath, err)}
				}
				p.Manifest, p.Label = m, m.Label
			}
			if label != "" {
				// Seal fills in a missing created time and then checks the
				// label whole.
				l, err := envelope.ParseLabelPartial(label)
				if err != nil {
					return &exitError{exitCheck, err}
				}
				p.Label = l
			}
			if p.Label.Classification == "" {
				return &exitError{exitUsage, errors.New("seal needs --label or --manifest: a package is never sent unmarked")}
			}
			// Seal into memory-free streaming output, but only commit it to
			// stdout as it is produced: a failure leaves a partial file,
			// which the non-zero exit status tells the caller to discard.
			out := bufio.NewWriter(cmd.OutOrStdout())
			s, err := envelope.Seal(ctx, out, cmd.InOrStdin(), p)
			if err != nil {
				var le *envelope.LabelError
				if errors.As(err, &le) || errors.Is(err, envelope.ErrProfileMismatch) {
					return &exitError{exitCheck, err}
				}
				return err
			}
			if err := out.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "sealed package %s (%s) for %s\n", s.PackageID, p.Label.Marking(), strings.Join(recipientAgencies(p.Recipients), ", "))
			return nil
		},
	}
	c.Flags().StringVar(&signer, "signer", "", "this agency's secret key (PREFIX.key)")
	c.Flags().StringVar(&passFile, "passphrase-file", "", "passphrase file for the secret key (or CONDUIT_PASSPHRASE)")
	c.Flags().StringArrayVar(&recipients, "recipient", nil, "a receiving agency's certificate (repeatable)")
	c.Flags().StringArrayVar(&agencies, "agency", nil, "the agency id each --recipient certificate is for, in the same order (default: the agency its user ID names, if any)")
	c.Flags().StringVar(&label, "label", "", "the handling label in header form; created defaults to now")
	c.Flags().StringVar(&manifestPath, "manifest", "", "a package manifest (YAML) whose label, subjects, risk and topic to seal")
	c.Flags().StringVar(&profile, "profile", "", "rfc4880 or rfc9580 (default: the signer key's)")
	c.Flags().StringVar(&pkgID, "package-id", "", "the opaque package id (default: random)")
	c.Flags().BoolVar(&plain, "plain", false, "standard PGP/MIME for a partner without Conduit: no manifest part")
	return c
}

func writeManifest(path string, m *envelope.Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

func recipientAgencies(cs []*keys.Cert) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Label()
	}
	return out
}

func openCommand() *cobra.Command {
	var key, passFile, manifestOut string
	var senders, senderAgency []string
	var plain bool
	var maxAge time.Duration
	c := &cobra.Command{
		Use:   "open --key PREFIX.key --sender CERT.asc < sealed.eml > opened.eml",
		Short: "Decrypt and verify a Conduit envelope",
		Long: `Open reads a PGP/MIME envelope on standard input, decrypts it, and checks it:
integrity protection present and intact, signed by the pinned key of the
agency named as originator, inner label valid and equal to the outer
marking, signed date within the clock window. Only when every check passes
is the opened message written to standard output, with a Conduit-Verified
header naming the signer. On any failure nothing is written, the reason is
printed on one line, and the exit status is 3.

Each --sender certificate is pinned for the agency given by --sender-agency
(one per --sender, in order), or else the agency its user ID names. The pin,
not the user ID, decides whose signature it is.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if key == "" || len(senders) == 0 {
				return &exitError{exitUsage, errors.New("open needs --key and at least one --sender")}
			}
			id, err := loadIdentity(ctx, key, passFile)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			if len(senderAgency) > 0 && len(senderAgency) != len(senders) {
				return &exitError{exitUsage, fmt.Errorf("--sender-agency is given %d times for %d --sender certificates: give one per sender, in the same order", len(senderAgency), len(senders))}
			}
			partners := keys.NewPartners()
			for i, s := range senders {
				c, err := loadCert(s)
				if err != nil {
					return &exitError{exitUsage, err}
				}
				// The pin binds the key to the agency (here: the operator
				// handing over the file, for the agency named with it).
				agency := c.Agency
				if len(senderAgency) > 0 {
					agency = senderAgency[i]
				}
				if err := partners.Add(c, agency, ""); err != nil {
					return &exitError{exitUsage, fmt.Errorf("%s: %w (give --sender-agency)", s, err)}
				}
				if w := c.NameWarning(agency); w != "" {
					fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+w)
				}
			}
			// Open writes nothing until every check has passed, so stdout
			// can take the message as it streams out of the spool.
			out := bufio.NewWriter(cmd.OutOrStdout())
			op := envelope.OpenParams{Identity: id, Partners: partners, MaxAge: maxAge, SubjectMarking: subjectMarking(nil)}
			open := envelope.Open
			if plain {
				open = envelope.OpenPlain
			}
			o, err := open(ctx, out, cmd.InOrStdin(), op)
			if err != nil {
				var ce *envelope.CheckError
				if errors.As(err, &ce) {
					return &exitError{exitCheck, err}
				}
				return err
			}
			if err := out.Flush(); err != nil {
				return err
			}
			if manifestOut != "" {
				if err := writeManifest(manifestOut, &o.Manifest); err != nil {
					return err
				}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "verified: package %s signed by %s (%s); label %s\n",
				o.PackageID, o.Signer.Agency, o.Signer.Fingerprint, o.Label.Marking())
			if err := o.Label.Validate(); err != nil {
				// A plain PGP/MIME partner may send a marking only; the
				// sharing policy refuses an incomplete label.
				fmt.Fprintf(cmd.ErrOrStderr(), "note: the label is incomplete (%v); a gateway's inbound policy refuses it (label-required)\n", err)
			}
			return nil
		},
	}
	c.Flags().StringVar(&key, "key", "", "this agency's secret key (PREFIX.key)")
	c.Flags().StringVar(&passFile, "passphrase-file", "", "passphrase file for the secret key (or CONDUIT_PASSPHRASE)")
	c.Flags().StringArrayVar(&senders, "sender", nil, "a sending agency's certificate to pin (repeatable)")
	c.Flags().StringArrayVar(&senderAgency, "sender-agency", nil, "the agency each --sender certificate is pinned for, in the same order (default: the agency its user ID names)")
	c.Flags().StringVar(&manifestOut, "manifest-out", "", "write the package manifest (JSON) here")
	c.Flags().DurationVar(&maxAge, "max-age", 0, "oldest signed date accepted (default 336h)")
	c.Flags().BoolVar(&plain, "plain", false, "a standard signed and encrypted PGP/MIME message from a partner without Conduit")
	return c
}

// subjectMarking reads a subject marking through a legacy table, for
// envelope.OpenParams.SubjectMarking.
func subjectMarking(legacy envelope.LegacyMarkings) func(string) (envelope.Label, bool, error) {
	return func(subject string) (envelope.Label, bool, error) {
		var l envelope.Label
		m, found, err := marking.FromSubject(subject, legacy)
		if err != nil || !found {
			return l, found, err
		}
		return l, true, m.Apply(&l)
	}
}
