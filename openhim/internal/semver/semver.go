// Package semver validates and orders version strings the way OpenHIM core
// does through node-semver: core rejects a registration whose version is not
// valid and only applies a re-registration whose version is greater.
package semver

import (
	"regexp"
	"strconv"
	"strings"
)

// versionPattern is SemVer 2.0.0, plus the leading "v" or "=" that
// node-semver's valid() tolerates.
var versionPattern = regexp.MustCompile(`^[v=]?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)` +
	`(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?` +
	`(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?$`)

// maxSafeInteger is JavaScript's Number.MAX_SAFE_INTEGER; node-semver rejects
// larger components.
const maxSafeInteger = 1<<53 - 1

type version struct {
	core       [3]uint64
	prerelease []string
}

func parse(s string) (version, bool) {
	m := versionPattern.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return version{}, false
	}
	var v version
	for i := range 3 {
		n, err := strconv.ParseUint(m[i+1], 10, 64)
		if err != nil || n > maxSafeInteger {
			return version{}, false
		}
		v.core[i] = n
	}
	if m[4] != "" {
		v.prerelease = strings.Split(m[4], ".")
	}
	return v, true
}

// Valid reports whether s is a version core accepts.
func Valid(s string) bool {
	_, ok := parse(s)
	return ok
}

// Compare orders two valid versions by SemVer precedence (-1, 0, +1). An
// invalid version sorts below every valid one.
func Compare(a, b string) int {
	va, okA := parse(a)
	vb, okB := parse(b)
	switch {
	case !okA && !okB:
		return 0
	case !okA:
		return -1
	case !okB:
		return 1
	}
	for i := range 3 {
		if va.core[i] != vb.core[i] {
			return cmpUint(va.core[i], vb.core[i])
		}
	}
	return comparePrerelease(va.prerelease, vb.prerelease)
}

func comparePrerelease(a, b []string) int {
	// A version without a prerelease ranks above any prerelease of it.
	switch {
	case len(a) == 0 && len(b) == 0:
		return 0
	case len(a) == 0:
		return 1
	case len(b) == 0:
		return -1
	}
	for i := 0; i < len(a) && i < len(b); i++ {
		if c := compareIdentifier(a[i], b[i]); c != 0 {
			return c
		}
	}
	return cmpInt(len(a), len(b))
}

func compareIdentifier(a, b string) int {
	na, errA := strconv.ParseUint(a, 10, 64)
	nb, errB := strconv.ParseUint(b, 10, 64)
	switch {
	case errA == nil && errB == nil:
		return cmpUint(na, nb)
	case errA == nil: // numeric identifiers rank below alphanumeric ones
		return -1
	case errB == nil:
		return 1
	}
	return strings.Compare(a, b)
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpInt(a, b int) int { return cmpUint(uint64(a), uint64(b)) }
