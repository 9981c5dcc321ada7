package cache

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/keys"
)

// fullKey is a key with every field of keys.Key set (QuotaUsage aside, which
// a snapshot leaves out), as the store would return it.
func fullKey() *keys.Key {
	hash, prev := make([]byte, 32), make([]byte, 32)
	rand.Read(hash)
	rand.Read(prev)
	at := func(day int) time.Time { return time.Date(2031, 3, day, 4, 5, 6, 7000, time.UTC) }
	return &keys.Key{
		ID: "key_01", Name: "billing", Description: "the billing job", Environment: "live",
		State: keys.StateDisabled, Hash: hash, Start: "kw_live_AbC123", Last4: "wxyz",
		Scopes: []string{"orders:*", "keys:read"}, Metadata: map[string]string{"team": "core"},
		CreateTime: at(1), UpdateTime: at(2), ExpireTime: at(3), LastUsed: at(4),
		AllowedCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")},
		RateLimit:    keys.RateLimit{Limit: 100, Period: time.Minute, Burst: 20},
		Quota:        keys.Quota{Limit: 1000, Refill: keys.RefillMonthly},
		PrevHash:     prev, PrevStart: "kw_live_Old123", PrevLast4: "abcd", PrevExpire: at(5),
		Version: 7,
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	full := fullKey()
	// A field added to keys.Key must be added to the snapshot too (or
	// here, if it is not content): a snapshot that silently drops one
	// would serve keys without it.
	v := reflect.ValueOf(full).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if f.IsExported() && f.Name != "QuotaUsage" && f.Name != "Sealed" && v.Field(i).IsZero() {
			t.Errorf("fullKey leaves %s unset: set it, and make sure the snapshot carries it", f.Name)
		}
	}

	bare := &keys.Key{ID: "key_02", Hash: full.Hash, Scopes: []string{}, Metadata: map[string]string{}, Version: 1}
	for name, k := range map[string]*keys.Key{"full": full, "bare": bare} {
		data, err := encode(k)
		if err != nil {
			t.Fatalf("%s: encode: %v", name, err)
		}
		got, err := decode(data)
		if err != nil {
			t.Fatalf("%s: decode: %v", name, err)
		}
		if !reflect.DeepEqual(got, k) {
			t.Errorf("%s: decode(encode(k)) = %+v, want %+v", name, got, k)
		}
	}

	// Usage is a counter, not content: it is not carried.
	withUsage := fullKey()
	withUsage.QuotaUsage = keys.QuotaUsage{Period: "2031-03", Used: 5}
	data, _ := encode(withUsage)
	if got, _ := decode(data); got.QuotaUsage != (keys.QuotaUsage{}) {
		t.Errorf("QuotaUsage carried through Redis: %+v", got.QuotaUsage)
	}
	// The sealed secret of a recoverable key never goes to Redis, which
	// holds hashes only.
	sealed := fullKey()
	sealed.Sealed = []byte("sealed secret material")
	data, _ = encode(sealed)
	if strings.Contains(data, "sealed secret material") || strings.Contains(data, base64.StdEncoding.EncodeToString(sealed.Sealed)) {
		t.Error("the sealed secret went into the Redis snapshot")
	}
	if got, _ := decode(data); got.Sealed != nil {
		t.Errorf("Sealed carried through Redis: %q", got.Sealed)
	}
}

// TestSnapshotOfAnotherFormatIsAMiss: a snapshot from a release that knew no
// policies must not be read as a key without them.
func TestSnapshotOfAnotherFormatIsAMiss(t *testing.T) {
	k := fullKey()
	old := `{"i":"key_01","n":"billing","e":"live","s":1,"h":"` +
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" + `","st":"kw","l4":"abcd","v":7}`
	if _, err := decode(old); !errors.Is(err, errSnapshotFormat) {
		t.Fatalf("decode of a format-1 snapshot: err = %v, want errSnapshotFormat", err)
	}

	for name, client := range redisBackends {
		t.Run(name, func(t *testing.T) {
			c := client(t)
			r := &redisTier{c: c, names: namesFor(namespace(t)), ttl: time.Minute, negativeTTL: time.Second, pendingTTL: time.Minute, interned: newInterned(16)}
			ctx := context.Background()
			h := [32]byte(k.Hash)
			if err := c.HSet(ctx, r.key(&h), "v", 7, "d", old).Err(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Del(context.Background(), r.key(&h)) })
			if e, st, err := r.get(ctx, &h); err != nil || st != redisMiss || e != nil {
				t.Fatalf("get of a format-1 snapshot = %+v, %v, %v; want a miss without error", e, st, err)
			}
		})
	}
}
