package mediator

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"strings"

	"github.com/openhie/mhero-mediator/csd"
)

// action is what a provider needs from RapidPro in this run.
type action int

const (
	// actionNone: nothing to write, because the contact already is what the
	// state's digest says was confirmed, or the provider is skipped or
	// rejected before any write.
	actionNone action = iota
	// actionSync: create or update the contact and put it in the group.
	actionSync
	// actionRetire: apply the inactive policy to the contact, if any.
	actionRetire
)

// item is one provider's way through a run.
type item struct {
	Mapping
	rec          Record // what the state knew of it
	wasPending   bool   // left by an earlier run; cleared from the state once settled
	action       action
	digest       string // of the desired outcome; stored once it is confirmed
	raw          string // of the registry record it was mapped from; stored with digest
	failed       string // reason, when the provider was rejected before any write
	failedDetail string

	uuid     string // the contact a group action applies to
	noDigest bool   // the write landed but not as wanted (a phone held elsewhere)
	retried  bool   // a conflict already tried again after the other writes
	lookedUp bool   // a create's taken phones already looked up
	readErr  error  // its contact or a new phone could not be read

	retryRejected bool     // a reconciliation: a standing reject is tried again
	held          bool     // a retirement the circuit breaker held back
	queued        bool     // kept for a phase after the items' own writes
	pulled        bool     // pulled in this run (not only left pending by an earlier one)
	carried       []string // contact UUIDs the provider already carries as write-back otherIDs
	waiting       bool     // a conflict carried to a later chunk (see writer.carryOver)
	contactUUID   string   // the contact confirmed as desired in this run

	setBlocked, clearBlocked bool // this run blocked the contact, or unblocked it

	outcome, outcomeDetail string // what the run did (or a dry run would do), for the plan
}

// release lets go of what only the provider's own writes needed, so that a
// run holds the contacts of the providers still to write, not of all.
func (it *item) release() {
	it.Contact, it.Targets, it.Problems = Contact{}, nil, nil
}

// note records what happens to the provider in this run; a later step (a
// failed write, a group action) overrides an earlier one.
func (it *item) note(outcome, detail string) { it.outcome, it.outcomeDetail = outcome, detail }

// blocked tells whether the contact stands blocked by this service after
// this run.
func (it *item) blocked() bool { return (it.rec.Blocked || it.setBlocked) && !it.clearBlocked }

func (it *item) leaveReason() string {
	if it.Left {
		return "no longer in the registry"
	}
	return "inactive in the registry"
}

// decide works out the desired outcome and whether RapidPro must be asked.
// An inactive provider is retired whatever its phones: a worker who left
// and whose phone was struck off at the same time must still leave.
func (it *item) decide(policy string) {
	switch {
	case it.Key == "" || it.failed != "":
		return
	case it.Status == csd.StatusInactive:
		it.digest = digestOf("inactive", policy)
		if policy != InactiveIgnore && it.unsettled() {
			it.action = actionRetire
		}
	case it.Skipped != "":
		it.digest = digestOf("skipped", it.Skipped)
	default:
		it.digest = contactDigest(it.Contact)
		if it.unsettled() {
			it.action = actionSync
		}
	}
}

// unsettled tells a desired outcome that was neither confirmed nor refused
// as it stands.
func (it *item) unsettled() bool { return it.rec.Digest != it.digest && !it.standingReject() }

// standingReject tells a provider whose very data was rejected before.
func (it *item) standingReject() bool {
	return it.digest != "" && it.rec.Rejected == it.digest && !it.retryRejected
}

// contactDigest sums up what this service owns of an active worker's
// contact: the name, the language, the phones as a set, the owned fields, and membership
// of the managed group while not blocked (implied by "active").
func contactDigest(c Contact) string {
	urns := slices.Sorted(slices.Values(c.URNs))
	parts := []string{"active", c.Name, c.Language, strings.Join(urns, " ")}
	for _, k := range slices.Sorted(maps.Keys(c.Fields)) {
		parts = append(parts, k+"="+c.Fields[k])
	}
	return digestOf(parts...)
}

// digestOf hashes parts unambiguously (NUL cannot occur in them).
func digestOf(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:16])
}
