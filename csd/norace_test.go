//go:build !race

package csd_test

const raceEnabled = false
