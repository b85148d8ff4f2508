package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"
)

func pendingReceipt(originator, pkg, group string) PendingReceipt {
	return PendingReceipt{Originator: originator, PackageID: pkg, Label: "v=1; label of " + pkg, Group: group,
		Mailboxes: []string{"intel@hmp-northgate.example"}, Delivered: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
}

func addPending(t *testing.T, s Store, ps ...PendingReceipt) {
	t.Helper()
	update(t, s, func(tx Tx) error {
		for _, p := range ps {
			if err := tx.AddPendingReceipt(p); err != nil {
				return err
			}
		}
		return nil
	})
}

func pkgsOf(ps []PendingReceipt) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.PackageID)
	}
	return out
}

// The pending receipts' behaviours, run on both backends by TestSuite.
var receiptSuite = []struct {
	name string
	run  func(t *testing.T, open func() Store)
}{
	{"PendingReceiptsWaitTheGatheringTimePerGroup", func(t *testing.T, open func() Store) {
		s := open()
		ctx := context.Background()
		now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
		setClock(s, func() time.Time { return now })
		addPending(t, s, pendingReceipt("northshire-pio", "p1", "OS"), pendingReceipt("northshire-pio", "p2", "OS"),
			pendingReceipt("northshire-pio", "p1", "OS"), // recorded twice (a repeated delivery): once
			pendingReceipt("northshire-pio", "o1", "O"), pendingReceipt("ccu-national", "c1", "OS"))
		got, wait, err := s.ClaimReceipts(ctx, 200*time.Millisecond, 10, time.Minute)
		tcheck(t, err, "claim")
		if len(got) != 0 || wait != 200*time.Millisecond {
			t.Fatalf("claimed %v, wait %s before the gathering time; want none, 200ms", pkgsOf(got), wait)
		}
		now = now.Add(200 * time.Millisecond)
		var groups []string
		for {
			got, _, err := s.ClaimReceipts(ctx, 200*time.Millisecond, 10, time.Minute)
			tcheck(t, err, "claim")
			if len(got) == 0 {
				break
			}
			groups = append(groups, fmt.Sprint(got[0].Originator, pkgsOf(got)))
		}
		sort.Strings(groups)
		if want := "[ccu-national[c1] northshire-pio[o1] northshire-pio[p1 p2]]"; fmt.Sprint(groups) != want {
			t.Fatalf("batches %v; want %s", groups, want)
		}
	}},
	{"PendingReceiptsFullBatchGoesAtOnceAndLeasesKeepBatchersApart", func(t *testing.T, open func() Store) {
		open1 := open()
		other := open() // another gateway on the same database
		ctx := context.Background()
		now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
		for _, s := range []Store{open1, other} {
			setClock(s, func() time.Time { return now })
		}
		addPending(t, open1, pendingReceipt("northshire-pio", "p1", "OS"), pendingReceipt("northshire-pio", "p2", "OS"),
			pendingReceipt("northshire-pio", "p3", "OS"))
		a, _, err := open1.ClaimReceipts(ctx, time.Hour, 2, time.Minute)
		tcheck(t, err, "claim")
		b, wait, err := other.ClaimReceipts(ctx, time.Hour, 2, time.Minute)
		tcheck(t, err, "claim")
		if fmt.Sprint(pkgsOf(a)) != "[p1 p2]" || len(b) != 0 || wait <= 0 {
			t.Fatalf("first batcher %v, second %v (wait %s); want [p1 p2] (a full batch, at once) and none", pkgsOf(a), pkgsOf(b), wait)
		}
		// The first batcher dies: its lease runs out and the receipts are
		// taken again (the gathering time has passed too by then).
		now = now.Add(time.Hour)
		b, _, err = other.ClaimReceipts(ctx, time.Hour, 10, time.Minute)
		tcheck(t, err, "claim")
		if fmt.Sprint(pkgsOf(b)) != "[p1 p2 p3]" {
			t.Fatalf("after the lease: %v; want every receipt", pkgsOf(b))
		}
	}},
	{"BatchReceiptsIsAllOrNothingAndRecordsEachReceiptSent", func(t *testing.T, open func() Store) {
		s := open()
		ctx := context.Background()
		addPending(t, s, pendingReceipt("northshire-pio", "p1", "OS"), pendingReceipt("northshire-pio", "p2", "OS"))
		got, _, err := s.ClaimReceipts(ctx, 0, 10, time.Minute)
		tcheck(t, err, "claim")
		if len(got) != 2 {
			t.Fatalf("claimed %v", pkgsOf(got))
		}
		batch := item("rcpts-p1", "northshire-pio")
		// A batch naming a receipt already batched elsewhere is refused
		// whole: no envelope, no receipt removed.
		err = s.Update(ctx, func(tx Tx) error {
			if _, err := tx.Enqueue([]Item{batch}); err != nil {
				return err
			}
			return tx.BatchReceipts(batch.PackageID, []int64{got[0].ID, got[1].ID, 1 << 40})
		})
		if !errors.Is(err, ErrReceiptsTaken) {
			t.Fatalf("a batch with a receipt gone: %v; want ErrReceiptsTaken", err)
		}
		if l, _ := s.List(ctx, Filter{}); len(l) != 0 {
			t.Fatalf("%d items kept from a refused batch", len(l))
		}
		var id []int64
		update(t, s, func(tx Tx) error {
			var err error
			if id, err = tx.Enqueue([]Item{batch}); err != nil {
				return err
			}
			return tx.BatchReceipts(batch.PackageID, []int64{got[0].ID, got[1].ID})
		})
		if rest, wait, err := s.ClaimReceipts(ctx, 0, 10, time.Minute); err != nil || len(rest) != 0 || wait != 0 {
			t.Fatalf("after the batch: pending %v, wait %s, %v", pkgsOf(rest), wait, err)
		}
		for _, p := range []string{"p1", "p2"} {
			if b, err := s.ReceiptBatch(ctx, p); err != nil || b != "rcpts-p1" {
				t.Fatalf("the batch of %s: %q, %v", p, b, err)
			}
		}
		// Sent: each receipt it carried is recorded sent, as a receipt
		// alone was.
		update(t, s, func(tx Tx) error { return tx.MarkSent(id[0], "Q123") })
		for _, p := range []string{"p1", "p2"} {
			l, err := s.List(ctx, Filter{PackageID: ReceiptID(p)})
			tcheck(t, err, "list")
			if len(l) != 1 || l[0].State != Sent || l[0].Destination != "northshire-pio" || l[0].RemoteID != "Q123" || l[0].Size != 0 {
				t.Fatalf("the receipt of %s: %+v", p, l)
			}
		}
		// An item that carries no batch records nothing more.
		one := enqueue(t, s, item("plain", "ccu"))
		update(t, s, func(tx Tx) error { return tx.MarkSent(one[0], "Q124") })
		if l, _ := s.List(ctx, Filter{}); len(l) != 4 {
			t.Fatalf("%d items; want the batch, its 2 receipts and the plain item", len(l))
		}
	}},
}

func init() { suite = append(suite, receiptSuite...) }
