package mediator

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/openhim"
)

// Concurrent writes end where writes one at a time end, through phones
// handed along a chain of workers, shared by two workers, and given up.
func TestConcurrentWritesEndAsOneAtATime(t *testing.T) {
	const workers = 60
	phone := func(i int) string { return fmt.Sprintf("0777 %03d %03d", i/1000, i%1000) }
	first := make([]hw, workers)
	for i := range first {
		first[i] = hw{id: fmt.Sprintf("urn:uuid:w%02d", i), name: fmt.Sprintf("Worker %d", i), phones: []string{phone(i)}}
	}
	// The delta: worker i takes worker i+1's phone along chains of five,
	// every seventh worker shares a phone with the one before, and every
	// eleventh is renamed.
	delta := slices.Clone(first)
	for i := range delta {
		w := &delta[i]
		w.updated = later
		switch {
		case i%5 != 4:
			w.phones = []string{phone(i + 1)}
		default:
			w.phones = []string{phone(1000 + i)}
		}
		if i%7 == 6 {
			w.phones = append(w.phones, delta[i-1].phones[0])
		}
		if i%11 == 10 {
			w.name += " Renamed"
		}
	}
	type outcome struct {
		contacts map[string]string
		counts   map[string]string
	}
	run := func(concurrency int) outcome {
		e := newEnv(t, envOptions{concurrency: concurrency})
		e.setDirectory(first...)
		if tx := e.trigger(); tx.Response.Status != openhim.StatusSuccessful {
			t.Fatalf("concurrency %d: first run %q: %s", concurrency, tx.Response.Status, tx.RawBody)
		}
		e.setDirectory(delta...)
		tx, _ := e.next()
		got := outcome{contacts: map[string]string{}, counts: map[string]string{}}
		for k, v := range tx.Response.Properties {
			if k != "started" && k != "watermark" && k != "since" {
				got.counts[k] = v
			}
		}
		for _, c := range e.workspace.Contacts() {
			got.contacts[globalID(&c)] = fmt.Sprintf("%s %q %s", c.Name, c.URNs, groupNames(c))
		}
		return got
	}
	one, eight := run(1), run(8)
	for k, v := range one.contacts {
		if eight.contacts[k] != v {
			t.Errorf("contact %s: one at a time %s, concurrent %s", k, v, eight.contacts[k])
		}
	}
	if len(one.contacts) != len(eight.contacts) {
		t.Errorf("%d contacts one at a time, %d concurrent", len(one.contacts), len(eight.contacts))
	}
	for k, v := range one.counts {
		if eight.counts[k] != v {
			t.Errorf("count %s: one at a time %s, concurrent %s", k, v, eight.counts[k])
		}
	}
}

// inFlight counts the requests on the wire at once, each held for a
// network round trip.
type inFlight struct {
	mu       sync.Mutex
	now, max int
	latency  time.Duration
}

func (f *inFlight) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	f.now++
	f.max = max(f.max, f.now)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.now--
		f.mu.Unlock()
	}()
	time.Sleep(f.latency) // the round trip itself, not a wait for an event
	return http.DefaultTransport.RoundTrip(r)
}

// Writes overlap up to the configured bound, and never beyond it.
func TestWriteConcurrencyIsBounded(t *testing.T) {
	const workers, bound = 120, 6
	var dir []hw
	for i := range workers {
		dir = append(dir, hw{id: fmt.Sprintf("urn:uuid:c%03d", i), name: "Worker", phones: []string{fmt.Sprintf("0886 %03d %03d", i/1000, i%1000)}})
	}
	rt := &inFlight{latency: 2 * time.Millisecond}
	e := newEnv(t, envOptions{concurrency: bound, rapidProHTTP: &http.Client{Transport: rt}, pageSize: 50})
	e.setDirectory(dir...)
	tx := e.trigger()
	wantProps(t, tx, map[string]string{"created": fmt.Sprint(workers)})
	if rt.max > bound || rt.max < 2 {
		t.Errorf("at most %d requests in flight at once, want 2 to %d", rt.max, bound)
	}
	if n := len(contactsByGlobalID(e.workspace.Contacts())); n != workers {
		t.Errorf("%d contacts, want %d", n, workers)
	}
}
