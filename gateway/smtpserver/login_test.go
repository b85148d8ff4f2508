package smtpserver

import (
	"errors"
	"testing"
)

// The LOGIN server: the user name asked for or given as the initial
// response, then the password.
func TestLoginServer(t *testing.T) {
	for _, tc := range []struct {
		name       string
		initial    bool
		user, pass string
		ok         bool
	}{
		{"asked for the user name", false, "postfix", "s3cret", true},
		{"user name as initial response", true, "postfix", "s3cret", true},
		{"wrong password", false, "postfix", "guess", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]string
			srv := LoginServer(func(u, p string) error {
				got = [2]string{u, p}
				if u == "postfix" && p == "s3cret" {
					return nil
				}
				return ErrAuthFailed
			})
			var ch []byte
			var done bool
			var err error
			if tc.initial {
				ch, done, err = srv.Next([]byte(tc.user))
			} else {
				if ch, done, err = srv.Next(nil); string(ch) != "Username:" || done || err != nil {
					t.Fatalf("first challenge %q %v %v", ch, done, err)
				}
				ch, done, err = srv.Next([]byte(tc.user))
			}
			if string(ch) != "Password:" || done || err != nil {
				t.Fatalf("password challenge %q %v %v", ch, done, err)
			}
			_, done, err = srv.Next([]byte(tc.pass))
			if !done || got != [2]string{tc.user, tc.pass} {
				t.Errorf("done %v, authenticated %q", done, got)
			}
			if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrAuthFailed)) {
				t.Errorf("err %v, want ok=%v", err, tc.ok)
			}
			if _, _, err := srv.Next([]byte("more")); err == nil {
				t.Errorf("a response after the password was taken")
			}
		})
	}
}
