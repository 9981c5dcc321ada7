package keymat

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	g, err := Generate("live")
	if err != nil {
		t.Fatal(err)
	}
	s := g.String()
	masked := g.Start() + "…" + g.Last4()
	for _, tc := range []struct{ name, in, want string }{
		{"ok/no-secret", `invalid environment: "prod"`, `invalid environment: "prod"`},
		{"ok/masked-key-untouched", "key " + masked + " disabled", "key " + masked + " disabled"},
		{"ok/key-id-untouched", "get key key_01J8ZQ: not found", "get key key_01J8ZQ: not found"},
		{"redacted/whole", "get key " + s + ": not found", "get key " + masked + ": not found"},
		{"redacted/quoted-twice", `"` + s + `" and ` + s, `"` + masked + `" and ` + masked},
		{"redacted/truncated", `"` + s[:40] + `…" is not an IP address`, `"` + g.Start() + `……" is not an IP address`},
		{"redacted/glued", "x" + s + "y", "x" + g.Start() + "…"}, // the y could be the body's too
		{"redacted/other-environment", "kw_staging2_" + s[len("kw_live_"):], "kw_staging2_" + s[len("kw_live_"):len("kw_live_")+6] + "…" + g.Last4()},
		{"ok/six-body-characters", "starts with " + g.Start(), "starts with " + g.Start()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Redact(tc.in)
			if got != tc.want {
				t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if body := s[len("kw_live_"):]; strings.Contains(got, body[visibleLen:visibleLen+8]) {
				t.Errorf("Redact(%q) = %q still holds hidden characters of the body", tc.in, got)
			}
		})
	}
}
