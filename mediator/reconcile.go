package mediator

import (
	"fmt"
	"slices"
	"strings"

	"github.com/openhie/mhero-mediator/csd"
)

// addLeavers adds, after a complete pull of the whole registry, a retiring
// item for every contact of the managed group whose globalid the registry
// no longer has: the registry never deletes, but a document rebuilt without
// a worker, or a worker merged into another, leaves one behind.
func (s *Syncer) addLeavers(items []*item, idx *index, boot bootstrap, policy string, fresh bool, in *intake) ([]*item, error) {
	inRegistry := make(map[string]bool, len(items))
	for _, it := range items {
		if it.Key != "" {
			inRegistry[it.Key] = true
		}
	}
	var leavers []*item
	for _, c := range idx.byUUID {
		key := globalID(c)
		if key == "" || inRegistry[key] || in.settled.has(key) || in.wasMapped(key) || !inGroup(c, boot.GroupUUID) || len(idx.duplicates[key]) > 0 {
			continue
		}
		inRegistry[key] = true
		leavers = append(leavers, &item{Mapping: Mapping{EntityID: strings.TrimSpace(*c.Fields[FieldGlobalID]), Key: key, Status: csd.StatusInactive, Left: true}})
	}
	slices.SortFunc(leavers, func(a, b *item) int { return strings.Compare(a.Key, b.Key) })
	if err := s.records(leavers, fresh); err != nil {
		return nil, err
	}
	for _, it := range leavers {
		it.retryRejected = true // a reconciliation tries a refused retirement again
		it.decide(policy)
	}
	return append(items, leavers...), nil
}

// breakerFloor is how many retirements a run may make whatever the share,
// so that a pilot of a few contacts can still see a worker leave; two at
// once in a group of ten is already past the default share.
const breakerFloor = 1

// breaker holds back every retirement of a run that would retire more than
// the allowed share of the managed contacts: an empty or half-loaded
// registry, or a re-feed that marks half of it inactive, looks exactly like
// a mass departure. Held providers stay pending, so every run holds them
// (and says so) until an operator confirms; a confirmed retirement is not
// weighed again if a later run finishes it. Workers an earlier
// reconciliation found gone are judged only by a reconciliation, which sees
// the whole registry (reconciled: this run read all of it and the group).
func (s *Syncer) breaker(items []*item, idx *index, boot bootstrap, policy string, targetKeys []string, rs ReconcileSettings, confirmed, reconciled bool, r *Report) error {
	var retiring, waiting []*item
	for _, it := range items {
		switch c := idx.contactFor(it); {
		case it.action != actionRetire || it.failed != "" || it.RetireConfirmed:
		case it.Left && !reconciled:
			waiting = append(waiting, it)
		case c != nil && wouldRetire(c, policy, boot.GroupUUID, targetKeys):
			retiring = append(retiring, it)
		}
	}
	if len(waiting) > 0 {
		hold(waiting, idx, r)
		r.Breaker = fmt.Sprintf("%d workers an earlier reconciliation found gone from the registry wait for the next full reconciliation, which retires them if they are still gone (and confirmed) or holds them again", len(waiting))
	}
	emptyRegistry := reconciled && r.Providers == 0
	if confirmed {
		for _, it := range retiring {
			it.RetireConfirmed = true
		}
		return nil
	}
	// The waiting leavers are weighed with the rest: held together, they
	// are not let through one at a time.
	n := len(retiring) + len(waiting)
	if len(retiring) == 0 || (n <= breakerFloor && !emptyRegistry) {
		return nil
	}
	managed := idx.managed // the group was read whole
	if !reconciled {
		var err error
		if managed, err = s.opts.State.managed(digestOf("inactive", policy)); err != nil {
			return err
		}
	}
	if !emptyRegistry && float64(n) <= rs.maxShare()*float64(managed) {
		return nil
	}
	why := fmt.Sprintf("this run would retire %d of the %d contacts the service manages, more than the %.0f%% allowed", n, managed, 100*rs.maxShare())
	if emptyRegistry {
		why = fmt.Sprintf("the registry returned no providers, so this reconciliation would retire all %d contacts in the group", managed)
	}
	hold(retiring, idx, r)
	r.Breaker = why + ": none was retired, and each run holds them until the registry is corrected or an operator confirms (sync --confirm-retire, or POST /sync?confirm_retire=true, which also makes the run a full reconciliation)"
	s.opts.Logger.Warn("circuit breaker: retirements held", "held", len(retiring), "managed", managed, "reason", why)
	return nil
}

// hold keeps retirements back: their providers stay pending.
func hold(items []*item, idx *index, r *Report) {
	for _, it := range items {
		it.action, it.held = actionNone, true
		if c := idx.contactFor(it); c != nil {
			it.uuid = c.UUID
		} else {
			it.uuid = it.rec.UUID
		}
	}
	r.RetireHeld += len(items)
}
