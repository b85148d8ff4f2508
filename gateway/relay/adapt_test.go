package relay

import "testing"

func TestConcurrencyGrowsUnderBacklogAndHalvesOnDeferral(t *testing.T) {
	c := newConcurrency(4)
	c.record(outcomeSent, false)
	if got := c.current(); got != 4 {
		t.Fatalf("after a send without backlog: %d, want 4", got)
	}
	for range 100 {
		c.record(outcomeSent, true)
	}
	if got := c.current(); got != 4*maxWorkersFactor {
		t.Fatalf("after a long backlog: %d, want the bound %d", got, 4*maxWorkersFactor)
	}
	c.record(outcomeDeferred, true)
	if got := c.current(); got != 2*maxWorkersFactor {
		t.Fatalf("after a deferral: %d, want half, %d", got, 2*maxWorkersFactor)
	}
	for range 10 {
		c.record(outcomeDeferred, false)
	}
	if got := c.current(); got != 4 {
		t.Fatalf("after deferrals: %d, want the configured 4", got)
	}
	c.record(outcomeOther, true)
	if got := c.current(); got != 4 {
		t.Fatalf("a permanent failure moved the limit: %d", got)
	}
}
