package mediator

import (
	"encoding/hex"
	"errors"
	"hash/maphash"
	"maps"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"

	"github.com/openhie/mhero-mediator/csd"
)

// A provider whose registry record is what its contact was last confirmed
// from (its Raw digest matches) maps to that contact again. Such a
// provider is counted and remembered by key only, not mapped and not held
// through the run: a touched registry or a full reconciliation of a
// national one then costs the pull and the group read, not a mapping and
// an item per health worker.

// rawContext sums up what a mapping reads besides the record: the mapping
// settings (their fingerprint, which holds the country), the inactive
// policy, and the places records resolve through.
func rawContext(mapping, policy string, dir *Directory) string {
	parts := []string{"raw", mappingCode, mapping, policy}
	if dir != nil {
		for _, places := range []map[string]Place{dir.Facilities, dir.Organizations} {
			parts = append(parts, strconv.Itoa(len(places)))
			for _, k := range slices.Sorted(maps.Keys(places)) {
				p := places[k]
				parts = append(parts, k, p.ID, p.Name, p.Parent, strconv.Itoa(len(p.Orgs)))
				parts = append(parts, p.Orgs...)
				parts = append(parts, strconv.Itoa(len(p.Codes)))
				parts = append(parts, p.Codes...)
			}
		}
	}
	return digestOf(parts...)
}

// mappingVersion names this release's mapping code: raise it with any change
// to what a record maps to (names, phone rules, targeting, the digest), so
// that the first run of the new release maps every provider again instead
// of trusting contacts confirmed under the old rules.
const mappingVersion = "1"

// mappingCode is the mapping code a Raw digest was made under: this
// release's mappingVersion and the phone-number libraries it was built with,
// whose metadata decides which numbers are valid.
var mappingCode = func() string {
	code := "mapping " + mappingVersion
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, m := range info.Deps {
			if m.Path == "github.com/nyaruka/gocommon" || m.Path == "github.com/nyaruka/phonenumbers/v2" {
				code += " " + m.Path + "@" + m.Version
			}
		}
	}
	return code
}()

// rawDigest is a record's Raw under a run's raw context.
func rawDigest(context string, p *csd.Provider) string {
	fp := p.Fingerprint()
	return digestOf(context, hex.EncodeToString(fp[:]))
}

// settledKind is what an unchanged provider counts as in a run's report.
type settledKind uint8

const (
	settledActive settledKind = iota
	settledInactive
	settledNoPhone
	settledInvalidPhone
)

// settledSet holds the providers a run found unchanged, by a hash of their
// key: a few bytes each, where an item is a kilobyte.
type settledSet struct {
	seed  maphash.Seed
	kinds map[uint64]settledKind
	// digests of the outcomes a settled provider can have, besides a contact
	inactive, noPhone, invalidPhone string
}

func newSettledSet(policy string) *settledSet {
	return &settledSet{
		seed: maphash.MakeSeed(), kinds: map[uint64]settledKind{},
		inactive: digestOf("inactive", policy), noPhone: digestOf("skipped", SkipNoPhone), invalidPhone: digestOf("skipped", SkipInvalidPhone),
	}
}

func (s *settledSet) hash(key string) uint64 { return maphash.String(s.seed, key) }

// has and len take a nil set (a plan's) as empty.
func (s *settledSet) has(key string) bool {
	if s == nil {
		return false
	}
	_, ok := s.kinds[s.hash(key)]
	return ok
}

func (s *settledSet) len() int {
	if s == nil {
		return 0
	}
	return len(s.kinds)
}

// kindOf tells what a confirmed record counts as, from its digest.
func (s *settledSet) kindOf(rec Record) settledKind {
	switch rec.Digest {
	case s.inactive:
		return settledInactive
	case s.noPhone:
		return settledNoPhone
	case s.invalidPhone:
		return settledInvalidPhone
	}
	return settledActive
}

func (s *settledSet) add(key string, rec Record) { s.kinds[s.hash(key)] = s.kindOf(rec) }

