package mediator

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketRun      = []byte("run")
	bucketContacts = []byte("contacts")
	keyWatermark   = []byte("watermark")
)

// State is what the service remembers between runs, in one bbolt file: the
// start of the last run whose result was recorded without a transient
// failure, and the RapidPro contact each provider was linked to. bbolt gives
// crash-safe transactions in one file with no server, which a hand-written
// file format would have to reimplement.
type State struct {
	db *bolt.DB
}

// OpenState opens or creates the state file. Only one process may hold it.
func OpenState(path string) (*State, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRun, bucketContacts} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	return &State{db: db}, nil
}

// Close releases the state file.
func (s *State) Close() error { return s.db.Close() }

// Watermark is the start of the last complete run; zero before the first.
func (s *State) Watermark() (time.Time, error) {
	var t time.Time
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRun).Get(keyWatermark)
		if v == nil {
			return nil
		}
		return t.UnmarshalText(v)
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("state: watermark: %w", err)
	}
	return t, nil
}

// SetWatermark records the start of a complete run. A zero time forgets it,
// so that the next run pulls the whole directory.
func (s *State) SetWatermark(t time.Time) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRun)
		if t.IsZero() {
			return b.Delete(keyWatermark)
		}
		v, err := t.UTC().MarshalText()
		if err != nil {
			return err
		}
		return b.Put(keyWatermark, v)
	})
	if err != nil {
		return fmt.Errorf("state: watermark: %w", err)
	}
	return nil
}

// ContactUUIDs returns the linked contact of each key that has one.
func (s *State) ContactUUIDs(keys []string) (map[string]string, error) {
	out := make(map[string]string, len(keys))
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketContacts)
		for _, k := range keys {
			if v := b.Get([]byte(k)); v != nil {
				out[k] = string(v)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state: contacts: %w", err)
	}
	return out, nil
}

// LinkContacts records key → contact UUID links in one transaction; an empty
// UUID removes the link.
func (s *State) LinkContacts(links map[string]string) error {
	if len(links) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketContacts)
		for k, uuid := range links {
			var err error
			if uuid == "" {
				err = b.Delete([]byte(k))
			} else {
				err = b.Put([]byte(k), []byte(uuid))
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: contacts: %w", err)
	}
	return nil
}
