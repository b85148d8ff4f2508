package delivery

import "testing"

func TestMailboxDirCannotEscapeTheMaildir(t *testing.T) {
	for in, want := range map[string]string{
		"Intel@Northgate.example": "intel@northgate.example",
		"../../etc/passwd":        "..%2f..%2fetc%2fpasswd",
		"..":                      "invalid",
		"a b@c":                   "a%20b@c",
	} {
		if got := MailboxDir(in); got != want {
			t.Errorf("MailboxDir(%q) = %q, want %q", in, got, want)
		}
	}
}
