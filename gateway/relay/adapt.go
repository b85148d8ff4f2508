package relay

import "sync"

// maxWorkersFactor bounds the adaptive concurrency: up to this many times
// the configured workers run at once while a backlog lasts.
const maxWorkersFactor = 8

// growBytes bounds the envelopes in flight in the deliveries added above
// the configured workers: the relay grows past them only while that many
// deliveries of the recent envelopes' mean size fit in it. It was set when
// each delivery held its envelope whole; a delivery now streams it (a
// chunk at a time), so it no longer bounds this gateway's memory, but it
// still keeps large packages (10 MiB) at the configured workers, the load
// the receiving gateways were measured under. Raising it is untried.
const growBytes = 64 << 20

// concurrency is the number of deliveries the relay runs at once. It
// adapts as TCP's congestion window does (additive increase,
// multiplicative decrease): it starts at the configured workers, grows by
// one for each package delivered while more were due than could be sent,
// up to maxWorkersFactor times that, and halves, never below the
// configured workers, when a delivery is deferred (the destination said
// try later, or could not be reached). A delivery spends most of its time
// waiting for the receiver to make the package durable, and the receiver
// commits concurrent packages together: more deliveries in flight share
// its fsyncs, where a fixed four left a backlog waiting.
type concurrency struct {
	mu       sync.Mutex
	min, max int
	limit    int
	meanSize float64 // recent envelopes' mean size (moving average)
}

func newConcurrency(workers int) *concurrency {
	workers = max(workers, 1)
	return &concurrency{min: workers, max: workers * maxWorkersFactor, limit: workers}
}

// current is how many deliveries may run now.
func (c *concurrency) current() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.meanSize > 0 {
		return max(c.min, min(c.limit, int(growBytes/c.meanSize)))
	}
	return c.limit
}

// sized records a claimed envelope's size.
func (c *concurrency) sized(n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.meanSize == 0 {
		c.meanSize = float64(n)
		return
	}
	c.meanSize += (float64(n) - c.meanSize) / 8
}

// record adapts the limit to a delivery's outcome; backlog says whether
// more items were due than the relay could take when it was claimed.
func (c *concurrency) record(o outcome, backlog bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case o == outcomeSent && backlog:
		c.limit = min(c.limit+1, c.max)
	case o == outcomeDeferred:
		c.limit = max(c.limit/2, c.min)
	}
}

// outcome is what became of one delivery attempt.
type outcome int

const (
	outcomeSent     outcome = iota // the destination accepted it
	outcomeDeferred                // a temporary failure: retried later
	outcomeOther                   // failed for good, held, or not recorded
)
