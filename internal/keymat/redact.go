package keymat

import (
	"regexp"
	"strings"
)

// fragment matches a secret, or any piece of one that starts with its
// prefix and carries more of its body than a masked key shows.
var fragment = regexp.MustCompile(`kw_[a-z][a-z0-9]{0,15}_[0-9A-Za-z]{7,}`)

// Redact masks, in text meant for people (error messages, logs), every
// secret and every piece of one: what is left is what a masked key shows,
// the prefix and the first six characters of the body, then "…", and for a
// whole secret its last four characters. Messages quote what a client sent
// (an id, a field's value, a token the JSON decoder did not expect), and a
// client may send a secret where it does not belong; the answer must not
// repeat it. Text without such a piece is returned as it is.
func Redact(text string) string {
	if !strings.Contains(text, Issuer+"_") {
		return text
	}
	return fragment.ReplaceAllStringFunc(text, func(m string) string {
		visible := strings.LastIndexByte(m, '_') + 1 + visibleLen
		if len(m)-visible == bodyLen+checksumLen-visibleLen { // a whole secret: as Masked shows it
			return m[:visible] + "…" + m[len(m)-4:]
		}
		return m[:visible] + "…"
	})
}