func (s *settledSet) remove(key string) { delete(s.kinds, s.hash(key)) }

// item takes a settled provider back into the run, as an item that needs
// nothing from RapidPro: a duplicate contact found for it, say, rejects it.
func (s *settledSet) item(key string, rec Record) *item {
	kind := s.kinds[s.hash(key)]
	s.remove(key)
	m := Mapping{EntityID: rec.EntityID, Key: key, Status: csd.StatusActive}
	switch kind {
	case settledInactive:
		m.Status = csd.StatusInactive
	case settledNoPhone:
		m.Skipped = SkipNoPhone
	case settledInvalidPhone:
		m.Skipped = SkipInvalidPhone
	}
	return &item{Mapping: m, rec: rec, digest: rec.Digest, raw: rec.Raw, pulled: true}
}

// count adds the settled providers to the report as the writer counts an
// unchanged item.
func (s *settledSet) count(r *Report) {
	if s == nil {
		return
	}
	for _, kind := range s.kinds {
		switch kind {
		case settledInactive:
			r.Inactive++
			r.Actions[OutcomeUnchanged]++
		case settledNoPhone:
			r.Skipped[SkipNoPhone]++
			r.Actions[OutcomeSkip]++
		case settledInvalidPhone:
			r.Skipped[SkipInvalidPhone]++
			r.Actions[OutcomeSkip]++
		default:
			r.Unchanged++
			r.Actions[OutcomeUnchanged]++
		}
	}
}

// stateError is a failure of the state met while pulling: the run is
// reported as failed on the state, not on OpenInfoMan.
type stateError struct{ err error }

func (e stateError) Error() string { return e.err.Error() }
func (e stateError) Unwrap() error { return e.err }

// isStateError tells an error of the state from one of the pull itself.
func isStateError(err error) bool {
	var se stateError
	return errors.As(err, &se)
}

// intake turns pulled providers into a run's items, leaving out those
// whose record is unchanged since their contact was confirmed, and spilling
// to disk the active ones mapped beyond what a run holds at once.
type intake struct {
	state   *State // nil: plan as if the state were empty (fresh)
	mapper  Mapper
	context string // rawContext of the run
	// settled receives the providers left out; nil maps every provider
	// (a plan lists each one).
	settled *settledSet
	pending map[string]bool // keys an earlier run left pending: done in their newer form
	// writeBack, when set, is the otherID a contact's UUID is written back
	// as; providers with a write-back to do are mapped.
	writeBack  *csd.OtherID
	writeBacks map[string]writeBack
	// mapped holds the keys taken as items or spilled, by a hash.
	mapped map[uint64]struct{}
	seed   maphash.Seed

	// Once held items reach maxHeld, an active provider is spilled to a
	// file made in spillDir (none: never; a plan lists each provider). A
	// key pulled again is held, beside its spilled copy (reload), so that
	// the duplicate check sees both.
	spillDir      string
	spill         *spill
	held, maxHeld int
	spilledKeys   map[uint64]struct{}
	reload        map[string]bool
}

func newIntake() *intake {
	return &intake{mapped: map[uint64]struct{}{}, seed: maphash.MakeSeed(), spilledKeys: map[uint64]struct{}{}, reload: map[string]bool{}}
}

// wasMapped tells a key already taken as an item or spilled in this run.
func (in *intake) wasMapped(key string) bool {
	_, ok := in.mapped[maphash.String(in.seed, key)]
	return ok
}

