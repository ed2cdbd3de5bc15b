package mediator

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/openhie/mhero-mediator/csd"
)

var (
	bucketRun       = []byte("run")
	bucketProviders = []byte("providers")
	bucketPending   = []byte("pending")
	bucketRejected  = []byte("rejected")
	keyWatermark    = []byte("watermark")
	keyFingerprint  = []byte("fingerprint")
	keyScanned      = []byte("scanned")
	keyBootstrap    = []byte("bootstrap")
	keyWriting      = []byte("writing")
	// The directories: places by kind and key, their own watermarks, and
	// the fingerprint of the settings the stored mapping follows.
	bucketPlaces    = []byte("places")
	bucketWriteBack = []byte("writeback")
	keyPlacesMark   = map[csd.EntityKind][]byte{csd.KindFacility: []byte("facilities_watermark"), csd.KindOrganization: []byte("organizations_watermark")}
	keyMapping      = []byte("mapping")
	keyReresolve    = []byte("reresolve")
	keyReconciled   = []byte("reconciled")
	// keyConsoleConfig is the last config the OpenHIM console delivered,
	// applied at start so that a run before the first heartbeat follows it.
	keyConsoleConfig = []byte("console_config")
)

// bucketContactsV1 is where the first release kept bare key → UUID links;
// OpenState carries them over into provider records.
var bucketContactsV1 = []byte("contacts")

// State is what the service remembers between runs, in one bbolt file: the
// watermark and the fingerprint of the target it belongs to, per provider
// the contact it is linked to and a digest of what was last written for it,
// and the work a cut run left pending. bbolt gives crash-safe transactions in
// one file with no server, which a hand-written file format would have to
// reimplement.
type State struct {
	db            *bolt.DB
	removeOnClose string // the directory of a private copy
}

// Record is what the state keeps per provider key.
type Record struct {
	// EntityID is the registry id that owns the key, exactly as first seen:
	// another id with the same key is a duplicate in the registry.
	EntityID string `json:"e"`
	// UUID is the linked RapidPro contact, if any.
	UUID string `json:"u,omitempty"`
	// Digest is the digest of the desired contact last confirmed in
	// RapidPro; empty when the last attempt did not land as wanted.
	Digest string `json:"d,omitempty"`
	// Rejected is the digest of a desired contact RapidPro refused or that
	// conflicts with another: the same data is not tried again, since it
	// would meet the same refusal, until it changes.
	Rejected string `json:"r,omitempty"`
	// Blocked is set when this service blocked the contact (inactive policy
	// "block"): only such a contact is unblocked when the worker returns,
	// since unblocking also clears an opt-out.
	Blocked bool `json:"b,omitempty"`
	// Raw is the digest of the registry record Digest was mapped from, with
	// the mapping's settings and directories: a record pulled again with the
	// same Raw maps to the same contact, so it is not mapped again.
	Raw string `json:"w,omitempty"`
}

// OpenState opens or creates the state file. Only one process may hold it.
func OpenState(path string) (*State, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRun, bucketProviders, bucketPending, bucketRejected, bucketPlaces, bucketWriteBack} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return migrateLinks(tx)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	return &State{db: db}, nil
}

// OpenStateCopy opens a private copy of the state file, for a plan: what
// the plan does to the copy never reaches the file, and the copy goes when
// it is closed. A missing file gives an empty state. The file is read under
// a shared lock, so a service holding it makes this fail (after 2 s) rather
// than copy a half-written file.
func OpenStateCopy(path string) (*State, error) {
	dir, err := os.MkdirTemp("", "mhero-plan-")
	if err != nil {
		return nil, fmt.Errorf("state copy: %w", err)
	}
	copyPath := filepath.Join(dir, "state.db")
	if _, err := os.Stat(path); err == nil {
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, ReadOnly: true})
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("state %s (is a service holding it? ask it for a plan with POST /sync?dry_run=true): %w", path, err)
		}
		err = db.View(func(tx *bolt.Tx) error { return tx.CopyFile(copyPath, 0o600) })
		db.Close()
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("state %s: copying: %w", path, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	st, err := OpenState(copyPath)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	st.removeOnClose = dir
	return st, nil
}

