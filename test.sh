#!/usr/bin/env bash
# Runs every check and test: formatting, vet, the race-enabled test suite and
# the rate-scaled tests without -race.
set -euo pipefail
cd "$(dirname "$0")"

unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" $unformatted >&2
  exit 1
fi
go vet ./...
go test -race -count=1 ./...
# Tests scaled to RapidPro's real rate need the fakes at full speed, so they
# run again without the race detector (under it they skip).
go test -count=1 -run 'AtRapidProRate' ./mediator