func (in *intake) take(p *csd.Provider) (*item, error) {
	key := p.Key()
	var rec Record
	if key != "" && in.state != nil {
		var err error
		if rec, err = in.state.Record(key); err != nil {
			return nil, stateError{err}
		}
	}
	if in.settled.has(key) {
		// Pulled twice (OpenInfoMan's pages overlapped): counted once, as
		// the copy taken last.
		in.settled.remove(key)
	}
	h := maphash.String(in.seed, key)
	if _, ok := in.spilledKeys[h]; ok && key != "" {
		delete(in.spilledKeys, h)
		in.reload[key] = true
	}
	raw := ""
	if key != "" {
		raw = rawDigest(in.context, p)
	}
	var carried []string
	if in.writeBack != nil {
		carried = carriedIDs(p, *in.writeBack)
	}
	if in.settles(key, rec, raw, p, carried) {
		in.settled.add(key, rec)
		if t := in.mapper.Targeting; t != nil {
			t.resolve(p) // for the run's counts of unresolved references
		}
		return nil, nil
	}
	m := in.mapper.Map(p)
	m.Targets = nil // the contact's fields hold them
	repeated := false
	if key != "" {
		repeated = in.wasMapped(key)
		in.mapped[h] = struct{}{}
	}
	if in.spillDir != "" && in.held >= in.maxHeld && !repeated && key != "" && m.Status == csd.StatusActive && m.Skipped == "" {
		// Retirements are never spilled: the circuit breaker weighs them all.
		if err := in.spillOut(spilled{Mapping: m, Rec: rec, Raw: raw, Carried: carried}); err != nil {
			return nil, stateError{err}
		}
		in.spilledKeys[h] = struct{}{}
		return nil, nil
	}
	in.held++
	return &item{Mapping: m, pulled: true, rec: rec, raw: raw, carried: carried}, nil
}

func (in *intake) spillOut(e spilled) error {
	if in.spill == nil {
		var err error
		if in.spill, err = newSpill(in.spillDir); err != nil {
			return err
		}
	}
	return in.spill.add(e)
}

// reloaded reads back the spilled copies of the keys pulled again, to be
// held with the rest, and readies the spill file for the chunks.
func (in *intake) reloaded() ([]*item, error) {
	if in.spill == nil {
		return nil, nil
	}
	var out []*item
	if len(in.reload) > 0 {
		if err := in.spill.rewind(); err != nil {
			return nil, err
		}
		for {
			back, err := in.spill.next(in.maxHeld, func(key string) bool { return !in.reload[key] })
			if err != nil {
				return nil, err
			}
			if len(back) == 0 {
				break
			}
			out = append(out, back...)
		}
	}
	return out, in.spill.rewind()
}

// nextChunk reads the next chunk of spilled providers, leaving out those
// held already.
func (in *intake) nextChunk() ([]*item, error) {
	if in.spill == nil {
		return nil, nil
	}
	chunk, err := in.spill.next(in.maxHeld, func(key string) bool { return in.reload[key] })
	for _, it := range chunk {
		delete(in.spilledKeys, maphash.String(in.seed, it.Key))
	}
	return chunk, err
}

// comesLater tells a key spilled and not yet read back: a later chunk
// writes it.
func (in *intake) comesLater(key string) bool {
	_, ok := in.spilledKeys[maphash.String(in.seed, key)]
	return ok && key != ""
}

// settles tells a provider whose contact was confirmed from this very
// record, with nothing left to do for it.
func (in *intake) settles(key string, rec Record, raw string, p *csd.Provider, carried []string) bool {
	switch {
	case in.settled == nil || key == "" || rec.Raw != raw || rec.Digest == "" || rec.Rejected != "" || in.pending[key]:
		return false
	case in.wasMapped(key):
		return false // a copy pulled earlier in the run is an item already, or spilled
	case in.writeBack == nil:
		return true
	}
	_, todo := in.writeBacks[key]
	return !todo && (rec.UUID == "" || p.Record.State() == csd.StatusInactive || slices.Contains(carried, strings.ToLower(rec.UUID)))
}

// unsettle takes back into the run each settled provider that a duplicate
// contact turned up for: it is rejected, as a mapped one would be.
func (s *Syncer) unsettle(items []*item, idx *index, settled *settledSet) ([]*item, error) {
	for _, key := range slices.Sorted(maps.Keys(idx.duplicates)) {
		if !settled.has(key) {
			continue
		}
		rec, err := s.opts.State.Record(key)
		if err != nil {
			return nil, err
		}
		items = append(items, settled.item(key, rec))
	}
	return items, nil
}