// migrateLinks turns the first release's links into records without a
// digest, so each provider is checked once against RapidPro and then costs
// nothing.
func migrateLinks(tx *bolt.Tx) error {
	old := tx.Bucket(bucketContactsV1)
	if old == nil {
		return nil
	}
	providers := tx.Bucket(bucketProviders)
	err := old.ForEach(func(k, v []byte) error {
		data, err := json.Marshal(Record{UUID: string(v)})
		if err != nil {
			return err
		}
		return providers.Put(k, data)
	})
	if err != nil {
		return err
	}
	return tx.DeleteBucket(bucketContactsV1)
}

// Close releases the state file (and removes it if it was a copy).
func (s *State) Close() error {
	err := s.db.Close()
	if s.removeOnClose != "" {
		err = errors.Join(err, os.RemoveAll(s.removeOnClose))
	}
	return err
}

// dir is the directory of the state file: a run's spill file goes there,
// on the disk the operator chose for the service's data.
func (s *State) dir() string { return filepath.Dir(s.db.Path()) }

// get returns a copy of a value of the run bucket, nil if absent.
func (s *State) get(key []byte) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketRun).Get(key); v != nil {
			out = append([]byte{}, v...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state: %s: %w", key, err)
	}
	return out, nil
}

// put sets a value of the run bucket; nil deletes it.
func (s *State) put(key, value []byte) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		if value == nil {
			return tx.Bucket(bucketRun).Delete(key)
		}
		return tx.Bucket(bucketRun).Put(key, value)
	})
	if err != nil {
		return fmt.Errorf("state: %s: %w", key, err)
	}
	return nil
}

func (s *State) getJSON(key []byte, v any) (bool, error) {
	data, err := s.get(key)
	if err != nil || data == nil {
		return false, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("state: %s: %w", key, err)
	}
	return true, nil
}

func (s *State) putJSON(key []byte, v any) error {
	var data []byte
	if v != nil {
		var err error
		if data, err = json.Marshal(v); err != nil {
			return fmt.Errorf("state: %s: %w", key, err)
		}
	}
	return s.put(key, data)
}

// Watermark is the start of the last run whose pull was fully accounted for
// (done, rejected or stored as pending); zero before the first.
func (s *State) Watermark() (time.Time, error) { return s.getTime(keyWatermark) }

// SetWatermark records the start of a complete run. A zero time forgets it,
// so that the next run pulls the whole directory.
func (s *State) SetWatermark(t time.Time) error { return s.putTime(keyWatermark, t) }

// getTime and putTime keep times as RFC 3339 text, the form the first
// release stored the watermark in.
func (s *State) getTime(key []byte) (time.Time, error) {
	var t time.Time
	data, err := s.get(key)
	if err != nil || data == nil {
		return t, err
	}
	if err := t.UnmarshalText(data); err != nil {
		return t, fmt.Errorf("state: %s: %w", key, err)
	}
	return t, nil
}

func (s *State) putTime(key []byte, t time.Time) error {
	if t.IsZero() {
		return s.put(key, nil)
	}
	data, err := t.UTC().MarshalText()
	if err != nil {
		return fmt.Errorf("state: %s: %w", key, err)
	}
	return s.put(key, data)
}

// Fingerprint identifies the target (RapidPro workspace and group,
// OpenInfoMan document, inactive policy) the rest of the state belongs to.
func (s *State) Fingerprint() (string, error) {
	var fp string
	_, err := s.getJSON(keyFingerprint, &fp)
	return fp, err
}

// Retarget starts the state over for a new target: the watermark, the
// scanned mark, every record and all pending work are dropped, since links
// and digests made for another workspace, group or policy say nothing about
// this one. The bootstrap cache is kept; it carries its own key.
func (s *State) Retarget(fingerprint string) error {
	return s.startOver("retarget", [][]byte{bucketProviders, bucketPending, bucketRejected, bucketWriteBack},
		[][]byte{keyWatermark, keyScanned, keyReconciled}, keyFingerprint, fingerprint)
}

// startOver empties buckets, forgets run keys and records the fingerprint
// under fpKey, in one transaction: a crash leaves the old state or the new.
func (s *State) startOver(what string, buckets, keys [][]byte, fpKey []byte, fingerprint string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range buckets {
			if err := tx.DeleteBucket(name); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
				return err
			}
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		run := tx.Bucket(bucketRun)
		for _, k := range keys {
			if err := run.Delete(k); err != nil {
				return err
			}
		}
		data, err := json.Marshal(fingerprint)
		if err != nil {
			return err
		}
		return run.Put(fpKey, data)
	})
	if err != nil {
		return fmt.Errorf("state: %s: %w", what, err)
	}
	return nil
}

