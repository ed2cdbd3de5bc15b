package openhim

import (
	"fmt"
	"strings"
	"time"
)

// jsDateLayout is JavaScript's Date.prototype.toString without the
// parenthesised zone name.
const jsDateLayout = "Mon Jan 02 2006 15:04:05 GMT-0700"

// ParseLastRunAt parses the X-OpenHIM-LastRunAt header a polling channel
// sends: a JavaScript Date string in core's timezone such as
// "Wed May 01 2024 06:20:00 GMT+0000 (Coordinated Universal Time)". RFC 3339
// is accepted too. The header is roughly the start of the current run, so it
// must not serve as a change watermark (docs/protocols.md, Polling channels).
func ParseLastRunAt(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	jsDate := s
	if open := strings.Index(s, " ("); open >= 0 && strings.HasSuffix(s, ")") {
		jsDate = s[:open]
	}
	t, err := time.Parse(jsDateLayout, jsDate)
	if err != nil {
		return time.Time{}, fmt.Errorf("openhim: last-run-at %q is neither a JavaScript date nor RFC 3339", s)
	}
	return t, nil
}
