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
	"github.com/conduit-gateway/conduit/marking"
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
	// PurviewLabels says what the Microsoft Purview sensitivity labels
	// this gateway's senders apply in Outlook mean as handling markings,
	// by label GUID (the msip_labels header).
	PurviewLabels []PurviewLabel `yaml:"purview-labels,omitempty"`

	// Gateway holds the sections only `conduit serve` needs (gateway.go).
	Gateway `yaml:",inline"`

	// File is the path the configuration was read from.
	File string `yaml:"-"`
	// DirectoryFile is the directory's file, or File if it is inline.
	DirectoryFile string `yaml:"-"`
	// Directory is the agency directory, inline or from its own file.
	Directory *Directory `yaml:"-"`

	// legacyLines is the line of each legacy-markings entry, for the
	// trace entry that cites the table a mapping came from.
	legacyLines map[string]int
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
	if err := c.checkPurview(doc); err != nil {
		return err
	}
	c.legacyLines = map[string]int{}
	if mn, ok := doc.Node("$.legacy-markings").(*ast.MappingNode); ok {
		for _, kv := range mn.Values {
			if kv.Key != nil && kv.Key.GetToken() != nil {
				c.legacyLines[envelope.NormalizeMarking(kv.Key.GetToken().Value)] = kv.Key.GetToken().Position.Line
			}
		}
	}
	for k, v := range c.LegacyMarkings {
		if !slices.Contains(envelope.Classifications, v) {
			return doc.Errorf("$.legacy-markings", "%q maps to %q, which is not a classification", k, v)
		}
		if envelope.IsCurrent(k) {
			return doc.Errorf("$.legacy-markings", "%q is a current classification, not a legacy marking", k)
		}
	}
	return nil
}

// PurviewLabel is one sensitivity label of the agency's Purview tenant.
type PurviewLabel struct {
	// GUID is the label's id, as in MSIP_Label_<guid>_Enabled=true.
	GUID string `yaml:"guid"`
	// Name is the label's display name, for people (never matched).
	Name           string                  `yaml:"name"`
	Classification envelope.Classification `yaml:"classification"`
	Descriptor     string                  `yaml:"descriptor,omitempty"`
	Caveat         string                  `yaml:"caveat,omitempty"`
}

func (c *Config) checkPurview(doc *Doc) error {
	seen := map[string]int{}
	for i, l := range c.PurviewLabels {
		at := fmt.Sprintf("$.purview-labels[%d]", i)
		if !marking.IsGUID(l.GUID) {
			return doc.Errorf(at+".guid", "%q is not a label GUID such as 3c9e4a1b-7f0d-4c2a-9b1e-5d6f7a8b9c0d (the <guid> of MSIP_Label_<guid>_Enabled in the msip_labels header)", l.GUID)
		}
		g := strings.ToLower(l.GUID)
		if j, dup := seen[g]; dup {
			return doc.Errorf(at+".guid", "label %s is already listed at purview-labels[%d]", l.GUID, j)
		}
		seen[g] = i
		if strings.TrimSpace(l.Name) == "" {
			return doc.Errorf(at+".name", "label %s has no name: give the name senders see in Outlook", l.GUID)
		}
		if !slices.Contains(envelope.Classifications, l.Classification) {
			return doc.Errorf(at+".classification", "%q is not a classification; allowed: OFFICIAL, OFFICIAL-SENSITIVE, SECRET, TOP SECRET", l.Classification)
		}
		if l.Descriptor != "" && !slices.Contains(envelope.Descriptors, l.Descriptor) {
			return doc.Errorf(at+".descriptor", "%q is not a descriptor; allowed: %s", l.Descriptor, strings.Join(envelope.Descriptors, ", "))
		}
		if l.Descriptor != "" && l.Classification != envelope.OfficialSensitive {
			return doc.Errorf(at+".descriptor", "a descriptor qualifies OFFICIAL-SENSITIVE only, and this label is %s", l.Classification)
		}
		if l.Caveat != "" && !slices.Contains(envelope.Caveats, l.Caveat) {
			return doc.Errorf(at+".caveat", "%q is not a national caveat; allowed: %s", l.Caveat, strings.Join(envelope.Caveats, ", "))
		}
	}
	return nil
}

// Purview returns the Purview label table, keyed by lower-case GUID.
func (c *Config) Purview() marking.PurviewTable {
	t := make(marking.PurviewTable, len(c.PurviewLabels))
	for _, l := range c.PurviewLabels {
		g := strings.ToLower(l.GUID)
		t[g] = marking.PurviewLabel{GUID: g, Name: l.Name, Classification: l.Classification, Descriptor: l.Descriptor, Caveat: l.Caveat}
	}
	return t
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
		m[envelope.NormalizeMarking(k)] = v
	}
	return m
}

// LegacySource says where the mapping of a legacy marking comes from, for
// the decision's trace and the audit trail: the config file and line of
// the administrator's entry, or the built-in table.
func (c *Config) LegacySource(marking string) string {
	// legacyLines holds the entries the file wrote; SetDefaults fills an
	// absent table with the built-in one, which is cited as such.
	if c == nil || len(c.legacyLines) == 0 {
		return "built-in legacy-marking table (DESIGN.md, The handling label)"
	}
	if line, ok := c.legacyLines[envelope.NormalizeMarking(marking)]; ok {
		return fmt.Sprintf("legacy-markings in %s, line %d", c.File, line)
	}
	return "legacy-markings in " + c.File
}

// Self returns this gateway's own agency.
func (c *Config) Self() *Agency { return c.Directory.Agency(c.Agency) }

func resolve(base, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(base), p)
}