// SetScanned records when a whole read of the workspace matched every
// contact that could belong to a provider. After it, a provider without a
// record has no contact unless RapidPro says otherwise on create.
func (s *State) SetScanned(t time.Time) error { return s.putTime(keyScanned, t) }

// runMarks are the times a run starts from.
type runMarks struct {
	watermark, scanned, writing time.Time
}

func (s *State) marks() (runMarks, error) {
	var m runMarks
	var err error
	for _, v := range []struct {
		key []byte
		t   *time.Time
	}{{keyWatermark, &m.watermark}, {keyScanned, &m.scanned}, {keyWriting, &m.writing}} {
		if *v.t, err = s.getTime(v.key); err != nil {
			return m, err
		}
	}
	return m, nil
}

// SetWriting marks (or, with a zero time, clears) a run's writes under way:
// a mark left behind means the run crashed, and its last outcomes may be
// unrecorded.
func (s *State) SetWriting(t time.Time) error { return s.putTime(keyWriting, t) }

// bootstrap is the cached outcome of setting up RapidPro: the workspace, the
// managed group and the fields that exist.
type bootstrap struct {
	// Key is a digest of the settings it was made for (URL, token, group,
	// country); the token itself is never stored.
	Key           string    `json:"key"`
	WorkspaceUUID string    `json:"workspace"`
	Country       string    `json:"country"`
	GroupUUID     string    `json:"group_uuid"`
	GroupName     string    `json:"group_name"`
	GroupCount    int       `json:"group_count"` // members when set up, to weigh a group read against lookups
	At            time.Time `json:"at"`
	// Off lists the targeting field keys RapidPro holds with another type:
	// they are not written. FieldProblems says so, for every report.
	Off           []string `json:"off,omitempty"`
	FieldProblems []string `json:"field_problems,omitempty"`
	// Planned lists what a dry run found missing (never stored).
	Planned []string `json:"-"`
}

// offFields is the set of targeting names whose fields are not written.
func (b bootstrap) offFields() map[string]bool {
	off := map[string]bool{}
	for _, key := range b.Off {
		off[key] = true
	}
	return off
}

func (s *State) bootstrap() (bootstrap, bool, error) {
	var b bootstrap
	found, err := s.getJSON(keyBootstrap, &b)
	return b, found, err
}

func (s *State) setBootstrap(b *bootstrap) error {
	if b == nil {
		return s.putJSON(keyBootstrap, nil)
	}
	return s.putJSON(keyBootstrap, b)
}

// Records returns the record of each key that has one.
func (s *State) Records(keys []string) (map[string]Record, error) {
	out := make(map[string]Record, len(keys))
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketProviders)
		for _, k := range keys {
			v := b.Get([]byte(k))
			if v == nil {
				continue
			}
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("record %q: %w", k, err)
			}
			out[k] = r
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state: providers: %w", err)
	}
	return out, nil
}

// Record returns what the state knows of one provider key.
func (s *State) Record(key string) (Record, error) {
	var r Record
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketProviders).Get([]byte(key)); v != nil {
			return json.Unmarshal(v, &r)
		}
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("state: record %q: %w", key, err)
	}
	return r, nil
}

// Pending returns the mappings a cut run left to do, in no set order.
func (s *State) Pending() ([]Mapping, error) {
	var out []Mapping
	err := eachJSON(s, bucketPending, "pending", func(_ string, m Mapping) error { out = append(out, m); return nil })
	return out, err
}

// RejectedKeys returns the keys whose last outcome was a reject that stands.
func (s *State) RejectedKeys() (map[string]bool, error) { return s.keys(bucketRejected, "rejected") }

// PendingKeys returns the keys of every provider left pending, without
// their mappings.
func (s *State) PendingKeys() (map[string]bool, error) { return s.keys(bucketPending, "pending") }

// keys returns the keys of a bucket, without reading its values.
func (s *State) keys(bucket []byte, what string) (map[string]bool, error) {
	out := map[string]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, _ []byte) error { out[string(k)] = true; return nil })
	})
	if err != nil {
		return nil, fmt.Errorf("state: %s: %w", what, err)
	}
	return out, nil
}

