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
		leavers = append(leavers, &item{Mapping: Mapping{EntityID: strings.TrimSpace(*c.Fields[FieldGlobalID]), Key: key, Status: csd.StatusInactive}, leaver: true})
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

// breaker holds back every retirement of a reconciliation that would
// retire more than the allowed share of the managed contacts: an empty or
// half-loaded registry looks exactly like a mass departure.
func (s *Syncer) breaker(items []*item, idx *index, boot bootstrap, rs ReconcileSettings, confirmed bool, r *Report) {
	managed := 0
	for _, c := range idx.byUUID {
		if globalID(c) != "" && inGroup(c, boot.GroupUUID) {
			managed++
		}
	}
	var retiring []*item
	for _, it := range items {
		if it.action == actionRetire && it.failed == "" && (it.rec.UUID != "" || idx.byKey[it.Key] != nil) {
			retiring = append(retiring, it)
		}
	}
	if len(retiring) == 0 || confirmed || float64(len(retiring)) <= rs.maxShare()*float64(managed) {
		return
	}
	why := fmt.Sprintf("this reconciliation would retire %d of the %d contacts in the group, more than the %.0f%% allowed", len(retiring), managed, 100*rs.maxShare())
	if r.Providers == 0 {
		why = fmt.Sprintf("the registry returned no providers, so this reconciliation would retire all %d contacts in the group", managed)
	}
	r.RetireHeld = len(retiring)
	r.Breaker = why + ": none was retired; if the registry is right, run a full sync with the retirement confirmed (sync --full --confirm-retire, or POST /sync?full=true&confirm_retire=true)"
	s.opts.Logger.Warn("circuit breaker: retirements held", "held", len(retiring), "managed", managed, "reason", why)
	for _, it := range retiring {
		it.action, it.held = actionNone, true
	}
}
