package mediator

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A state file of the first release (bare key → UUID links, the watermark
// as text) opens with its links kept as records and its watermark read.
func TestStateMigratesFirstReleaseLinks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	wm := time.Date(2025, 1, 1, 6, 0, 0, 0, time.UTC)
	err = db.Update(func(tx *bolt.Tx) error {
		run, _ := tx.CreateBucket([]byte("run"))
		links, _ := tx.CreateBucket([]byte("contacts"))
		text, _ := wm.MarshalText()
		if err := run.Put([]byte("watermark"), text); err != nil {
			return err
		}
		return links.Put([]byte("urn:uuid:a"), []byte("c-1"))
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	st, err := OpenState(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got, _ := st.Watermark(); !got.Equal(wm) {
		t.Errorf("watermark %v, want %v", got, wm)
	}
	recs, err := st.Records([]string{"urn:uuid:a", "urn:uuid:b"})
	if err != nil || len(recs) != 1 || recs["urn:uuid:a"].UUID != "c-1" || recs["urn:uuid:a"].Digest != "" {
		t.Fatalf("records %+v, %v", recs, err)
	}
}

// Retarget drops what belonged to the old target and keeps the bootstrap.
func TestStateRetarget(t *testing.T) {
	st, err := OpenState(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	p := newProgress()
	p.records["k"] = Record{EntityID: "k", UUID: "c", Digest: "d"}
	p.pending["k"] = &Mapping{Key: "k", EntityID: "k"}
	p.rejected["k"] = ReasonURNConflict
	if err := st.commit(p); err != nil {
		t.Fatal(err)
	}
	st.SetWatermark(time.Now())
	st.SetScanned(time.Now())
	st.setBootstrap(&bootstrap{Key: "b"})
	if err := st.Retarget("new"); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records([]string{"k"})
	pending, _ := st.Pending()
	wm, _ := st.Watermark()
	marks, _ := st.marks()
	sc := marks.scanned
	fp, _ := st.Fingerprint()
	b, found, _ := st.bootstrap()
	if nPending, nRejected, _ := st.Outstanding(); nPending != 0 || nRejected != 0 {
		t.Errorf("outstanding after retarget: %d pending, %d rejected", nPending, nRejected)
	}
	if len(recs) != 0 || len(pending) != 0 || !wm.IsZero() || !sc.IsZero() || fp != "new" || !found || b.Key != "b" {
		t.Fatalf("after retarget: records %v, pending %v, watermark %v, scanned %v, fingerprint %q, bootstrap %v %+v", recs, pending, wm, sc, fp, found, b)
	}
}

// A plan works on a copy: nothing it does reaches the state file, and a
// missing file is an empty state.
func TestOpenStateCopy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	missing, err := OpenStateCopy(path)
	if err != nil {
		t.Fatal(err)
	}
	if wm, err := missing.Watermark(); err != nil || !wm.IsZero() {
		t.Fatalf("watermark %v, %v", wm, err)
	}
	missing.Close()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a copy of a missing state created the file: %v", err)
	}

	st, err := OpenState(path)
	if err != nil {
		t.Fatal(err)
	}
	when := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := st.SetWatermark(when); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStateCopy(path); err == nil {
		t.Fatal("copied a state a service holds")
	}
	st.Close()

	cp, err := OpenStateCopy(path)
	if err != nil {
		t.Fatal(err)
	}
	if wm, _ := cp.Watermark(); !wm.Equal(when) {
		t.Fatalf("the copy's watermark %v", wm)
	}
	if err := cp.SetWatermark(time.Time{}); err != nil {
		t.Fatal(err)
	}
	cp.Close()
	st, err = OpenState(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if wm, _ := st.Watermark(); !wm.Equal(when) {
		t.Fatalf("a change to the copy reached the file: watermark %v", wm)
	}
}

// The console's config names what it changed (never the values) and is kept
// in the state, so a restarted service starts from it.
func TestApplyConsoleConfigNamesChangesAndKeepsIt(t *testing.T) {
	st, err := OpenState(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	base := Settings{
		OpenInfoMan:    OpenInfoManSettings{URL: "http://oim:8984", Document: "Providers", PageSize: 500},
		RapidPro:       RapidProSettings{URL: "https://rapidpro.example.org", Token: "secret-token", Group: "mHero"},
		InactivePolicy: InactiveRemoveFromGroup,
	}
	s, err := NewSyncer(base, Options{State: st})
	if err != nil {
		t.Fatal(err)
	}
	raw := []byte(`{"rapidpro": {"url": "https://rapidpro.example.org", "group": "mHero Console", "token": "new-secret"}, "targeting": {"districtLevel": 3}}`)
	changed, err := s.ApplyConsoleConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"rapidpro.group", "rapidpro.token", "targeting.districtLevel"}; !slices.Equal(changed, want) {
		t.Fatalf("changed %v, want %v", changed, want)
	}
	if again, _ := s.ApplyConsoleConfig(raw); len(again) != 0 {
		t.Fatalf("the same config again changed %v", again)
	}

	restarted, err := NewSyncer(base, Options{State: st})
	if err != nil {
		t.Fatal(err)
	}
	if applied, err := restarted.ApplyStoredConsoleConfig(); !applied || err != nil {
		t.Fatalf("stored config applied %v, %v", applied, err)
	}
	if got := restarted.Settings(); got.RapidPro.Group != "mHero Console" || got.Targeting.DistrictLevel != 3 {
		t.Fatalf("after a restart: %+v", got)
	}
}
