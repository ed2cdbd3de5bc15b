package main

import (
	"strings"
	"testing"
)

// A RapidPro snapshot is outside input: whatever it holds, reading it never
// panics, and what it gives is one contact per uuid, each with a uuid.
func FuzzReadSnapshot(f *testing.F) {
	for _, seed := range []string{
		`[]`, `{"next":null,"results":[]}`, `null`, `"x"`, `[{"uuid":"A"}]`,
		`[{"uuid":"6b0c0000-0000-4000-8000-0000000000aa","name":"A","status":"active","urns":["tel:+231777000001"],"modified_on":"2024-03-02T10:00:00Z"}]`,
		`{"results":[{"uuid":"x","status":"active"}]}{"results":[{"uuid":"X","status":"blocked","modified_on":"2025-01-01T00:00:00Z"}]}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		contacts, err := readSnapshot(strings.NewReader(in))
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, c := range contacts {
			if c.UUID == "" || c.UUID != strings.ToLower(c.UUID) || seen[c.UUID] {
				t.Fatalf("contact %+v from %q", c, in)
			}
			seen[c.UUID] = true
		}
	})
}
