// Package audit is the audit trail's event and its hash chain. Stores append
// events in the same transaction as the change they record; this package
// says what an event holds and how the chain is computed and checked, the
// same way for every store.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/keyward/keyward/internal/keys"
)

// Actions.
const (
	ActionCreate         = "key.create"
	ActionUpdate         = "key.update"
	ActionEnable         = "key.enable"
	ActionDisable        = "key.disable"
	ActionRegenerate     = "key.regenerate"
	ActionDelete         = "key.delete"
	ActionReveal         = "key.reveal"
	ActionLeakReported   = "key.leak_reported"
	ActionReseal         = "key.reseal" // master-key rotation re-encrypted the secret
	ActionSignInFailed   = "admin.sign_in_failed"
	ActorBootstrap       = "bootstrap" // the admin key made at first start
	ActorMasterKeyRotate = "rotate-master-key"
)

// Event is one entry of the trail.
type Event struct {
	Seq     int64
	Time    time.Time // UTC, whole microseconds
	Actor   string
	Action  string
	KeyID   string
	Source  string
	Before  *Snapshot // nil when there was no key before (create) or no key involved
	After   *Snapshot // nil when there is none after (delete)
	Changed []string  // for updates: the Snapshot fields that differ
	Detail  string
	// PrevHash is the previous event's Hash (nil for the first); Hash is
	// Seal's result.
	PrevHash []byte
	Hash     []byte
}

// Snapshot is the non-secret state of a key an event records. It never holds
// a hash of the secret, nor its encrypted form: an audit reader learns what
// changed, not how to use the key.
type Snapshot struct {
	Name         string            `json:"name"`
	Description  string            `json:"description,omitempty"`
	Environment  string            `json:"environment"`
	State        string            `json:"state"`
	Masked       string            `json:"masked_key"`
	Scopes       []string          `json:"scopes,omitempty"`
	Metadata     map[string]string `json:"metadata,omitempty"`
	ExpireTime   *time.Time        `json:"expire_time,omitempty"`
	AllowedCIDRs []string          `json:"allowed_cidrs,omitempty"`
	RateLimit    *keys.RateLimit   `json:"rate_limit,omitempty"`
	Quota        *keys.Quota       `json:"quota,omitempty"`
	PrevMasked   string            `json:"previous_masked_key,omitempty"`
	PrevExpire   *time.Time        `json:"previous_key_expire_time,omitempty"`
	Recoverable  bool              `json:"recoverable,omitempty"`
	Version      int64             `json:"version"`
}

// SnapshotOf records k (nil for none).
func SnapshotOf(k *keys.Key) *Snapshot {
	if k == nil {
		return nil
	}
	s := &Snapshot{
		Name: k.Name, Description: k.Description, Environment: k.Environment, State: k.State.String(),
		Masked: k.Masked(), Scopes: k.Scopes, Metadata: k.Metadata, Version: k.Version,
		Recoverable: len(k.Sealed) > 0,
	}
	if !k.ExpireTime.IsZero() {
		t := k.ExpireTime.UTC()
		s.ExpireTime = &t
	}
	for _, p := range k.AllowedCIDRs {
		s.AllowedCIDRs = append(s.AllowedCIDRs, p.String())
	}
	if k.RateLimit.Set() {
		rl := k.RateLimit
		s.RateLimit = &rl
	}
	if k.Quota.Set() {
		q := k.Quota
		s.Quota = &q
	}
	if len(k.PrevHash) > 0 {
		s.PrevMasked = k.PrevMasked()
		t := k.PrevExpire.UTC()
		s.PrevExpire = &t
	}
	if len(s.Metadata) == 0 {
		s.Metadata = nil
	}
	if len(s.Scopes) == 0 {
		s.Scopes = nil
	}
	return s
}

// Changed lists the JSON names of the Snapshot fields that differ between
// before and after (version aside), in a fixed order.
func Changed(before, after *Snapshot) []string {
	if before == nil || after == nil {
		return nil
	}
	var a, b map[string]json.RawMessage
	ab, _ := json.Marshal(before)
	bb, _ := json.Marshal(after)
	json.Unmarshal(ab, &a)
	json.Unmarshal(bb, &b)
	var out []string
	for _, m := range []map[string]json.RawMessage{a, b} {
		for name := range m {
			if name != "version" && !bytes.Equal(a[name], b[name]) && !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Seal computes e's Hash from PrevHash and every other field: SHA-256 over a
// length-prefixed encoding, so no two different events encode alike.
func (e *Event) Seal() []byte {
	h := sha256.New()
	field := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], uint64(e.Seq))
	field(e.PrevHash)
	field(seq[:])
	field([]byte(e.Time.UTC().Format(time.RFC3339Nano)))
	field([]byte(e.Actor))
	field([]byte(e.Action))
	field([]byte(e.KeyID))
	field([]byte(e.Source))
	before, _ := json.Marshal(e.Before)
	after, _ := json.Marshal(e.After)
	changed, _ := json.Marshal(e.Changed)
	field(before)
	field(after)
	field(changed)
	field([]byte(e.Detail))
	return h.Sum(nil)
}

// ErrBroken is a chain that does not verify.
var ErrBroken = errors.New("audit trail does not verify")

// Verifier checks events fed to it oldest first.
type Verifier struct {
	n    int64
	last *Event
}

// Add checks e against the events before it: consecutive sequence numbers
// from 1, PrevHash equal to the previous Hash, Hash equal to Seal().
func (v *Verifier) Add(e *Event) error {
	want := v.n + 1
	var prev []byte
	if v.last != nil {
		prev = v.last.Hash
	}
	switch {
	case e.Seq != want:
		return fmt.Errorf("%w: event %d follows event %d (deleted or reordered events)", ErrBroken, e.Seq, v.n)
	case !bytes.Equal(e.PrevHash, prev):
		return fmt.Errorf("%w: event %d does not link to event %d", ErrBroken, e.Seq, v.n)
	case !bytes.Equal(e.Hash, e.Seal()):
		return fmt.Errorf("%w: event %d was altered (its hash %s does not match its content)", ErrBroken, e.Seq, hex.EncodeToString(e.Hash))
	}
	v.n, v.last = e.Seq, e
	return nil
}

// Count is how many events verified.
func (v *Verifier) Count() int64 { return v.n }
