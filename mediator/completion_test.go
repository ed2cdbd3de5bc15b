package mediator

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/openhim/openhimtest"
)

// newTestCompleter runs a completer against the fake core until the test
// ends, reporting each transaction it completes on done.
func newTestCompleter(t *testing.T, core *openhimtest.Core, state *State, done chan string) *Completer {
	t.Helper()
	client := openhim.NewClient(openhim.Config{BaseURL: core.URL(), Auth: openhim.NewBasicAuth("root@openhim.org", "openhim-password"), HTTPClient: core.Client()})
	c := &Completer{State: state, Put: client.PutTransaction, MediatorURN: testURN, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		OnDone: func(id string) { done <- id }}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-stopped })
	return c
}

func transaction(t *testing.T, core *openhimtest.Core, id string) openhimtest.Transaction {
	t.Helper()
	txs := core.Transactions()
	i := slices.IndexFunc(txs, func(tx openhimtest.Transaction) bool { return tx.ID == id })
	if i < 0 {
		t.Fatalf("core has no transaction %s", id)
	}
	return txs[i]
}

// A run longer than the answer budget is answered Processing at once, and
// the transaction ends with the run's status, counts and orchestrations.
func TestLongRunCompletesItsTransactionLater(t *testing.T) {
	gate := &gateTransport{entered: make(chan struct{}), release: make(chan struct{})}
	e := newEnv(t, envOptions{rapidProHTTP: &http.Client{Transport: gate}, answerBudget: time.Second})
	go func() { <-gate.entered }() // the run's first RapidPro call is held past the budget
	tx := e.trigger()
	if tx.Response.Status != openhim.StatusProcessing {
		t.Fatalf("answered %s: %s", tx.Response.Status, tx.RawBody)
	}
	close(gate.release)
	if id := <-e.completed; id != tx.ID {
		t.Fatalf("completed %s, want %s", id, tx.ID)
	}
	final := transaction(t, e.core, tx.ID)
	if final.Status != openhim.StatusCompletedWithErrors || final.Response.Properties["created"] != "16" || len(final.Response.Orchestrations) == 0 {
		t.Fatalf("the completed transaction: %s %s", final.Status, final.RawBody)
	}
	// A short run is answered at once, as before.
	if short := e.trigger(); short.Response.Status == openhim.StatusProcessing {
		t.Fatalf("a short run answered Processing")
	}
}

// A service restarted while a run it answered Processing went on completes
// that transaction as failed: the run's work is pending in the state.
func TestRestartCompletesAnInterruptedTransaction(t *testing.T) {
	e := newEnv(t, envOptions{})
	tx := e.trigger()
	if err := e.state.putCompletion(tx.ID, nil); err != nil { // as the service left it
		t.Fatal(err)
	}
	done := make(chan string, 1)
	newTestCompleter(t, e.core, e.state, done) // the restarted service's
	if id := <-done; id != tx.ID {
		t.Fatalf("completed %s", id)
	}
	if final := transaction(t, e.core, tx.ID); final.Status != openhim.StatusFailed {
		t.Fatalf("the interrupted transaction: %s %s", final.Status, final.RawBody)
	}
	if left, _ := e.state.completions(); len(left) != 0 {
		t.Fatalf("completions left in the state: %v", left)
	}
}

// A completion core can never take (the transaction is gone: 404) is
// dropped, not retried for ever.
func TestCompletionCoreRefusesIsDropped(t *testing.T) {
	e := newEnv(t, envOptions{})
	done := make(chan string, 1)
	c := newTestCompleter(t, e.core, e.state, done)
	if err := c.complete("0123456789abcdef01234567", inProgressResponse(testURN)); err != nil {
		t.Fatal(err)
	}
	<-done
	if left, _ := e.state.completions(); len(left) != 0 {
		t.Fatalf("a completion core answers 404 for is kept: %d left", len(left))
	}
}
