package audit_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
)

func event() *audit.Event {
	return &audit.Event{
		Seq:      7,
		Time:     time.Date(2031, 3, 31, 23, 0, 0, 123000, time.UTC),
		Actor:    "key_admin",
		Action:   audit.ActionUpdate,
		KeyID:    "key_1",
		Source:   "192.0.2.1:4242",
		Before:   &audit.Snapshot{Name: "old", Version: 1},
		After:    &audit.Snapshot{Name: "new", Version: 2},
		Changed:  []string{"name"},
		Detail:   "why",
		PrevHash: bytes.Repeat([]byte{1}, 32),
	}
}

func TestSealCoversEveryField(t *testing.T) {
	base := event().Seal()
	if !bytes.Equal(base, event().Seal()) {
		t.Fatal("Seal is not deterministic")
	}
	for name, edit := range map[string]func(*audit.Event){
		"Seq":           func(e *audit.Event) { e.Seq++ },
		"Time":          func(e *audit.Event) { e.Time = e.Time.Add(time.Microsecond) },
		"Actor":         func(e *audit.Event) { e.Actor = "key_other" },
		"Action":        func(e *audit.Event) { e.Action = audit.ActionDelete },
		"KeyID":         func(e *audit.Event) { e.KeyID = "key_2" },
		"Source":        func(e *audit.Event) { e.Source = "192.0.2.2:4242" },
		"Before":        func(e *audit.Event) { e.Before.Name = "older" },
		"Before/nil":    func(e *audit.Event) { e.Before = nil },
		"After":         func(e *audit.Event) { e.After.State = "disabled" },
		"After/nil":     func(e *audit.Event) { e.After = nil },
		"Changed":       func(e *audit.Event) { e.Changed = append(e.Changed, "state") },
		"Changed/nil":   func(e *audit.Event) { e.Changed = nil },
		"Detail":        func(e *audit.Event) { e.Detail = "why not" },
		"PrevHash":      func(e *audit.Event) { e.PrevHash[0] ^= 1 },
		"PrevHash/nil":  func(e *audit.Event) { e.PrevHash = nil },
		"field-borders": func(e *audit.Event) { e.Actor, e.Action = e.Actor+e.Action[:1], e.Action[1:] },
	} {
		e := event()
		edit(e)
		if bytes.Equal(e.Seal(), base) {
			t.Errorf("%s: changing it leaves the hash as it was", name)
		}
	}
	// The hash is not an input of itself.
	e := event()
	e.Hash = []byte("anything")
	if !bytes.Equal(e.Seal(), base) {
		t.Error("Seal depends on Hash")
	}
}

func TestChanged(t *testing.T) {
	k := &keys.Key{
		ID: "key_1", Name: "n", Environment: "live", State: keys.StateActive, Start: "kw_live_Ab", Last4: "wxyz",
		Scopes: []string{"a"}, Metadata: map[string]string{"team": "core"}, Version: 3,
	}
	for _, c := range []struct {
		name string
		edit func(*keys.Key)
		want []string
	}{
		{"none", func(*keys.Key) {}, nil},
		{"version-only", func(k *keys.Key) { k.Version++ }, nil},
		{"name-and-scopes", func(k *keys.Key) { k.Name, k.Scopes = "m", []string{"a", "b"} }, []string{"name", "scopes"}},
		{"state", func(k *keys.Key) { k.State = keys.StateDisabled }, []string{"state"}},
		{"metadata-removed", func(k *keys.Key) { k.Metadata = nil }, []string{"metadata"}},
		{"description-added", func(k *keys.Key) { k.Description = "d" }, []string{"description"}},
		{"expiry", func(k *keys.Key) { k.ExpireTime = time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC) }, []string{"expire_time"}},
		{"policies", func(k *keys.Key) {
			k.AllowedCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
			k.RateLimit = keys.RateLimit{Limit: 1, Period: time.Second}
			k.Quota = keys.Quota{Limit: 5}
		}, []string{"allowed_cidrs", "quota", "rate_limit"}},
		{"regenerate-with-grace", func(k *keys.Key) {
			k.PrevHash, k.PrevStart, k.PrevLast4 = []byte{1}, k.Start, k.Last4
			k.PrevExpire = time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
			k.Hash, k.Start, k.Last4 = []byte{2}, "kw_live_Cd", "abcd"
		}, []string{"masked_key", "previous_key_expire_time", "previous_masked_key"}},
		{"sealed", func(k *keys.Key) { k.Sealed = []byte("sealed") }, []string{"recoverable"}},
	} {
		after := k.Clone()
		c.edit(after)
		if got := audit.Changed(audit.SnapshotOf(k), audit.SnapshotOf(after)); !slices.Equal(got, c.want) {
			t.Errorf("%s: Changed = %q, want %q", c.name, got, c.want)
		}
	}
	if got := audit.Changed(nil, audit.SnapshotOf(k)); got != nil {
		t.Errorf("Changed(nil, k) = %q, want nil", got)
	}
}

