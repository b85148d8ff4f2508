package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// requireTool skips on a laptop without the tool and fails under CI=true,
// where a missing tool is a missing install step (test.sh installs it).
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed; CI must install it (see test.sh)", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

var (
	buildOnce sync.Once
	bin       string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if bin != "" {
		os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}

// unitRoot lays out a root folder for systemd-analyze --root: the
// system's own units (sysinit.target and the rest), the unit under test,
// and the executables it names (a real conduit binary, kill).
func unitRoot(t *testing.T, unit []byte) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"usr/local/bin", "etc/systemd/system", "usr/lib/systemd", "bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "conduit-unit")
		if err != nil {
			buildErr = err
			return
		}
		bin = filepath.Join(dir, "conduit")
		if out, err := exec.Command("go", "build", "-o", bin, "../cmd/conduit").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build conduit: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	kill, err := exec.LookPath("kill")
	if err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{bin: "usr/local/bin/conduit", kill: "bin/kill", "/usr/lib/systemd/system": "usr/lib/systemd/system"} {
		if out, err := exec.Command("cp", "-r", src, filepath.Join(root, dst)).CombinedOutput(); err != nil {
			t.Fatalf("cp %s: %v\n%s", src, err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc/systemd/system/conduit.service"), unit, 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// verify runs systemd-analyze verify; any complaint is a failure (it
// exits 0 for some of them, printing them only).
func verify(t *testing.T, unit []byte) (string, bool) {
	t.Helper()
	root := unitRoot(t, unit)
	var out bytes.Buffer
	cmd := exec.Command(requireTool(t, "systemd-analyze"), "verify", "--root="+root, "/etc/systemd/system/conduit.service")
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err == nil && strings.TrimSpace(out.String()) == ""
}

func TestUnitPassesSystemdAnalyzeVerify(t *testing.T) {
	if out, ok := verify(t, Unit); !ok {
		t.Fatalf("systemd-analyze verify finds fault with conduit.service:\n%s", out)
	}
	// The check can fail: a unit with a misspelt value is refused.
	bad := bytes.Replace(Unit, []byte("ProtectSystem=strict"), []byte("ProtectSystem=strictest"), 1)
	if out, ok := verify(t, bad); ok {
		t.Fatalf("systemd-analyze verify accepted a unit with a bad value:\n%s", out)
	}
}

// The unit's exposure score, as systemd-analyze security computes it,
// stays at most 2.0 ("OK"); the README quotes it.
func TestUnitExposureScore(t *testing.T) {
	sa := requireTool(t, "systemd-analyze")
	root := unitRoot(t, Unit)
	out, _ := exec.Command(sa, "security", "--offline=yes", "--root="+root, "conduit.service").CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for conduit.service: ([0-9.]+) (\S+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	t.Logf("systemd-analyze security: %s %s", m[1], m[2])
	// --threshold is in tenths: 20 is an exposure of 2.0.
	if err := exec.Command(sa, "security", "--offline=yes", "--root="+root, "--threshold=20", "conduit.service").Run(); err != nil {
		t.Errorf("exposure %s is above 2.0:\n%s", m[1], out)
	}
	for _, want := range []string{"NoNewPrivileges=yes", "ProtectSystem=strict", "LimitCORE=0", "User=conduit", "PrivateTmp=yes"} {
		if !bytes.Contains(Unit, []byte("\n"+want+"\n")) {
			t.Errorf("the unit lacks %s", want)
		}
	}
}
