package mediator

import (
	"net/http"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

// A provider whose create was deferred (RapidPro throttled the run) is
// created by the next run from the pending work; with write-back on, that
// run must write its contact UUID back too.
func TestWriteBackOfAPendingProvider(t *testing.T) {
	e := newEnv(t, envOptions{doc: directory(staff(2)...), retryCap: time.Second,
		tune: func(s *Settings) { s.WriteBack.Enabled = true }})
	e.workspace.Inject(rapidprotest.Fault{Method: http.MethodPost, Path: "/api/v2/contacts.json", Status: http.StatusTooManyRequests, RetryAfter: time.Hour})
	tx := e.trigger()
	wantProps(t, tx, map[string]string{"deferred": "2"})
	e.clock.Advance(2 * time.Hour)
	tx = e.trigger()
	wantProps(t, tx, map[string]string{"created": "2", "pending": "0"})
	ids := e.otherIDs()
	for _, c := range e.workspace.Contacts() {
		if got := ids[field(c, "globalid")]; len(got) != 1 || got[0].Value != c.UUID {
			t.Errorf("%s carries %+v after the sync that created its contact %s", field(c, "globalid"), got, c.UUID)
		}
	}
}

// An authority configured with a trailing slash (a URL, as the first
// mediator's {rapidpro.url}/{slug} often is): a full sync must not add a
// second otherID.
func TestWriteBackAuthorityWithTrailingSlashIsIdempotent(t *testing.T) {
	e := newEnv(t, envOptions{doc: directory(staff(2)...),
		tune: func(s *Settings) {
			s.WriteBack.Enabled, s.WriteBack.Authority = true, "https://rapidpro.example.org/mhero/"
		}})
	e.trigger()
	e.triggerWith("full=true")
	for key, ids := range e.otherIDs() {
		if len(ids) != 1 {
			t.Errorf("%s carries %d otherIDs after a full sync: %+v", key, len(ids), ids)
		}
	}
}

// A code typed with a stray space (through the console, say) is written and
// recognised trimmed: a full sync adds no second otherID.
func TestWriteBackCodeWithSpaceIsIdempotent(t *testing.T) {
	e := newEnv(t, envOptions{doc: directory(staff(2)...), tune: func(s *Settings) { s.WriteBack.Enabled, s.WriteBack.Code = true, "mhero_contact " }})
	e.trigger()
	e.triggerWith("full=true")
	ids := e.otherIDsWithCode("mhero_contact")
	for key, got := range ids {
		if len(got) != 1 {
			t.Errorf("%s carries %+v", key, got)
		}
	}
	if len(ids) != 2 {
		t.Fatalf("%d providers carry the otherID", len(ids))
	}
}
