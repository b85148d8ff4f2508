package console

import (
	"io/fs"
	"regexp"
	"testing"
)

// TestTemplatesNeedNoInlineScriptOrStyle: the Content Security Policy
// allows only the console's own files, so no page may carry an inline
// script, an event handler attribute or a style attribute.
func TestTemplatesNeedNoInlineScriptOrStyle(t *testing.T) {
	inline := regexp.MustCompile(`(?i)\son[a-z]+\s*=|\sstyle\s*=|<style|javascript:`)
	script := regexp.MustCompile(`(?i)<script([^>]*)>([^<]*)</script>`)
	n := 0
	fs.WalkDir(files, "templates", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := fs.ReadFile(files, p)
		if loc := inline.FindIndex(b); loc != nil {
			t.Errorf("%s: inline script or style: %q", p, b[loc[0]:min(loc[1]+20, len(b))])
		}
		if c := regexp.MustCompile(`(?i)<script`).FindAllIndex(b, -1); len(c) != len(script.FindAll(b, -1)) {
			t.Errorf("%s: a script element that is not <script src=...></script>", p)
		}
		for _, m := range script.FindAllSubmatch(b, -1) {
			if !regexp.MustCompile(`\ssrc="/static/`).Match(m[1]) || len(m[2]) > 0 {
				t.Errorf("%s: inline script %q", p, m[0])
			}
		}
		n++
		return nil
	})
	if n < 15 {
		t.Fatalf("only %d templates found", n)
	}
	if _, err := loadPages(); err != nil {
		t.Fatal(err)
	}
}
