package openhim_test

import (
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/openhim"
)

func TestParseLastRunAt(t *testing.T) {
	want := time.Date(2024, 5, 1, 6, 20, 0, 0, time.UTC)
	for _, tc := range []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{"Wed May 01 2024 06:20:00 GMT+0000 (Coordinated Universal Time)", want, false},
		{"Wed May 01 2024 08:20:00 GMT+0200 (Central Africa Time)", want, false},
		{"Wed May 01 2024 08:20:00 GMT+0200 (Mitteleuropäische Sommerzeit)", want, false},
		{"Wed May 01 2024 01:20:00 GMT-0500", want, false},
		{"2024-05-01T06:20:00Z", want, false},
		{"2024-05-01T08:20:00.000+02:00", want, false},
		{"", time.Time{}, true},
		{"Invalid Date", time.Time{}, true},
		{"Wed May 01 2024 06:20:00 (Coordinated Universal Time)", time.Time{}, true},
	} {
		got, err := openhim.ParseLastRunAt(tc.in)
		if tc.wantErr != (err != nil) || !got.Equal(tc.want) {
			t.Errorf("ParseLastRunAt(%q) = %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func FuzzParseLastRunAt(f *testing.F) {
	for _, s := range []string{
		"Wed May 01 2024 06:20:00 GMT+0000 (Coordinated Universal Time)", "2024-05-01T06:20:00Z", "", " ()", "(",
		"Wed May 01 2024 06:20:00 GMT+0000 (", "Mon Jan 02 2006 15:04:05 GMT-0700 (x) (y)",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := openhim.ParseLastRunAt(s)
		if err != nil {
			return
		}
		// Whatever parses must survive a round trip in the JavaScript form.
		again, err := openhim.ParseLastRunAt(got.Format("Mon Jan 02 2006 15:04:05 GMT-0700") + " (zone)")
		if err != nil || !again.Equal(got.Truncate(time.Second)) {
			t.Errorf("%q parsed as %v, round trip %v, %v", s, got, again, err)
		}
	})
}
