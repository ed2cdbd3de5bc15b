package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/mediator"
)

// state show reports where the state stands; state reset --watermark
// forces a full pull and keeps the links; both refuse a state a service
// holds.
func TestStateShowAndReset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := mediator.OpenState(path)
	if err != nil {
		t.Fatal(err)
	}
	when := time.Date(2025, 1, 1, 6, 0, 0, 0, time.UTC)
	if err := st.SetWatermark(when); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"state", "show", "--state-file", path}, {"state", "reset", "--watermark", "--state-file", path}} {
		if _, _, err := runCommand(t, args...); err == nil {
			t.Errorf("%v ran while a service holds the state", args)
		}
	}
	st.Close()

	out, _, err := runCommand(t, "state", "show", "--state-file", path)
	if err != nil {
		t.Fatal(err)
	}
	var sum mediator.StateSummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !sum.Watermark.Equal(when) {
		t.Fatalf("watermark %v: %s", sum.Watermark, out)
	}
	out, _, err = runCommand(t, "state", "reset", "--watermark", "--state-file", path)
	if err != nil || !strings.Contains(out, "watermark reset") {
		t.Fatalf("%v: %s", err, out)
	}
	st, err = mediator.OpenState(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if wm, _ := st.Watermark(); !wm.IsZero() {
		t.Fatalf("watermark %v after the reset", wm)
	}
	if _, _, err := runCommand(t, "state", "reset", "--state-file", path+"x"); err == nil {
		t.Fatal("a reset of nothing was accepted")
	}
}