// PendingFirst returns up to n of the pending mappings, in key order: a
// run takes on what it can write, and the rest waits in the state.
func (s *State) PendingFirst(n int) ([]Mapping, error) {
	var out []Mapping
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketPending).Cursor()
		for k, v := c.First(); k != nil && len(out) < n; k, v = c.Next() {
			var m Mapping
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("pending %q: %w", k, err)
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	return out, nil
}

// eachJSON calls fn with every value of a bucket of JSON values.
func eachJSON[T any](s *State, bucket []byte, what string, fn func(key string, v T) error) error {
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, data []byte) error {
			var v T
			if err := json.Unmarshal(data, &v); err != nil {
				return fmt.Errorf("%s %q: %w", what, k, err)
			}
			if err := fn(string(k), v); err != nil {
				return fmt.Errorf("%s %q: %w", what, k, err)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("state: %s: %w", what, err)
	}
	return nil
}

// managed counts the providers linked to a contact that is not retired
// (its digest is not inactive): the contacts this service keeps in the
// group, as the state knows them.
func (s *State) managed(inactiveDigest string) (int, error) {
	n := 0
	err := eachJSON(s, bucketProviders, "providers", func(_ string, r Record) error {
		if r.UUID != "" && r.Digest != inactiveDigest {
			n++
		}
		return nil
	})
	return n, err
}

// Outstanding counts the providers waiting for the next run and those whose
// last outcome was a reject that still stands (a conflict, a blocked
// contact, a refused write): while any does, no run is Successful.
func (s *State) Outstanding() (pending, rejected int, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		pending = tx.Bucket(bucketPending).Stats().KeyN
		rejected = tx.Bucket(bucketRejected).Stats().KeyN
		return nil
	})
	return pending, rejected, err
}

// progress is a batch of outcomes to record in one transaction.
type progress struct {
	records  map[string]Record
	pending  map[string]*Mapping // nil value: no longer pending
	rejected map[string]string   // the reason; "": no longer rejected
}

func newProgress() *progress {
	return &progress{records: map[string]Record{}, pending: map[string]*Mapping{}, rejected: map[string]string{}}
}

func (p *progress) len() int { return len(p.records) + len(p.pending) + len(p.rejected) }

