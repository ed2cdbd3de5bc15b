package csd_test

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/openhie/mhero-mediator/csd"
)

// endless is a document that never ends: head once, then unit forever,
// produced as it is read so that the input itself takes no memory. Every
// sampleEvery bytes it samples the heap, because what matters is the peak
// while the decoder runs, not what is left once it has failed.
type endless struct {
	head, unit  string
	produced    int64
	nextSample  int64
	base, peak  uint64
	sampleEvery int64
	pending     string
}

func newEndless(head, unit string) *endless {
	e := &endless{head: head, unit: unit, pending: head, sampleEvery: 1 << 20}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	e.base, e.peak = ms.HeapInuse, ms.HeapInuse
	return e
}

func (e *endless) Read(p []byte) (int, error) {
	if e.produced >= e.nextSample {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		e.peak = max(e.peak, ms.HeapInuse)
		e.nextSample += e.sampleEvery
	}
	n := 0
	for n < len(p) {
		if e.pending == "" {
			e.pending = e.unit
		}
		k := copy(p[n:], e.pending)
		e.pending = e.pending[k:]
		n += k
	}
	e.produced += int64(n)
	return n, nil
}

func (e *endless) growth() uint64 { return e.peak - e.base }

func TestDecodeEndlessStreamMemoryIsBounded(t *testing.T) {
	const ns = `<CSD xmlns="urn:ihe:iti:csd:2013">`
	const heapBound = 64 << 20
	tests := []struct {
		name, head, unit string
		lim              csd.Limits
		// The error: limit, element and line; maxRead bounds the bytes read
		// before it (0: MaxElementBytes and the decoder's buffer).
		limit, element string
		line           int
		maxRead        int64
	}{
		{
			name:    "one text node of a provider",
			head:    ns + "<providerDirectory>\n<provider entityID=\"a\"><demographic><name><commonName>",
			unit:    strings.Repeat("a", 4096),
			limit:   "element size",
			element: "provider",
			line:    2,
		},
		{
			name:  "one attribute value",
			head:  ns + "<providerDirectory>\n\n<provider entityID=\"",
			unit:  strings.Repeat("b", 4096),
			limit: "element size",
			line:  3,
		},
		{
			name:    "children of one provider",
			head:    ns + "<providerDirectory><provider entityID=\"a\">",
			unit:    `<otherID code="c" assigningAuthorityName="x">1</otherID>`,
			limit:   "element size",
			element: "provider",
			line:    1,
		},
		{
			name:  "a comment",
			head:  ns + "\n<!--",
			unit:  strings.Repeat("-a", 2048),
			limit: "element size",
			line:  2,
		},
		{
			name:  "an internal DTD subset",
			head:  "<!DOCTYPE CSD [<!ENTITY a \"",
			unit:  strings.Repeat("&a;", 1000),
			limit: "element size",
			line:  1,
		},
		{
			name:    "a skipped facility",
			head:    ns + "<facilityDirectory><facility entityID=\"f\">",
			unit:    "<x>text</x>",
			limit:   "element size",
			element: "facility",
			line:    1,
		},
		{
			name: "providers in one page",
			head: ns + "<providerDirectory>",
			unit: `<provider entityID="urn:uuid:0f000000-0000-4000-8000-000000000000"><demographic><name><commonName>Musu Kollie</commonName></name>` +
				`<contactPoint><codedType code="BP" codingScheme="urn:ihe:iti:csd:2013:contactPoint">0777 123 456</codedType></contactPoint></demographic></provider>`,
			lim:     csd.Limits{MaxBytes: 32 << 20},
			limit:   "body size",
			line:    1,
			maxRead: 32<<20 + 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := newEndless(tt.head, tt.unit)
			providers := 0
			stats, err := csd.DecodeProviders(in, tt.lim, func(*csd.Provider) error {
				providers++
				return nil
			})
			var le *csd.LimitError
			if !errors.As(err, &le) {
				t.Fatalf("error %v, want a LimitError", err)
			}
			if le.Limit != tt.limit || le.Element != tt.element || le.Line != tt.line {
				t.Errorf("LimitError %+v (%v), want limit %q, element %q, line %d", *le, err, tt.limit, tt.element, tt.line)
			}
			maxRead := tt.maxRead
			if maxRead == 0 {
				maxRead = csd.DefaultLimits.MaxElementBytes + int64(len(tt.head)) + 64<<10
			}
			if stats.Bytes > maxRead {
				t.Errorf("read %d bytes before failing, want at most %d", stats.Bytes, maxRead)
			}
			t.Logf("%v; read %d bytes, %d providers, heap growth %d bytes", err, stats.Bytes, providers, in.growth())
			if in.growth() > heapBound {
				t.Errorf("heap grew by %d bytes (> %d) while decoding", in.growth(), heapBound)
			}
		})
	}
}

func TestDecodeElementSizeLimit(t *testing.T) {
	big := strings.Repeat("x", 2000)
	tests := []struct {
		name    string
		doc     string
		max     int64
		wantErr string // empty: no error
	}{
		{"provider under the limit", wrapCSD(`<provider entityID="a">` + big[:500] + `</provider>`), 1000, ""},
		{"provider over the limit", wrapCSD("\n\n" + `<provider entityID="a"><extension>` + big + `</extension></provider>`), 1000,
			"csd: line 3: element size limit exceeded (provider element longer than 1000 bytes)"},
		{"providers each under the limit", wrapCSD(strings.Repeat(`<provider entityID="a">`+big[:500]+`</provider>`, 10)), 1000, ""},
		{"long text outside providers", `<CSD xmlns="urn:ihe:iti:csd:2013">` + big + `</CSD>`, 1000,
			"csd: line 1: element size limit exceeded (text, tag, comment or DOCTYPE longer than 1000 bytes)"},
		{"other directory entry", `<CSD xmlns="urn:ihe:iti:csd:2013"><serviceDirectory><service entityID="s">` + big + `</service></serviceDirectory></CSD>`, 1000,
			"service element longer than 1000 bytes"},
		{"bare provider root", `<provider entityID="a" xmlns="urn:ihe:iti:csd:2013">` + big + `</provider>`, 1000,
			"provider element longer than 1000 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := csd.DecodeProviders(strings.NewReader(tt.doc), csd.Limits{MaxElementBytes: tt.max}, func(*csd.Provider) error { return nil })
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestDecodeDirectoryElementSizeLimit(t *testing.T) {
	doc := fmt.Sprintf(`<CSD xmlns="urn:ihe:iti:csd:2013"><facilityDirectory><facility entityID="f1"><primaryName>%s</primaryName></facility></facilityDirectory></CSD>`, strings.Repeat("é", 600))
	if _, err := csd.DecodeDirectory(strings.NewReader(doc), csd.Limits{MaxElementBytes: 1000}); err == nil ||
		!strings.Contains(err.Error(), "facility element longer than 1000 bytes") {
		t.Errorf("err = %v", err)
	}
	if _, err := csd.DecodeDirectory(strings.NewReader(doc), csd.Limits{MaxElementBytes: 2000}); err != nil {
		t.Errorf("under the limit: %v", err)
	}
}
