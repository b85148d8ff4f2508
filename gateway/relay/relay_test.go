package relay

import (
	"testing"
	"time"
)

func TestBackoffDoublesWithJitterUpToMax(t *testing.T) {
	min, max := 10*time.Second, 80*time.Second
	for attempts, base := range map[int]time.Duration{1: 10 * time.Second, 2: 20 * time.Second, 3: 40 * time.Second, 4: 80 * time.Second, 9: 80 * time.Second} {
		for i := 0; i < 50; i++ {
			d := backoff(attempts, min, max)
			if d < base*3/4 || d > base*5/4 {
				t.Fatalf("attempt %d: %s outside %s ±25%%", attempts, d, base)
			}
		}
	}
}
