package main

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
)

// Numeric flags out of range are refused by name and value, not taken as
// something else (a negative rate as no limit, a zero cap as 60s).
func TestConfigCheckNumbers(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // in the error; empty: accepted
	}{
		{"defaults", nil, ""},
		{"rapidpro rate 0 is no limit", []string{"--rapidpro-rate", "0"}, ""},
		{"negative rapidpro rate", []string{"--rapidpro-rate", "-1"}, "--rapidpro-rate -1"},
		{"zero retry-after cap", []string{"--rapidpro-retry-after-cap", "0s"}, "--rapidpro-retry-after-cap 0s"},
		{"negative retry-after cap", []string{"--rapidpro-retry-after-cap", "-1m"}, "--rapidpro-retry-after-cap -1m0s"},
		{"lookup threshold 0", []string{"--lookup-threshold", "0"}, ""},
		{"negative lookup threshold", []string{"--lookup-threshold", "-5"}, "--lookup-threshold -5"},
		{"zero sync timeout", []string{"--sync-timeout", "0s"}, "--sync-timeout 0s"},
		{"negative sync timeout", []string{"--sync-timeout", "-1h"}, "--sync-timeout -1h0m0s"},
		{"watermark margin 0", []string{"--watermark-margin", "0s"}, ""},
		{"negative watermark margin", []string{"--watermark-margin", "-5m"}, "--watermark-margin -5m0s"},
		{"zero heartbeat interval", []string{"--heartbeat-interval", "0s"}, "--heartbeat-interval 0s"},
		{"negative heartbeat interval", []string{"--heartbeat-interval", "-10s"}, "--heartbeat-interval -10s"},
		{"shutdown grace 0", []string{"--shutdown-grace", "0s"}, ""},
		{"negative shutdown grace", []string{"--shutdown-grace", "-1s"}, "--shutdown-grace -1s"},
		{"zero page size", []string{"--oim-page-size", "0"}, "--oim-page-size 0"},
		{"negative page size", []string{"--oim-page-size", "-500"}, "--oim-page-size -500"},
		{"port 0", []string{"--port", "0"}, "--port 0"},
		{"channel timeout over 1h", []string{"--channel-timeout", "2h"}, "--channel-timeout 2h0m0s"},
		{"every problem at once", []string{"--rapidpro-rate", "-1", "--sync-timeout", "0s"}, "--rapidpro-rate -1: must be 0 (no client-side limit) or more; --sync-timeout 0s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			cfg := &config{}
			cfg.register(fs)
			args := append([]string{"--rapidpro-url", "http://127.0.0.1:1", "--rapidpro-token", "t0ken-secret"}, tc.args...)
			if err := parseFlags(fs, args); err != nil {
				t.Fatal(err)
			}
			err := cfg.check()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want it to name %q", err, tc.want)
			case err != nil && strings.Contains(err.Error(), "t0ken-secret"):
				t.Fatalf("the token reached the error: %v", err)
			}
		})
	}
}

