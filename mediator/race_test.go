//go:build race

package mediator

// raceEnabled is set under -race, which slows the in-process fakes tenfold:
// timing-scaled tests run in test.sh's separate pass without it.
const raceEnabled = true
