package envelope

import (
	"regexp"
	"testing"
	"time"
)

// Package ids keep their syntax, differ when made in the same
// millisecond, and sort as the times they were made (for the indexes
// keyed by them; see NewPackageID).
func TestNewPackageID(t *testing.T) {
	syntax := regexp.MustCompile(`^cdt-[a-z2-7]{24}$`)
	at := time.Date(2026, 12, 2, 9, 30, 0, 0, time.UTC)
	seen := map[string]bool{}
	for i := 0; i < 2000; i++ {
		id := newPackageID(at)
		if !syntax.MatchString(id) {
			t.Fatalf("%q: not cdt- and 24 base32 characters", id)
		}
		if seen[id] {
			t.Fatalf("%q made twice in one millisecond", id)
		}
		seen[id] = true
	}
	if id := NewPackageID(); !syntax.MatchString(id) {
		t.Errorf("NewPackageID: %q", id)
	}
	// Steps that carry across every character of the time part, and the
	// alphabet's boundary between digits and letters.
	times := []time.Time{time.UnixMilli(0), time.UnixMilli(1), time.UnixMilli(25), time.UnixMilli(26),
		time.UnixMilli(31), time.UnixMilli(32), time.UnixMilli(1 << 20), at, at.Add(time.Millisecond),
		at.Add(time.Second), at.Add(24 * time.Hour), time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)}
	for i := 1; i < len(times); i++ {
		a, b := newPackageID(times[i-1]), newPackageID(times[i])
		if a[:14] >= b[:14] {
			t.Errorf("%v gives %q, not before %v's %q", times[i-1], a, times[i], b)
		}
	}
	for ms := int64(0); ms < 5000; ms++ {
		if a, b := newPackageID(at.Add(time.Duration(ms)*time.Millisecond)), newPackageID(at.Add(time.Duration(ms+1)*time.Millisecond)); a >= b {
			t.Fatalf("%q made a millisecond before %q sorts after it", a, b)
		}
	}
}
