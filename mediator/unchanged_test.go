package mediator

import (
	"context"
	"strings"
	"testing"

	"github.com/openhie/mhero-mediator/rapidpro"
)

// A reconciliation neither maps nor holds the workers whose records did not
// change, yet a second contact made since with one's globalid is still
// found and reported, as it would be for a worker mapped again.
func TestSettledWorkerWithADuplicateContactIsRejected(t *testing.T) {
	workers := staff(6)
	e := newEnv(t, envOptions{doc: directory(workers...)})
	wantProps(t, e.trigger(), map[string]string{"created": "6", "mapped": "6"})
	key := "urn:uuid:staff-02"
	copied := e.workspace.AddContact(rapidpro.Contact{Name: "Copy", URNs: []string{"tel:+231886555000"},
		Fields: map[string]*string{FieldGlobalID: &key}, Groups: []rapidpro.GroupRef{{Name: fixtureGroup}}})

	before := len(e.workspace.Requests())
	r, err := e.syncer.RunWith(context.Background(), RunOptions{Full: true})
	if err != nil || r.Err != nil {
		t.Fatal(err, r.Err)
	}
	if r.Mapped != 0 || r.Unchanged != 5 || r.Failed[ReasonDuplicateGlobalID] != 1 || r.Actions[OutcomeLeave] != 0 {
		t.Fatalf("mapped %d, unchanged %d, failed %v, actions %v; want 0 mapped, 5 unchanged, 1 duplicate, no leaver",
			r.Mapped, r.Unchanged, r.Failed, r.Actions)
	}
	if len(r.Rejects) != 1 || r.Rejects[0].EntityID != key || !strings.Contains(r.Rejects[0].Detail, copied.UUID) {
		t.Fatalf("rejects %+v, want staff-02's naming contact %s", r.Rejects, copied.UUID)
	}
	if w := e.writes(before); len(w) != 0 {
		t.Fatalf("the reconciliation wrote %d times", len(w))
	}
}
