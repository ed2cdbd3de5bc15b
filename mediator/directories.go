package mediator

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/openhie/mhero-mediator/csd"
)

// checkMapping fingerprints the settings that shape a contact (country,
// targeting, directory documents, cadre names) and tells whether they
// differ from those the state was mapped with; if so (and not dry) the
// directories start over and every provider is pulled and mapped again,
// its link kept.
func (s *Syncer) checkMapping(settings Settings, boot bootstrap, t *Targeting, dry bool) (fp string, changed bool, err error) {
	parts := []string{"mapping", boot.Country, settings.OpenInfoMan.URL, settings.OpenInfoMan.Document,
		settings.Targeting.facilitiesDocument(settings), settings.Targeting.organizationsDocument(settings),
		settings.Targeting.CadreScheme, strconv.Itoa(settings.Targeting.districtLevel()), settings.Targeting.DistrictCode}
	for _, f := range t.fieldKeys() {
		parts = append(parts, f.Key)
	}
	for _, code := range slices.Sorted(maps.Keys(s.opts.CadreNames)) {
		parts = append(parts, code, s.opts.CadreNames[code])
	}
	fp = digestOf(parts...)
	marks, err := s.opts.State.directoryMarks()
	if err != nil || marks.mapping == fp {
		return fp, false, err
	}
	if dry {
		return fp, true, nil
	}
	return fp, true, s.opts.State.Remap(fp)
}

// loadMarks reads where the state stands. A run that starts the state
// over (fresh: a dry run's new target) trusts none of it; a dry run's new
// mapping trusts the links and scan but not the watermark or directories,
// as Remap would have dropped them.
func (s *Syncer) loadMarks(fresh, dryRemap bool) (runMarks, directoryMarks, error) {
	none := directoryMarks{since: map[csd.EntityKind]time.Time{}}
	if fresh {
		return runMarks{}, none, nil
	}
	marks, err := s.opts.State.marks()
	if err != nil {
		return marks, directoryMarks{}, err
	}
	dir, err := s.opts.State.directoryMarks()
	if dryRemap {
		marks.watermark = time.Time{}
		none.reconciled = dir.reconciled
		dir = none
	}
	return marks, dir, err
}

// oimClient is an OpenInfoMan client for one document.
func (s *Syncer) oimClient(settings OpenInfoManSettings, document string) *csd.Client {
	return &csd.Client{
		BaseURL:    settings.URL,
		Document:   document,
		Username:   settings.Username,
		Password:   settings.Password,
		PageSize:   settings.PageSize,
		HTTPClient: s.opts.OpenInfoManHTTP,
	}
}

// pullDirectories brings the stored facility and organization directories
// up to date with what changed in OpenInfoMan since their last pull, and
// returns them whole. fromState starts from the stored places (not when the
// marks were not taken from the state either); dry keeps the changes in
// memory.
func (s *Syncer) pullDirectories(ctx context.Context, settings Settings, marks directoryMarks, r *Report, fromState, dry bool) (*Directory, error) {
	dir := NewDirectory()
	if fromState {
		var err error
		if dir, err = s.opts.State.Directory(); err != nil {
			return nil, err
		}
	}
	for _, d := range []struct {
		kind     csd.EntityKind
		document string
		function string
		pull     func(*csd.Client, context.Context, csd.EntityQuery, func(*csd.Entity) error) (csd.PullStats, error)
	}{
		{csd.KindOrganization, settings.Targeting.organizationsDocument(settings), csd.OrganizationSearch, (*csd.Client).Organizations},
		{csd.KindFacility, settings.Targeting.facilitiesDocument(settings), csd.FacilitySearch, (*csd.Client).Facilities},
	} {
		started := s.opts.Now().UTC()
		var q csd.EntityQuery
		if since := marks.since[d.kind]; !since.IsZero() {
			q.UpdatedSince = since.Add(-s.opts.WatermarkMargin)
		}
		ph := r.startPhase("OpenInfoMan "+string(d.kind)+"-search", http.MethodPost, settings.OpenInfoMan.URL,
			"/CSD/csr/"+d.document+"/careServicesRequest/"+d.function, s.opts.Now)
		u := directoryUpdate{kind: d.kind, places: map[string]Place{}, since: started}
		stats, err := d.pull(s.oimClient(settings.OpenInfoMan, d.document), ctx, q, func(e *csd.Entity) error {
			if dir.Add(d.kind, e) {
				key := csd.NormalizeID(e.EntityID)
				u.places[key] = placeOf(e)
			}
			return nil
		})
		ph.Requests = stats.Requests
		ph.end(s.opts.Now, err, fmt.Sprintf("%d %s entities read, %d new or changed", stats.Entities, d.kind, len(u.places)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.document, err)
		}
		// The first pull of a directory fills it; only a later change moves
		// what providers already mapped resolve to.
		u.changed = len(u.places) > 0 && !marks.since[d.kind].IsZero()
		r.DirectoryChanged = r.DirectoryChanged || u.changed
		if !stats.Complete() {
			u.since = marks.since[d.kind] // pull again from where it was
		}
		if !dry {
			if err := s.opts.State.saveDirectory(u); err != nil {
				return nil, err
			}
		}
	}
	return dir, nil
}
