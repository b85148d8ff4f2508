package main

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
	"golang.org/x/crypto/bcrypt"

	"github.com/conduit-gateway/conduit/config"
)

func TestConfigShowPrintsEveryDefault(t *testing.T) {
	out, err := runCLI(t, "config", "show", "--config", exampleConfig)
	if err != nil {
		t.Fatalf("config show: %v\n%s", err, out)
	}
	for _, want := range []string{"workers: 4", "retry-min: 30s", "retry-max: 30m", "max-age: 72h", "message-bytes: 26214400",
		"expiry-warning: 720h", "check-interval: 5s", "shutdown-timeout: 30s", "housekeeping-interval: 1m", "RESTRICTED: OFFICIAL-SENSITIVE",
		"directory: ../../examples/directory.yaml"} {
		if !strings.Contains(out, want) {
			t.Errorf("config show lacks %q:\n%s", want, out)
		}
	}
	// What it prints is a config file that loads to the same settings.
	dir := t.TempDir()
	shown := strings.Replace(out, "directory: ../../examples/directory.yaml", "directory: "+mustAbs(t, "../../examples/directory.yaml"), 1)
	shown = strings.Replace(shown, "policy: ../../examples/policy.yaml", "policy: "+mustAbs(t, "../../examples/policy.yaml"), 1)
	path := filepath.Join(dir, "shown.yaml")
	if err := os.WriteFile(path, []byte(shown), 0o600); err != nil {
		t.Fatal(err)
	}
	again, err := config.Load(path)
	if err != nil {
		t.Fatalf("the shown config does not load: %v\n%s", err, shown)
	}
	orig, err := config.Load(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := yaml.Marshal(orig.Gateway)
	b, _ := yaml.Marshal(again.Gateway)
	if string(a) != string(b) {
		t.Errorf("settings differ after a round trip:\n%s\n---\n%s", a, b)
	}
}

func TestConfigShowPrintsTheSetValue(t *testing.T) {
	src, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(src) + "shutdown-timeout: 2m\nhousekeeping-interval: 15s\n" +
		"users:\n  - {name: dpatel, address: pio@northshire-pio.example, password-hash: \"" + string(hash) + "\"}\n"
	cfg = strings.Replace(cfg, "directory: directory.yaml", "directory: "+mustAbs(t, "../../examples/directory.yaml"), 1)
	cfg = strings.Replace(cfg, "policy: policy.yaml", "policy: "+mustAbs(t, "../../examples/policy.yaml"), 1)
	path := filepath.Join(dir, "conduit.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "config", "show", "--config", path)
	if err != nil {
		t.Fatalf("config show: %v\n%s", err, out)
	}
	for _, want := range []string{"shutdown-timeout: 2m", "housekeeping-interval: 15s", "workers: 4"} {
		if !strings.Contains(out, want) {
			t.Errorf("config show lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "shutdown-timeout: 30s") {
		t.Errorf("the default shows instead of the set value:\n%s", out)
	}
	if strings.Contains(out, string(hash)) || !strings.Contains(out, "password-hash: "+redacted) {
		t.Errorf("the password hash is not redacted:\n%s", out)
	}
}

func TestConfigShowNamesFileLineAndField(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(src), "directory: directory.yaml", "directory: "+mustAbs(t, "../../examples/directory.yaml"), 1)
	cfg += "queue:\n  workers: -1\n"
	path := filepath.Join(dir, "conduit.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = runCLI(t, "config", "show", "--config", path)
	line := strings.Count(cfg[:strings.Index(cfg, "workers: -1")], "\n") + 1
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitUsage {
		t.Fatalf("config show of a bad config: %v, want exit status %d", err, exitUsage)
	}
	for _, want := range []string{path, ":" + strconv.Itoa(line), "$.queue.workers", "must not be negative"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
