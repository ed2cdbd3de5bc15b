//go:build race

package csd_test

const raceEnabled = true