// The targeting, reconciliation and write-back flags reach the settings,
// and what a run would refuse is refused at start, naming the flag.
func TestTargetingFlags(t *testing.T) {
	type want struct {
		labels    string // the --field-label value read back
		every     int
		share     float64
		level     int
		writeBack bool
	}
	defaults := want{every: 24, share: 0.1, level: 2}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want want
		err  string // in the error; empty: accepted
	}{
		{name: "defaults", want: defaults},
		{name: "one label", args: []string{"--field-label", "cadre=Profession"}, want: want{labels: "cadre=Profession", every: 24, share: 0.1, level: 2}},
		{name: "labels repeated and comma-separated", args: []string{"--field-label", "cadre=Profession, district=County", "--field-label", "facility_id=Site Code"},
			want: want{labels: "cadre=Profession,district=County,facility_id=Site Code", every: 24, share: 0.1, level: 2}},
		{name: "labels from the environment", env: map[string]string{"MHERO_FIELD_LABEL": "specialty=Speciality,facility=Health Facility"},
			want: want{labels: "facility=Health Facility,specialty=Speciality", every: 24, share: 0.1, level: 2}},
		{name: "unknown field name", args: []string{"--field-label", "county=County"}, err: `"county" is not a targeting field`},
		{name: "label without name", args: []string{"--field-label", "Profession"}, err: `"Profession" is not name=Label`},
		{name: "empty label", args: []string{"--field-label", "cadre="}, err: `"cadre=" is not name=Label`},
		{name: "label RapidPro refuses", args: []string{"--field-label", "cadre=Cadre!"}, err: "may hold only letters"},
		{name: "two fields on one key", args: []string{"--field-label", "cadre=District"}, err: "share the key"},
		{name: "reconcile every 168 hours", args: []string{"--reconcile-every", "168"}, want: want{every: 168, share: 0.1, level: 2}},
		{name: "reconcile every 7 days as a duration", args: []string{"--reconcile-every", "168h"}, want: want{every: 168, share: 0.1, level: 2}},
		{name: "reconcile every 90m", args: []string{"--reconcile-every", "90m"}, err: "not a whole number of hours"},
		{name: "reconcile every 0", args: []string{"--reconcile-every", "0"}, err: "--reconcile-every 0h: must be at least 1h"},
		{name: "reconcile every -1h", args: []string{"--reconcile-every", "-1h"}, err: "--reconcile-every -1h"},
		{name: "reconcile every year", args: []string{"--reconcile-every", "8760"}, want: want{every: 8760, share: 0.1, level: 2}},
		{name: "reconcile past the year", args: []string{"--reconcile-every", "9223372036854775807"}, err: "at most 8760h"},
		{name: "reconcile every day", args: []string{"--reconcile-every", "daily"}, err: "neither hours"},
		{name: "no retire limit", args: []string{"--max-retire-share", "1"}, want: want{every: 24, share: 1, level: 2}},
		{name: "retire share 0", args: []string{"--max-retire-share", "0"}, err: "--max-retire-share 0: must be more than 0"},
		{name: "retire share over 1", args: []string{"--max-retire-share", "1.5"}, err: "--max-retire-share 1.5"},
		{name: "district level 3", args: []string{"--district-level", "3"}, want: want{every: 24, share: 0.1, level: 3}},
		{name: "district level 0", args: []string{"--district-level", "0"}, err: "--district-level 0: must be at least 1"},
		{name: "write-back", args: []string{"--write-back"}, env: map[string]string{"MHERO_WRITE_BACK_CODE": "rp_uuid"},
			want: want{every: 24, share: 0.1, level: 2, writeBack: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			var usage strings.Builder // where the flag package explains a bad command line
			fs.SetOutput(&usage)
			cfg := &config{}
			cfg.register(fs)
			err := parseFlags(fs, append([]string{"--rapidpro-url", "http://127.0.0.1:1", "--rapidpro-token", "t0ken-secret"}, tc.args...))
			if errors.Is(err, errUsage) {
				err = errors.New(usage.String())
			} else if err == nil {
				err = cfg.check()
			}
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("err = %v, want it to say %q", err, tc.err)
			case tc.err != "":
				return
			}
			s := cfg.settings
			got := want{fieldLabels{&s.Targeting.Fields}.String(), s.Reconcile.EveryHours, s.Reconcile.MaxRetireShare, s.Targeting.DistrictLevel, s.WriteBack.Enabled}
			if got != tc.want {
				t.Errorf("settings %+v, want %+v", got, tc.want)
			}
			if code := tc.env["MHERO_WRITE_BACK_CODE"]; code != "" && s.WriteBack.Code != code {
				t.Errorf("write-back code %q, want %q from the environment", s.WriteBack.Code, code)
			}
		})
	}
}

// --cadre-names names the cadre codes of a registry that carries codes
// only; a file that is not a value set stops the start.
func TestCadreNamesFlag(t *testing.T) {
	cfg := testConfig(t, "", "--cadre-names", providerTypeCodes)
	names, err := cfg.cadreNames()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 14 {
		t.Errorf("%d cadre names, want the value set's 14", len(names))
	}
	cfg = testConfig(t, "", "--cadre-names", "../../testdata/providers-demo.xml")
	if _, err := newService(cfg, nil); err == nil || !strings.Contains(err.Error(), "cadre-names ../../testdata/providers-demo.xml") {
		t.Fatalf("err = %v, want the value set file named", err)
	}
}
