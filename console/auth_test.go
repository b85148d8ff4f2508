package console

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/conduit-gateway/conduit/config"
)

func TestSignInSlowsThenLocksPerAccountAndAddress(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("right"), bcrypt.MinCost)
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	a, err := newAuthenticator([]config.User{{Name: "pio", PasswordHash: string(hash)}}, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.signIn("pio", "right", "10.0.0.1"); err != nil {
		t.Fatalf("a good password: %v", err)
	}
	for i := 1; i < throttleFree; i++ {
		if _, err := a.signIn("pio", "wrong", "10.0.0.1"); !errors.Is(err, errSignIn) {
			t.Fatalf("failure %d: %v", i, err)
		}
	}
	if _, err := a.signIn("pio", "wrong", "10.0.0.1"); !errors.Is(err, errSignIn) {
		t.Fatal(err)
	}
	// Now throttled: even the right password waits, from any address.
	if _, err := a.signIn("pio", "right", "10.0.0.2"); !errors.Is(err, errThrottled) {
		t.Fatalf("throttled account: %v", err)
	}
	// And the address is throttled for any account, known or not.
	if _, err := a.signIn("somebody", "x", "10.0.0.1"); !errors.Is(err, errThrottled) {
		t.Fatalf("throttled address: %v", err)
	}
	now = now.Add(2 * time.Second)
	if _, err := a.signIn("pio", "right", "10.0.0.2"); err != nil {
		t.Fatalf("after the wait: %v", err)
	}
	// Ten failures in a row lock the account for lockFor.
	for i := 0; i < lockAfter; i++ {
		now = now.Add(time.Hour)
		a.signIn("pio", "wrong", "10.0.0.3")
	}
	now = now.Add(lockFor - time.Minute)
	var te *throttledError
	if _, err := a.signIn("pio", "right", "10.0.0.4"); !errors.As(err, &te) {
		t.Fatalf("locked account: %v", err)
	}
	now = now.Add(2 * time.Minute)
	if _, err := a.signIn("pio", "right", "10.0.0.4"); err != nil {
		t.Fatalf("after the lock: %v", err)
	}
}

func TestUnknownUserCostsABcryptComparison(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("right"), 8)
	a, err := newAuthenticator([]config.User{{Name: "pio", PasswordHash: string(hash)}}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := bcrypt.Cost(a.dummy); c != 8 {
		t.Fatalf("the dummy hash has cost %d, not the accounts' 8", c)
	}
	if _, err := a.signIn("nobody", "right", "10.0.0.9"); !errors.Is(err, errSignIn) {
		t.Fatalf("unknown user: %v", err)
	}
}

func TestRolesAllowOnlyTheirPages(t *testing.T) {
	for _, tc := range []struct {
		role string
		c    capability
		ok   bool
	}{
		{config.RoleSender, capCompose, true},
		{config.RoleSender, capAdmin, false},
		{config.RoleSender, capHeld, false},
		{config.RoleReceiver, capReceived, true},
		{config.RoleReceiver, capCompose, false},
		{config.RoleSupervisor, capHeld, true},
		{config.RoleSupervisor, capAdmin, false},
		{config.RoleAdministrator, capAdmin, true},
		{config.RoleAdministrator, capCompose, false},
		{"", capAny, false},
	} {
		if got := allowed(tc.role, tc.c); got != tc.ok {
			t.Errorf("role %q capability %d: %v, want %v", tc.role, tc.c, got, tc.ok)
		}
	}
}
