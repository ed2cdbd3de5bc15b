package mediator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/openhie/mhero-mediator/csd"
)

// carriedIDs lists the values of the provider's otherIDs with the
// write-back code and authority: the contact UUIDs already written back.
func carriedIDs(p *csd.Provider, want csd.OtherID) []string {
	out := []string{}
	for _, id := range p.OtherIDs {
		if strings.EqualFold(strings.TrimSpace(id.Code), want.Code) &&
			strings.EqualFold(strings.TrimRight(strings.TrimSpace(id.AssigningAuthorityName), "/"), want.AssigningAuthorityName) {
			out = append(out, strings.ToLower(strings.TrimSpace(id.Value)))
		}
	}
	return out
}

// confirmed is what a write-back needs of a provider the run handled:
// kept for every chunk of the run, where the items are let go.
type confirmed struct {
	key, entityID string
	uuid          string // the contact confirmed as an active worker's in this run, if any
	pulled        bool
	carried       []string
}

func confirmedOf(items []*item) []confirmed {
	var out []confirmed
	for _, it := range items {
		uuid := it.contactUUID
		if it.Status == csd.StatusInactive || it.Left {
			uuid = ""
		}
		if it.Key != "" && (uuid != "" || it.pulled) {
			out = append(out, confirmed{key: it.Key, entityID: strings.TrimSpace(it.EntityID), uuid: uuid, pulled: it.pulled, carried: it.carried})
		}
	}
	return out
}

// writeBack writes the contact UUID of every provider confirmed in this run
// to the provider in OpenInfoMan, unless the pulled record carries it
// already, and retries those an earlier run could not write. It goes one
// provider at a time through the updating stored function, never by
// rebuilding a document, and keeps what failed for the next run. The error
// is the state's; OpenInfoMan's failures are in the report.
func (s *Syncer) writeBack(ctx context.Context, settings Settings, done []confirmed, r *Report) error {
	todo, err := s.opts.State.writeBacks()
	if err != nil {
		return err
	}
	// An earlier attempt may have landed with its answer lost, and the
	// function appends: those are read again first, unless pulled now.
	unsure := maps.Clone(todo)
	for _, c := range done {
		if c.uuid == "" || slices.Contains(c.carried, strings.ToLower(c.uuid)) {
			continue
		}
		todo[c.key] = writeBack{EntityID: c.entityID, UUID: c.uuid}
		if !c.pulled {
			// Left pending by an earlier run: what the provider carries was
			// not read in this one.
			unsure[c.key] = todo[c.key]
		}
	}
	for _, c := range done {
		if c.pulled {
			delete(unsure, c.key)
			if slices.Contains(c.carried, strings.ToLower(todo[c.key].UUID)) {
				delete(todo, c.key)
				if err := s.opts.State.setWriteBack(c.key, nil); err != nil {
					return err
				}
			}
		}
	}
	oim := settings.OpenInfoMan
	client := s.oimClient(oim, oim.Document)
	ph := r.startPhase("OpenInfoMan write-back", http.MethodPost, oim.URL,
		"/CSD/csr/"+oim.Document+"/careServicesRequest/update/"+csd.CreateOtherID, s.opts.Now)
	var firstErr error
	for _, key := range slices.Sorted(func(yield func(string) bool) {
		for k := range todo {
			if !yield(k) {
				return
			}
		}
	}) {
		wb := todo[key]
		var err error
		written := false
		if _, check := unsure[key]; check && ctx.Err() == nil {
			written, err = s.carries(ctx, client, wb, settings.otherID(""), ph)
		}
		switch {
		case err != nil || written:
		case ctx.Err() != nil:
			err = ctx.Err()
		default:
			ph.Requests++
			err = client.AddOtherID(ctx, wb.EntityID, settings.otherID(wb.UUID))
		}
		switch {
		case err == nil:
			r.WrittenBack++
			err = s.opts.State.setWriteBack(key, nil)
		case errors.Is(err, csd.ErrNoSuchProvider):
			// Gone from the registry since it was pulled: nothing to write to.
			r.WriteBackFailed++
			r.addReject(Reject{EntityID: wb.EntityID, Reason: "write_back", Detail: err.Error()})
			err = s.opts.State.setWriteBack(key, nil)
		default:
			r.WriteBackFailed++
			if firstErr == nil {
				firstErr = err
			}
			s.opts.Logger.Warn("write-back failed, retried next run", "entity_id", wb.EntityID, "err", err)
			err = s.opts.State.setWriteBack(key, &wb)
		}
		if err != nil {
			ph.end(s.opts.Now, err, "")
			return err
		}
	}
	ph.end(s.opts.Now, firstErr, fmt.Sprintf("%d contact UUIDs written back, %d failed", r.WrittenBack, r.WriteBackFailed))
	return nil
}

// carries reads a provider again to tell whether it already carries the
// contact UUID.
func (s *Syncer) carries(ctx context.Context, client *csd.Client, wb writeBack, want csd.OtherID, ph *Phase) (bool, error) {
	found := false
	stats, err := client.Providers(ctx, csd.ProviderQuery{EntityID: wb.EntityID}, func(p *csd.Provider) error {
		found = found || slices.Contains(carriedIDs(p, want), strings.ToLower(wb.UUID))
		return nil
	})
	ph.Requests += stats.Requests
	return found, err
}
