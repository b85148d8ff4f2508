package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/gateway"
	"github.com/conduit-gateway/conduit/testbed"
)

// TestOnlyTheCommandReadsTheEnvironment keeps every read of the
// environment in cmd/ (and config loading): the packages below take what
// it says as options, so a library caller decides everything explicitly
// and a stray variable cannot change a gateway's behaviour unseen.
func TestOnlyTheCommandReadsTheEnvironment(t *testing.T) {
	root := filepath.Join("..", "..")
	// Where reading the environment is allowed, and why.
	allowed := map[string]string{
		"cmd":       "the command reads the environment and passes it down",
		"bench":     "benchmark programs, commands of their own",
		"vaulttest": "a separate module of tests",
		"config":    "config loading",
		"pgtest":    "throwaway database servers for tests: under CI=true a missing server fails the test",
	}
	// testbed starts gateway processes with this process's environment
	// plus its own clock variable: it passes the environment on, it does
	// not act on it.
	passOn := map[string]bool{"testbed/testbed.go:os.Environ": true}
	reads := map[string]bool{"os.Getenv": true, "os.LookupEnv": true, "os.Environ": true, "os.ExpandEnv": true, "syscall.Getenv": true}
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if _, ok := allowed[rel]; ok || strings.HasPrefix(d.Name(), ".") && rel != "." || d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			pkg, ok := sel.X.(*ast.Ident)
			if !ok {
				return true
			}
			name := pkg.Name + "." + sel.Sel.Name
			if reads[name] && !passOn[rel+":"+name] {
				t.Errorf("%s calls %s: read the environment in cmd/conduit and pass the value down as an option", rel, name)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("only %d files checked: the walk missed the packages", checked)
	}
}

func TestGatewayOptionsTakeTheEnvironment(t *testing.T) {
	clockFile := filepath.Join(t.TempDir(), "clock-offset")
	if err := os.WriteFile(clockFile, []byte("73h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		env        map[string]string
		in         gateway.Options
		pass, tok  string
		clockAhead time.Duration // 0: no clock set
	}{
		{"nothing set", nil, gateway.Options{}, "", "", 0},
		{"passphrase and token", map[string]string{passphraseEnv: "s3cret", vaultTokenEnv: "hvs.x"}, gateway.Options{}, "s3cret", "hvs.x", 0},
		{"an explicit option wins", map[string]string{passphraseEnv: "s3cret", vaultTokenEnv: "hvs.x"},
			gateway.Options{Passphrase: []byte("given"), VaultToken: "given-token"}, "given", "given-token", 0},
		{"the test clock", map[string]string{testbed.ClockEnv: clockFile}, gateway.Options{}, "", "", 73 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{passphraseEnv, vaultTokenEnv, testbed.ClockEnv} {
				t.Setenv(k, tc.env[k])
			}
			got := gatewayOptions(tc.in)
			if string(got.Passphrase) != tc.pass || got.VaultToken != tc.tok {
				t.Errorf("passphrase %q token %q, want %q %q", got.Passphrase, got.VaultToken, tc.pass, tc.tok)
			}
			switch {
			case tc.clockAhead == 0 && got.Now != nil:
				t.Errorf("a clock is set without %s", testbed.ClockEnv)
			case tc.clockAhead != 0:
				if got.Now == nil {
					t.Fatalf("no clock with %s set", testbed.ClockEnv)
				}
				if ahead := time.Until(got.Now()); ahead < tc.clockAhead-time.Minute || ahead > tc.clockAhead+time.Minute {
					t.Errorf("clock %v ahead, want %v", ahead, tc.clockAhead)
				}
			}
		})
	}
}
