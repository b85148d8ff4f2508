package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The README's two-agency walkthrough, run as written by a new
// administrator would: only the loopback ports are changed to free ones,
// and `conduit` is this build.
func TestReadmeWalkthrough(t *testing.T) {
	requireTool(t, "openssl")
	requireTool(t, "swaks")
	readme, err := os.ReadFile("../../README.md")
	tcheck(t, err, "README")
	m := regexp.MustCompile("(?s)<!-- walkthrough:begin -->\\s*```sh\\n(.*?)```\\s*<!-- walkthrough:end -->").FindSubmatch(readme)
	if m == nil {
		t.Fatal("the README has no walkthrough block")
	}
	script := string(m[1])
	for _, port := range regexp.MustCompile(`127\.0\.0\.1:\d+`).FindAllString(script, -1) {
		if strings.Contains(script, port) {
			script = strings.ReplaceAll(script, port, freeAddr(t))
		}
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	tcheck(t, os.MkdirAll(bin, 0o755), "bin")
	tcheck(t, os.Symlink(conduitBin, filepath.Join(bin, "conduit")), "link conduit")
	work := filepath.Join(dir, "work")
	tcheck(t, os.MkdirAll(work, 0o755), "work")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		logs, _ := exec.Command("sh", "-c", "cat "+work+"/*.log").CombinedOutput()
		t.Fatalf("the walkthrough fails: %v\n%s\nlogs:\n%s", err, out.String(), logs)
	}
	files, _ := filepath.Glob(filepath.Join(work, "prison/var/maildir/intake@hmp-northgate.example/new/*"))
	if len(files) != 1 {
		t.Fatalf("the walkthrough delivered %d packages to HMP Northgate's intake, want 1:\n%s", len(files), out.String())
	}
	b, err := os.ReadFile(files[0])
	tcheck(t, err, "delivered")
	for _, want := range []string{"Conduit-Verified: signer=northshire-pio", "conveying phones"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("the delivered package lacks %q", want)
		}
	}
}
