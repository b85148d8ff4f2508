package vaulttest

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/vaulttest/vaultsrv"
)

// BenchmarkSealSignedLocally and BenchmarkSealSignedByTransit compare one
// small package sealed with the signing key in memory (KV backend) and
// with each signature a Transit call over loopback HTTPS.
//
//	(cd vaulttest && go test -run '^$' -bench Seal -benchtime 200x)
func BenchmarkSealSignedLocally(b *testing.B) {
	s := vaultsrv.Start(b)
	ctx := context.Background()
	_, err := operator(b, s, false).StoreAt(ctx, identity(b, "hmp-northgate"), 0)
	tcheck(b, err, "store")
	id, err := newVault(b, backendConfig(b, s, "bench")).Identity(ctx)
	tcheck(b, err, "load")
	benchSeal(b, id)
}

func BenchmarkSealSignedByTransit(b *testing.B) {
	s := vaultsrv.Start(b)
	ctx := context.Background()
	op := operator(b, s, true)
	tcheck(b, op.EnsureTransitKey(ctx, keys.TransitECDSAP384), "transit key")
	made, err := op.GenerateTransit(ctx, "hmp-northgate", "conduit@hmp-northgate.example", time.Now())
	tcheck(b, err, "generate")
	_, err = op.StoreAt(ctx, made, 0)
	tcheck(b, err, "store")
	cfg := backendConfig(b, s, "bench")
	cfg.Transit = &keys.TransitConfig{Mount: vaultsrv.TransitMount, Key: vaultsrv.TransitKey}
	id, err := newVault(b, cfg).Identity(ctx)
	tcheck(b, err, "load")
	benchSeal(b, id)
}

func benchSeal(b *testing.B, id *keys.Identity) {
	to := pub(b, identity(b, "met-pio"))
	var buf bytes.Buffer
	b.ResetTimer()
	for range b.N {
		buf.Reset()
		if err := sealErr(id, to, io.Writer(&buf)); err != nil {
			b.Fatal(err)
		}
	}
}
