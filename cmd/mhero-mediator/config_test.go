package main

import (
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