func TestSnapshotHoldsNoSecret(t *testing.T) {
	k := &keys.Key{Hash: []byte("HASHHASH"), PrevHash: []byte("PREVPREV"), Sealed: []byte("SEALSEAL"), Start: "kw", Last4: "abcd"}
	s := audit.SnapshotOf(k)
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"HASHHASH", "PREVPREV", "SEALSEAL"} {
		for _, form := range []string{secret, hex.EncodeToString([]byte(secret)), base64.StdEncoding.EncodeToString([]byte(secret))} {
			if bytes.Contains(b, []byte(form)) {
				t.Errorf("snapshot %s shows %s", b, secret)
			}
		}
	}
	if !s.Recoverable {
		t.Error("Recoverable = false for a key with a sealed secret")
	}
}

// chain returns n sealed, linked events.
func chain(n int) []*audit.Event {
	var out []*audit.Event
	var prev []byte
	for i := range n {
		e := &audit.Event{Seq: int64(i + 1), Time: time.Unix(int64(i), 0).UTC(), Action: audit.ActionReveal, PrevHash: prev}
		e.Hash = e.Seal()
		prev = e.Hash
		out = append(out, e)
	}
	return out
}

func TestVerifier(t *testing.T) {
	for _, c := range []struct {
		name   string
		tamper func([]*audit.Event) []*audit.Event
		good   int64  // events verified before the failure
		want   string // in the error; "" for none
	}{
		{"ok", func(es []*audit.Event) []*audit.Event { return es }, 5, ""},
		{"ok/empty", func([]*audit.Event) []*audit.Event { return nil }, 0, ""},
		{"fail/gap", func(es []*audit.Event) []*audit.Event { return slices.Delete(es, 2, 3) }, 2, "event 4 follows event 2"},
		{"fail/not-from-one", func(es []*audit.Event) []*audit.Event { return es[1:] }, 0, "event 2 follows event 0"},
		{"fail/reordered", func(es []*audit.Event) []*audit.Event { es[2], es[3] = es[3], es[2]; return es }, 2, "event 4 follows event 2"},
		{"fail/broken-link", func(es []*audit.Event) []*audit.Event {
			// Event 3 edited and resealed: it verifies alone, event 4 no
			// longer links to it.
			es[2].Detail = "edited"
			es[2].Hash = es[2].Seal()
			return es
		}, 3, "event 4 does not link to event 3"},
		{"fail/altered", func(es []*audit.Event) []*audit.Event { es[1].Actor = "key_mallory"; return es }, 1, "event 2 was altered"},
		{"fail/first-with-prev-hash", func(es []*audit.Event) []*audit.Event {
			es[0].PrevHash = []byte{1}
			es[0].Hash = es[0].Seal()
			return es
		}, 0, "event 1 does not link"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var v audit.Verifier
			var err error
			for _, e := range c.tamper(chain(5)) {
				if err = v.Add(e); err != nil {
					break
				}
			}
			switch {
			case c.want == "" && err != nil:
				t.Errorf("err = %v, want nil", err)
			case c.want != "" && (!errors.Is(err, audit.ErrBroken) || !strings.Contains(err.Error(), c.want)):
				t.Errorf("err = %v, want ErrBroken saying %q", err, c.want)
			}
			if v.Count() != c.good {
				t.Errorf("Count = %d, want %d", v.Count(), c.good)
			}
		})
	}
}
