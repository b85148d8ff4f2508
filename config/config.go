// Package config is in charge of a gateway's configuration: the one config
// file, decoded strictly (an unknown field is an error), checked as a whole
// (dangling references, duplicate ids), every error carrying the file, line
// and field; and the agency directory the sharing policy routes by.
package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/conduit-gateway/conduit/envelope"
	"github.com/goccy/go-yaml/ast"
)

// Config is one gateway's configuration file. Sections are added here as
// the gateway grows (listen, tls, store, keys, users); each is a field with
// its own type and its own check, called from Load.
type Config struct {
	// Agency is this gateway's own agency id; it must be in the directory.
	Agency string `yaml:"agency"`
	// Policy is the path of the administrator policy file (relative paths
	// are relative to the config file).
	Policy string `yaml:"policy"`
	// PIDFile, when set, is where the running daemon writes its process
	// id, so that `conduit policy reload` can signal it.
	PIDFile string `yaml:"pid-file,omitempty"`
	// LegacyMarkings replaces the default mapping of legacy GPMS markings
	// to classifications; a marking not in the table is refused.
	LegacyMarkings map[string]envelope.Classification `yaml:"legacy-markings,omitempty"`

	// Gateway holds the sections only `conduit serve` needs (gateway.go).
	Gateway `yaml:",inline"`

	// File is the path the configuration was read from.
	File string `yaml:"-"`
	// DirectoryFile is the directory's file, or File if it is inline.
	DirectoryFile string `yaml:"-"`
	// Directory is the agency directory, inline or from its own file.
	Directory *Directory `yaml:"-"`
}

// fileConfig is the on-disk form: Config plus the directory, which is
// either a mapping (inline) or a string (a path).
type fileConfig[D any] struct {
	Config    `yaml:",inline"`
	Directory D `yaml:"directory"`
}

// maxFile bounds what is read from a config, directory or policy file.
const maxFile = 8 << 20

// ReadFile reads a configuration file with a size limit.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > maxFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxFile)
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil && st.Size() > 0 {
		return nil, err
	}
	return b, nil
}

// Load reads and checks a gateway's config file and its directory.
func Load(path string) (*Config, error) {
	src, err := ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, src, func(p string) ([]byte, error) { return ReadFile(p) })
}

// Parse checks a config file's source. readFile reads the directory file
// when the config names one (nil forbids it, as the fuzz test does).
func Parse(path string, src []byte, readFile func(string) ([]byte, error)) (*Config, error) {
	doc, err := ParseDoc(path, src)
	if err != nil {
		return nil, err
	}
	var c *Config
	dn := doc.Node("$.directory")
	if dn == nil {
		return nil, doc.Errorf("$", "directory is missing: give the agency directory inline or the path of its file")
	}
	if dn.Type() == ast.StringType {
		var fc fileConfig[string]
		if err := doc.Decode("$", &fc); err != nil {
			return nil, err
		}
		c = &fc.Config
		if readFile == nil {
			return nil, doc.Errorf("$.directory", "a directory file is not allowed here")
		}
		dpath := resolve(path, fc.Directory)
		dsrc, err := readFile(dpath)
		if err != nil {
			return nil, doc.Errorf("$.directory", "cannot read the directory file: %v", err)
		}
		if c.Directory, err = LoadDirectory(dpath, dsrc); err != nil {
			return nil, err
		}
		c.DirectoryFile = dpath
	} else {
		var fc fileConfig[ast.Node]
		// Decode everything but the directory, then the directory from
		// its own node so that its errors keep their lines.
		if err := doc.Decode("$", &fc); err != nil {
			return nil, err
		}
		c = &fc.Config
		if c.Directory, err = doc.directory("$.directory"); err != nil {
			return nil, err
		}
		c.DirectoryFile = path
	}
	c.File = path
	if err := c.check(doc); err != nil {
		return nil, err
	}
	c.SetDefaults()
	return c, nil
}

func (c *Config) check(doc *Doc) error {
	if c.Agency == "" {
		return doc.Errorf("$", "agency is missing: this gateway's own agency id")
	}
	if c.Directory.Agency(c.Agency) == nil {
		return doc.Errorf("$.agency", "%q is not an agency in the directory", c.Agency)
	}
	if c.Policy == "" {
		return doc.Errorf("$", "policy is missing: the path of the administrator policy file")
	}
	c.Policy = resolve(c.File, c.Policy)
	if c.PIDFile != "" {
		c.PIDFile = resolve(c.File, c.PIDFile)
	}
	if err := c.checkGateway(doc); err != nil {
		return err
	}
	for k, v := range c.LegacyMarkings {
		if !slices.Contains(envelope.Classifications, v) {
			return doc.Errorf("$.legacy-markings", "%q maps to %q, which is not a classification", k, v)
		}
		if slices.Contains(envelope.Classifications, envelope.Classification(strings.ToUpper(k))) {
			return doc.Errorf("$.legacy-markings", "%q is a current classification, not a legacy marking", k)
		}
	}
	return nil
}

// Legacy returns the legacy-marking table in force: the configured one, or
// envelope.DefaultLegacyMarkings (filled in by SetDefaults), with its
// markings normalised.
func (c *Config) Legacy() envelope.LegacyMarkings {
	if len(c.LegacyMarkings) == 0 {
		return envelope.DefaultLegacyMarkings
	}
	m := make(envelope.LegacyMarkings, len(c.LegacyMarkings))
	for k, v := range c.LegacyMarkings {
		m[strings.ToUpper(strings.TrimSpace(k))] = v
	}
	return m
}

// Self returns this gateway's own agency.
func (c *Config) Self() *Agency { return c.Directory.Agency(c.Agency) }

func resolve(base, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(base), p)
}
