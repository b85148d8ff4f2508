package config

import (
	"errors"
	"fmt"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// Error is a configuration error with its place: the file, the line and
// column of the offending node, the field's path, and the source lines
// around it so that an administrator sees what is wrong without opening
// the file.
type Error struct {
	File   string
	Line   int
	Column int
	// Field is the YAML path of the offending value ("$.agencies[3].region").
	Field  string
	Reason string
	// Source quotes the offending line with its neighbours; empty when the
	// place is unknown.
	Source string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	if e.Source != "" {
		b.WriteString("\n")
		b.WriteString(strings.TrimRight(e.Source, "\n"))
	}
	return b.String()
}

// Doc is a parsed YAML document kept with its source, so that semantic
// checks made after decoding can still point at a line.
type Doc struct {
	File string
	Src  []byte
	AST  *ast.File
}

// ParseDoc parses YAML source, reporting a syntax error with its line.
func ParseDoc(file string, src []byte) (doc *Doc, err error) {
	defer recoverYAML(file, "", &err)
	f, err := parser.ParseBytes(src, 0)
	if err != nil {
		return nil, yamlError(file, src, "", err)
	}
	return &Doc{File: file, Src: src, AST: f}, nil
}

// Node returns the node at a YAML path ("$.agencies[2].kind"), or nil.
func (d *Doc) Node(path string) ast.Node {
	p, err := yaml.PathString(path)
	if err != nil {
		return nil
	}
	n, err := p.FilterFile(d.AST)
	if err != nil {
		return nil
	}
	return n
}

// Errorf makes an Error for the node at path, quoting its line. If the
// path does not resolve (a missing field), the nearest existing parent is
// quoted instead, so the error still points somewhere useful.
func (d *Doc) Errorf(path, format string, args ...any) *Error {
	e := &Error{File: d.File, Field: path, Reason: fmt.Sprintf(format, args...)}
	for p := path; p != ""; p = parentPath(p) {
		n := d.Node(p)
		if n == nil || n.GetToken() == nil {
			continue
		}
		pos := n.GetToken().Position
		e.Line, e.Column = pos.Line, pos.Column
		if yp, err := yaml.PathString(p); err == nil {
			if out, err := yp.AnnotateSource(d.Src, false); err == nil {
				e.Source = string(out)
			}
		}
		break
	}
	return e
}

// parentPath drops the last element of a YAML path: "$.a.b[2]" → "$.a.b".
func parentPath(p string) string {
	if p == "$" || p == "" {
		return ""
	}
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i > 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndexByte(p, '.'); i > 0 {
		return p[:i]
	}
	return "$"
}

// Decode decodes the node at path strictly (unknown fields are errors)
// into v, turning decoder errors into an *Error with the line.
func (d *Doc) Decode(path string, v any) (err error) {
	defer recoverYAML(d.File, path, &err)
	var n ast.Node
	if path == "$" {
		if len(d.AST.Docs) == 0 || d.AST.Docs[0].Body == nil {
			return &Error{File: d.File, Reason: "is empty"}
		}
		if len(d.AST.Docs) > 1 {
			return &Error{File: d.File, Reason: "holds more than one YAML document"}
		}
		n = d.AST.Docs[0].Body
	} else if n = d.Node(path); n == nil {
		return &Error{File: d.File, Field: path, Reason: "is missing"}
	}
	if err := yaml.NodeToValue(n, v, yaml.DisallowUnknownField()); err != nil {
		return yamlError(d.File, d.Src, path, err)
	}
	return nil
}

// recoverYAML turns a panic inside the YAML library into an error: the
// library has crashed on malformed input found by fuzzing (a tagged
// sequence decoded into a slice dereferences a nil node in goccy/go-yaml
// v1.19.2), and a config or policy file must never crash the gateway.
func recoverYAML(file, field string, err *error) {
	if r := recover(); r != nil {
		*err = &Error{File: file, Field: field, Reason: fmt.Sprintf("cannot be decoded: the YAML is malformed (%v)", r)}
	}
}

// yamlError converts a goccy error into an *Error with the line it names.
func yamlError(file string, src []byte, field string, err error) *Error {
	e := &Error{File: file, Field: field, Reason: err.Error()}
	var ye yaml.Error
	if errors.As(err, &ye) {
		e.Reason = ye.GetMessage()
		if tk := ye.GetToken(); tk != nil {
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
			e.Source = quoteLine(src, e.Line)
		}
	}
	if e.Line == 0 {
		// A value's own parser (a duration's UnmarshalText) fails without
		// the token: find the line that holds the value it quotes.
		e.Line = lineOfQuotedValue(src, e.Reason)
		if e.Line > 0 {
			e.Source = quoteLine(src, e.Line)
		}
	}
	if e.Field != "" && e.Line > 0 {
		// The decoder reports the exact token; the path would only
		// name the section it was decoding.
		e.Field = ""
	}
	var uf *yaml.UnknownFieldError
	if errors.As(err, &uf) && uf.Token != nil {
		e.Field = uf.Token.Value
	}
	return e
}

// lineOfQuotedValue finds the one line of src whose value is the string
// msg quotes (`invalid duration "soon"` → the line `timeout: soon`); 0
// when there is no such line or more than one.
func lineOfQuotedValue(src []byte, msg string) int {
	i := strings.IndexByte(msg, '"')
	if i < 0 {
		return 0
	}
	j := strings.IndexByte(msg[i+1:], '"')
	if j <= 0 {
		return 0
	}
	val := msg[i+1 : i+1+j]
	found := 0
	for n, l := range strings.Split(string(src), "\n") {
		_, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		v = strings.Trim(strings.TrimSpace(v), `"'`)
		if v == val {
			if found != 0 {
				return 0
			}
			found = n + 1
		}
	}
	return found
}

// quoteLine returns the line with one line of context before it and a
// marker, in the same layout as goccy's AnnotateSource.
func quoteLine(src []byte, line int) string {
	lines := strings.Split(string(src), "\n")
	if line < 1 || line > len(lines) {
		return ""
	}
	var b strings.Builder
	for i := max(1, line-1); i <= line; i++ {
		mark := "  "
		if i == line {
			mark = "> "
		}
		fmt.Fprintf(&b, "%s%3d | %s\n", mark, i, lines[i-1])
	}
	return b.String()
}
