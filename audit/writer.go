package audit

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Appender is where a Writer puts events (SQLite).
type Appender interface {
	Append(ctx context.Context, e Event) (Event, error)
}

// batcher is an Appender that can store many events with one disk sync
// and move events staged in the store's outbox into the chain (SQLite).
type batcher interface {
	AppendAll(ctx context.Context, es []Event) ([]Event, error)
	Drain(ctx context.Context) (int, error)
}

// Stager writes events in the transaction of the state change they record
// (the store's Tx).
type Stager interface {
	Audit(es ...Event) error
}

// Writer is a gateway's way into its audit trail. It stamps events with
// the agency, the actor and the time; it commits concurrent appends as a
// group (one disk sync for every event waiting, the way databases commit
// groups), so an event is durable when Append returns but a busy gateway
// does not pay a sync per event; and it moves the events that state
// changes staged in the store's outbox (Stage) into the chain soon after
// they commit (Kick), and at least every second.
//
// A Writer with no Appender writes nothing: the gateway's parts can be
// built without a trail in their tests.
type Writer struct {
	app    Appender
	b      batcher // nil when app cannot batch: appends go one by one
	agency string
	now    func() time.Time
	log    *slog.Logger
	// failed counts a failed write (a metric); nil counts nothing.
	failed func()

	reqs chan writeReq
	kick chan struct{}

	mu      sync.Mutex
	stop    chan struct{}
	stopped chan struct{}
}

type writeReq struct {
	e    Event
	done chan error
}

// drainPoll is how often the writer looks for staged events nobody told
// it about (the command line's, or a commit whose kick it missed).
const drainPoll = time.Second

// drainGather is how long a kick waits before the staged events are
// chained, so that one chaining transaction takes the events of every
// commit in that time rather than one transaction for each (a busy
// gateway kicks for every package). The events are already durable in
// the outbox; only their place in the chain waits.
const drainGather = 100 * time.Millisecond

// maxBatch bounds one group commit.
const maxBatch = 256

// NewWriter returns a writer for agency's trail in app (nil: none). now
// stamps events without a time; failed, when not nil, is called for each
// write that failed (after it was logged as an administrator alert).
func NewWriter(app Appender, agency string, now func() time.Time, log *slog.Logger, failed func()) *Writer {
	if log == nil {
		log = slog.Default()
	}
	w := &Writer{app: app, agency: agency, now: now, log: log, failed: failed}
	if b, ok := app.(batcher); ok {
		w.b = b
		w.reqs = make(chan writeReq, maxBatch)
		w.kick = make(chan struct{}, 1)
	}
	return w
}

// Start starts the group-commit loop; Close stops it. Appends before
// Start (or after Close) are written one by one.
func (w *Writer) Start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b == nil || w.stop != nil {
		return
	}
	w.stop, w.stopped = make(chan struct{}), make(chan struct{})
	go w.run(w.stop, w.stopped)
}

// Close stops the loop once the events waiting are written, and chains
// what is staged. The trail itself is the caller's to close, after.
func (w *Writer) Close() error {
	w.mu.Lock()
	stop, stopped := w.stop, w.stopped
	w.stop, w.stopped = nil, nil
	w.mu.Unlock()
	if stop == nil {
		return nil
	}
	close(stop)
	<-stopped
	if w.b != nil {
		if _, err := w.b.Drain(context.Background()); err != nil {
			return err
		}
	}
	return nil
}

func (w *Writer) running() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stop != nil
}

func (w *Writer) run(stop <-chan struct{}, stopped chan<- struct{}) {
	defer close(stopped)
	t := time.NewTicker(drainPoll)
	defer t.Stop()
	gather := time.NewTimer(drainGather)
	gather.Stop()
	var gathering bool
	for {
		var batch []writeReq
		drain := false
		select {
		case <-stop:
			// Whatever is waiting is written before the loop ends.
			for {
				select {
				case r := <-w.reqs:
					batch = append(batch, r)
					continue
				default:
				}
				break
			}
			w.commit(batch)
			return
		case r := <-w.reqs:
			batch = append(batch, r)
		case <-w.kick:
			if !gathering {
				gathering = true
				gather.Reset(drainGather)
			}
			continue
		case <-gather.C:
			gathering, drain = false, true
		case <-t.C:
			drain = true
		}
	more:
		for len(batch) < maxBatch {
			select {
			case r := <-w.reqs:
				batch = append(batch, r)
			default:
				break more
			}
		}
		if len(batch) == 0 {
			if !drain {
				continue
			}
			if _, err := w.b.Drain(context.Background()); err != nil {
				w.log.Error("admin alert: staged audit events not chained; retried", "err", err)
				w.fail()
			}
			continue
		}
		w.commit(batch)
	}
}

// commit writes a group and lets each caller go on. Not the callers'
// contexts: an event is written even if the session that caused it has
// gone.
func (w *Writer) commit(batch []writeReq) {
	if len(batch) == 0 {
		return
	}
	es := make([]Event, len(batch))
	for i, r := range batch {
		es[i] = r.e
	}
	_, err := w.b.AppendAll(context.Background(), es)
	for _, r := range batch {
		r.done <- err
	}
}

func (w *Writer) fail() {
	if w.failed != nil {
		w.failed()
	}
}

// Fill completes an event: this agency, the gateway as actor unless one
// is named, and the time now unless it has one.
func (w *Writer) Fill(e *Event) {
	e.Agency = w.agency
	if e.Actor == "" {
		e.Actor = "gateway"
	}
	if e.Time.IsZero() {
		e.Time = w.now().UTC()
	}
}

// Append writes an event that records no state change of the store (a
// refusal, an alert) straight to the chain. Events carry metadata only
// (package id, agencies, rules, mailbox addresses), never content or a
// subject's identity. A failed append is an administrator alert; it does
// not undo what already happened.
func (w *Writer) Append(ctx context.Context, es ...Event) {
	if w == nil || w.app == nil {
		return
	}
	for _, e := range es {
		w.Fill(&e)
		var err error
		if w.b != nil && w.running() {
			done := make(chan error, 1)
			w.reqs <- writeReq{e, done}
			err = <-done
		} else {
			_, err = w.app.Append(ctx, e)
		}
		if err != nil {
			w.log.Error("admin alert: audit trail not written", "kind", string(e.Kind), "package", e.Package, "err", err)
			w.fail()
		}
	}
}

// Stage writes events in tx, the transaction of the state change they
// record: the change is never durable without its events. Call Kick once
// the transaction has committed.
func (w *Writer) Stage(tx Stager, es ...Event) error {
	if w == nil || w.app == nil || len(es) == 0 {
		return nil
	}
	for i := range es {
		w.Fill(&es[i])
	}
	return tx.Audit(es...)
}

// Kick tells the writer that a committed transaction staged events.
func (w *Writer) Kick() {
	if w == nil || w.kick == nil {
		return
	}
	select {
	case w.kick <- struct{}{}:
	default:
	}
}
