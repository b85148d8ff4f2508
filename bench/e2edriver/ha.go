package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/pgtest"
	"github.com/conduit-gateway/conduit/testbed"
)

// runHA is mode ha: the sending agency runs k gateways on one PostgreSQL
// database (a throwaway server the driver starts, fsync on), the clients
// spread over their submission listeners; the receiving agency runs one
// gateway on SQLite, as in mode conduit. With k = 0 the sender is one
// gateway on SQLite: the baseline, measured the same way.
func runHA(ctx context.Context, bin, dir string, n, size, clients, k int) error {
	if bin == "" || dir == "" {
		return errors.New("mode ha needs -bin and -dir")
	}
	opt := benchOptions()
	side := "sqlite-1"
	gws := []string{sender}
	if k > 0 {
		pg, err := pgtest.New(ctx, pgtest.Options{Fsync: true})
		if err != nil {
			return err
		}
		defer pg.Close()
		dsn, err := pg.CreateDB(ctx, "sender")
		if err != nil {
			return err
		}
		opt.Postgres = map[string]string{sender: dsn}
		opt.Gateways = map[string]int{sender: k}
		side = "postgres-" + strconv.Itoa(k)
		for i := 2; i <= k; i++ {
			gws = append(gws, fmt.Sprintf("%s/%d", sender, i))
		}
	}
	b, err := testbed.Create(dir, bin, opt)
	if err != nil {
		return err
	}
	defer b.StopAll()
	if err := b.StartAll(ctx, append(gws, receiver)...); err != nil {
		return err
	}
	tc := b.ClientTLS()
	var turn atomic.Int64
	r, err := load{
		n: n, size: size, clients: clients, from: b.Nodes[sender].Address,
		maildir: b.Nodes[receiver].Maildir + "/" + recipient,
		verify:  "Conduit-Verified: signer=" + sender,
		dial: func() (*smtp.Client, error) {
			return dialSubmission(b.Nodes[gws[int(turn.Add(1))%len(gws)]], tc)
		},
	}.run(ctx)
	if err != nil {
		return fmt.Errorf("%w\nsender log:\n%s\nreceiver log:\n%s", err, b.Tail(sender, 5), b.Tail(receiver, 5))
	}
	report(side, r)
	return nil
}