// commit records a batch of outcomes atomically and empties it.
func (s *State) commit(p *progress) error {
	if p.len() == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		recs, pend, rej := tx.Bucket(bucketProviders), tx.Bucket(bucketPending), tx.Bucket(bucketRejected)
		for k, r := range p.records {
			data, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if err := recs.Put([]byte(k), data); err != nil {
				return err
			}
		}
		for k, m := range p.pending {
			var data []byte
			if m != nil {
				var err error
				if data, err = json.Marshal(m); err != nil {
					return err
				}
			}
			if err := putOrDelete(pend, k, data); err != nil {
				return err
			}
		}
		for k, reason := range p.rejected {
			if err := putOrDelete(rej, k, []byte(reason)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: progress: %w", err)
	}
	clear(p.records)
	clear(p.pending)
	clear(p.rejected)
	return nil
}

// putOrDelete puts value under key, or deletes key for an empty value.
func putOrDelete(b *bolt.Bucket, key string, value []byte) error {
	if len(value) == 0 {
		return b.Delete([]byte(key))
	}
	return b.Put([]byte(key), value)
}

// directoryMarks are where the directories and the mapping stand.
type directoryMarks struct {
	since      map[csd.EntityKind]time.Time // per directory: pull changes since
	mapping    string                       // fingerprint of the mapping settings the records follow
	reresolve  bool                         // a directory changed: every provider must be mapped again
	reconciled time.Time                    // the last complete full reconciliation
}

func (s *State) directoryMarks() (directoryMarks, error) {
	m := directoryMarks{since: map[csd.EntityKind]time.Time{}}
	for kind, key := range keyPlacesMark {
		t, err := s.getTime(key)
		if err != nil {
			return m, err
		}
		m.since[kind] = t
	}
	var err error
	if _, err = s.getJSON(keyMapping, &m.mapping); err != nil {
		return m, err
	}
	if _, err = s.getJSON(keyReresolve, &m.reresolve); err != nil {
		return m, err
	}
	m.reconciled, err = s.getTime(keyReconciled)
	return m, err
}

// Remap starts the directories over for new mapping settings: every place
// and both directory watermarks are dropped, and the provider watermark too,
// so that every provider is mapped again; links and digests are kept (a
// contact whose mapping is unchanged still costs nothing).
func (s *State) Remap(fingerprint string) error {
	return s.startOver("remap", [][]byte{bucketPlaces},
		[][]byte{keyPlacesMark[csd.KindFacility], keyPlacesMark[csd.KindOrganization], keyWatermark, keyReresolve}, keyMapping, fingerprint)
}

// Directory loads every stored place.
func (s *State) Directory() (*Directory, error) {
	d := NewDirectory()
	err := eachJSON(s, bucketPlaces, "places", func(k string, p Place) error {
		kind, key, _ := strings.Cut(k, ":")
		switch csd.EntityKind(kind) {
		case csd.KindFacility:
			d.Facilities[key] = p
		case csd.KindOrganization:
			d.Organizations[key] = p
		default:
			return errors.New("unknown kind")
		}
		return nil
	})
	return d, err
}

// directoryUpdate is what one pull of a directory changed.
type directoryUpdate struct {
	kind    csd.EntityKind
	places  map[string]Place // changed or new, by key
	since   time.Time        // the pull's start: the next pull asks from here
	changed bool             // some place a provider may resolve through changed
}

// SaveDirectory records the changed places, the directory's watermark and,
// when a place changed, that every provider must be mapped again: all in
// one transaction, so a crash cannot keep the places and lose the need to
// remap.
func (s *State) saveDirectory(u directoryUpdate) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPlaces)
		for key, p := range u.places {
			data, err := json.Marshal(p)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(string(u.kind)+":"+key), data); err != nil {
				return err
			}
		}
		run := tx.Bucket(bucketRun)
		if u.changed {
			if err := run.Put(keyReresolve, []byte("true")); err != nil {
				return err
			}
		}
		return run.Put(keyPlacesMark[u.kind], []byte(u.since.UTC().Format(time.RFC3339Nano)))
	})
	if err != nil {
		return fmt.Errorf("state: %s directory: %w", u.kind, err)
	}
	return nil
}

// Reconciled records a complete full reconciliation and that every
// provider has been mapped against the current directories.
func (s *State) Reconciled(t time.Time, full bool) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		run := tx.Bucket(bucketRun)
		if err := run.Delete(keyReresolve); err != nil {
			return err
		}
		if !full {
			return nil
		}
		return run.Put(keyReconciled, []byte(t.UTC().Format(time.RFC3339Nano)))
	})
	if err != nil {
		return fmt.Errorf("state: reconciled: %w", err)
	}
	return nil
}

// writeBack is a contact UUID still to be written to its provider.
type writeBack struct {
	EntityID string `json:"e"`
	UUID     string `json:"u"`
}

// WriteBacks returns the write-backs earlier runs could not make, by key.
func (s *State) writeBacks() (map[string]writeBack, error) {
	out := map[string]writeBack{}
	err := eachJSON(s, bucketWriteBack, "write-back", func(k string, wb writeBack) error { out[k] = wb; return nil })
	return out, err
}

// setWriteBack keeps (or, with nil, forgets) a write-back to retry.
func (s *State) setWriteBack(key string, wb *writeBack) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		var data []byte
		if wb != nil {
			var err error
			if data, err = json.Marshal(wb); err != nil {
				return err
			}
		}
		return putOrDelete(tx.Bucket(bucketWriteBack), key, data)
	})
	if err != nil {
		return fmt.Errorf("state: write-back %q: %w", key, err)
	}
	return nil
}

// ConsoleConfig is the last config object the OpenHIM console delivered, nil
// before the first.
func (s *State) ConsoleConfig() (json.RawMessage, error) {
	data, err := s.get(keyConsoleConfig)
	if err != nil || data == nil {
		return nil, err
	}
	return json.RawMessage(data), nil
}

// SetConsoleConfig keeps the config object the console delivered. The
// state file is the operator's (mode 0600): passwords typed in the console
// are kept there as core keeps them.
func (s *State) SetConsoleConfig(raw json.RawMessage) error { return s.put(keyConsoleConfig, raw) }

// count is how many keys a bucket holds.
func (s *State) count(bucket []byte) (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucket).Stats().KeyN
		return nil
	})
	return n, err
}
