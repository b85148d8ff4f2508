package envelope

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/conduit-gateway/conduit/keys"
)

func benchMessage(size int) []byte {
	line := "Intelligence report line with enough words to look like prose, 0123456789.\n"
	body := strings.Repeat(line, size/len(line)+1)[:size]
	return []byte("From: a@met.example\r\nTo: b@ng.example\r\nSubject: bench\r\nContent-Type: text/plain\r\n\r\n" + body)
}

func benchSeal(b *testing.B, size int) {
	pr := newPair(b, keys.ProfileRFC4880)
	msg := benchMessage(size)
	p := SealParams{Signer: pr.sender, Recipients: []*keys.Cert{cert(b, pr.receiver)}, Label: testLabel("met-pio")}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Seal(context.Background(), io.Discard, bytes.NewReader(msg), p); err != nil {
			b.Fatal(err)
		}
	}
}

func benchOpen(b *testing.B, size int) {
	pr := newPair(b, keys.ProfileRFC4880)
	sealed := seal(b, pr, string(benchMessage(size)), nil)
	p := OpenParams{Identity: pr.receiver, Partners: pr.partners, SpoolDir: b.TempDir()}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Open(context.Background(), io.Discard, bytes.NewReader(sealed), p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeal4KiB(b *testing.B)  { benchSeal(b, 4<<10) }
func BenchmarkSeal64KiB(b *testing.B) { benchSeal(b, 64<<10) }
func BenchmarkSeal1MiB(b *testing.B)  { benchSeal(b, 1<<20) }
func BenchmarkOpen4KiB(b *testing.B)  { benchOpen(b, 4<<10) }
func BenchmarkOpen64KiB(b *testing.B) { benchOpen(b, 64<<10) }
func BenchmarkOpen1MiB(b *testing.B)  { benchOpen(b, 1<<20) }
