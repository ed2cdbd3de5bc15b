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
func (s *Syncer) addLeavers(items []*item, idx *index, boot bootstrap, policy string, fresh bool) ([]*item, error) {
	inRegistry := make(map[string]bool, len(items))
	for _, it := range items {
		if it.Key != "" {
			inRegistry[it.Key] = true
		}
	}
	var leavers []*item
	for _, c := range idx.byUUID {
		key := globalID(c)
		if key == "" || inRegistry[key] || !inGroup(c, boot.GroupUUID) || len(idx.duplicates[key]) > 0 {
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
// (and says so) until an operator confirms. reconciled says the run read
// the whole group, which then gives the managed count.
func (s *Syncer) breaker(items []*item, idx *index, boot bootstrap, policy string, rs ReconcileSettings, confirmed, reconciled bool, r *Report) error {
	var retiring []*item
	for _, it := range items {
		if c := idx.contactFor(it); it.action == actionRetire && it.failed == "" && c != nil && c.Status == "active" {
			retiring = append(retiring, it)
		}
	}
	emptyRegistry := reconciled && r.Providers == 0
	if len(retiring) == 0 || confirmed || (len(retiring) <= breakerFloor && !emptyRegistry) {
		return nil
	}
	managed := 0
	if reconciled {
		for _, c := range idx.byUUID {
			if globalID(c) != "" && inGroup(c, boot.GroupUUID) {
				managed++
			}
		}
	} else {
		var err error
		if managed, err = s.opts.State.managed(digestOf("inactive", policy)); err != nil {
			return err
		}
	}
	if !emptyRegistry && float64(len(retiring)) <= rs.maxShare()*float64(managed) {
		return nil
	}
	why := fmt.Sprintf("this run would retire %d of the %d contacts the service manages, more than the %.0f%% allowed", len(retiring), managed, 100*rs.maxShare())
	if emptyRegistry {
		why = fmt.Sprintf("the registry returned no providers, so this reconciliation would retire all %d contacts in the group", managed)
	}
	r.RetireHeld = len(retiring)
	r.Breaker = why + ": none was retired, and each run holds them until the registry is corrected or an operator confirms (sync --confirm-retire, or POST /sync?confirm_retire=true)"
	s.opts.Logger.Warn("circuit breaker: retirements held", "held", len(retiring), "managed", managed, "reason", why)
	for _, it := range retiring {
		it.action, it.held = actionNone, true
	}
	return nil
}
