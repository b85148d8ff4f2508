// Command sealbench seals every message file in a directory with Conduit's
// envelope package, in one process as the gateway does, and prints the
// rate. bench/seal-vs-gpg.sh runs it beside one gpg process per message.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/keys"
)

func main() {
	signer := flag.String("signer", "", "secret key file")
	recipient := flag.String("recipient", "", "recipient certificate")
	label := flag.String("label", "", "handling label")
	in := flag.String("in", "", "directory of messages")
	out := flag.String("out", "", "file the sealed envelopes are appended to")
	workers := flag.Int("workers", 1, "packages sealed at once (the gateway seals concurrently)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile here")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if err := run(*signer, *recipient, *label, *in, *out, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "sealbench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(signer, recipient, label, in, out string, workers int) error {
	ctx := context.Background()
	id, err := (&keys.File{Path: signer}).Identity(ctx)
	if err != nil {
		return err
	}
	f, err := os.Open(recipient)
	if err != nil {
		return err
	}
	c, err := keys.ReadCert(f)
	f.Close()
	if err != nil {
		return err
	}
	l, err := envelope.ParseLabelPartial(label)
	if err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(in, "*"))
	if err != nil {
		return err
	}
	sort.Strings(files)
	msgs := make([][]byte, len(files))
	for i, name := range files {
		if msgs[i], err = os.ReadFile(name); err != nil {
			return err
		}
	}
	of, err := os.Create(out)
	if err != nil {
		return err
	}
	defer of.Close()
	var mu sync.Mutex
	start := time.Now()
	var g errgroup.Group
	g.SetLimit(max(workers, 1))
	for _, m := range msgs {
		g.Go(func() error {
			var buf bytes.Buffer
			if _, err := envelope.Seal(ctx, &buf, bytes.NewReader(m), envelope.SealParams{
				Signer: id, Recipients: []*keys.Cert{c}, Label: l,
			}); err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			_, err := of.Write(buf.Bytes())
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Printf("%d %.6f\n", len(msgs), el.Seconds())
	return nil
}
