package csd_test

import (
	"bytes"
	"io"
	"runtime"
	"testing"

	"github.com/openhie/mhero-mediator/csd"
	"github.com/openhie/mhero-mediator/csd/csdtest"
)

const benchProviders = 100_000

func BenchmarkDecodeProviders(b *testing.B) {
	var doc bytes.Buffer
	if err := csdtest.Generate(&doc, benchProviders, csdtest.GenerateOptions{Seed: 1}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(doc.Len()))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		stats, err := csd.DecodeProviders(bytes.NewReader(doc.Bytes()), csd.Limits{}, func(*csd.Provider) error { return nil })
		if err != nil || stats.Providers != benchProviders {
			b.Fatalf("%d providers, err %v", stats.Providers, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchProviders), "ns/provider")
}

// TestDecodeProvidersMemoryIsBounded decodes a 100,000-provider document
// that is generated while it is read, so the document itself is never in
// memory (the generator's own garbage is counted against us), and samples
// the heap as providers arrive: it must stay far below
// the document's size.
func TestDecodeProvidersMemoryIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("decodes a ~110 MB document")
	}
	if raceEnabled {
		t.Skip("the race detector slows this ~10× and distorts heap figures")
	}
	n := benchProviders
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(csdtest.Generate(pw, n, csdtest.GenerateOptions{Seed: 1}))
	}()

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapAlloc, ms.HeapAlloc
	seen := 0
	stats, err := csd.DecodeProviders(pr, csd.Limits{}, func(*csd.Provider) error {
		// ReadMemStats stops the world; every 100th provider is enough.
		if seen++; seen%100 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
		return nil
	})
	if err != nil || stats.Providers != n {
		t.Fatalf("%d providers, err %v", stats.Providers, err)
	}
	growth := peak - base
	t.Logf("document %d bytes (%d providers); heap before %d, peak %d, growth %d bytes (%.2f%% of the document)",
		stats.Bytes, n, base, peak, growth, 100*float64(growth)/float64(stats.Bytes))
	if growth > uint64(stats.Bytes)/10 {
		t.Errorf("heap grew by %d bytes while decoding %d bytes: not streaming", growth, stats.Bytes)
	}
}
