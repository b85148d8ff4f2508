package config

import (
	"os"
	"strings"
	"testing"
)

func TestDirectoryPostsAreChecked(t *testing.T) {
	src, err := os.ReadFile("../examples/directory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const anchor = "      - {id: wing-officer, name: Residential wing officer, kind: staff}\n"
	if !strings.Contains(string(src), anchor) {
		t.Fatal("the example directory no longer declares the wing officer post")
	}
	tests := []struct{ post, want string }{
		{"      - {id: chaplain, name: Chaplain, kind: clergy}\n", `"clergy" is not a kind of post; allowed: staff, senior-manager, governor, police, contractor`},
		{"      - {id: lccm, name: Again, kind: staff}\n", `duplicate post "lccm" at hmp-northgate`},
		{"      - {id: Head Of Security, name: X, kind: staff}\n", `is not a post id`},
		{"      - {id: gate, kind: staff}\n", "post gate at hmp-northgate has no name"},
	}
	for _, tt := range tests {
		_, err := LoadDirectory("directory.yaml", []byte(strings.Replace(string(src), anchor, anchor+tt.post, 1)))
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "directory.yaml:") || !strings.Contains(err.Error(), ".posts[") {
			t.Errorf("%s: %v", strings.TrimSpace(tt.post), err)
		}
	}
	// Posts belong to establishments.
	bad := strings.Replace(string(src), "    kind: police-force\n", "    kind: police-force\n    posts: [{id: chief, name: Chief Constable, kind: police}]\n", 1)
	if _, err := LoadDirectory("directory.yaml", []byte(bad)); err == nil || !strings.Contains(err.Error(), "only an establishment") {
		t.Errorf("posts on a police force: %v", err)
	}
	// A prison that lists none has the LCCM and D-LCCM of MoU 4.1.
	d, err := LoadDirectory("directory.yaml", src)
	if err != nil {
		t.Fatal(err)
	}
	if p := d.Agency("hmp-eastmoor").Post("lccm"); p == nil || !p.Oversight {
		t.Errorf("hmp-eastmoor's LCCM: %+v", p)
	}
}
