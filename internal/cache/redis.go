package cache

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/keys"
)

// names are the Redis keys and channels of one deployment. All share the hash
// tag {namespace}: in a Redis Cluster the scripts, the sharded invalidation
// channel and the acknowledgements then live on one shard, and SPUBLISH's
// receiver count covers every subscribed instance. Deployments sharing a
// Redis must use different namespaces, or one would see the other's keys.
type names struct{ keyPrefix, inval, ackPrefix string }

func namesFor(namespace string) names {
	tag := "{" + namespace + "}"
	return names{keyPrefix: tag + ":k:", inval: tag + ":inval", ackPrefix: tag + ":ack:"}
}

// A cached key is a Redis hash: v (version), d (snapshot; empty for "no
// such key"), pc (writes in progress) and one p:<token> field per writer.
// While pc > 0 nobody may fill it and readers go to the store.
var (
	prepareScript = redis.NewScript(`
if redis.call('HSETNX', KEYS[1], 'p:' .. ARGV[1], 1) == 1 then
  redis.call('HINCRBY', KEYS[1], 'pc', 1)
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1`)

	// finishScript ends one writer's claim; with a version it also installs
	// the post-commit snapshot if newer. The key gets its normal TTL only
	// once no writer is left. It returns 1 if the claim was still there, 0
	// if Redis lost it (restarted empty, failed over, evicted it).
	finishScript = redis.NewScript(`
local had = redis.call('HDEL', KEYS[1], 'p:' .. ARGV[1])
if had == 1 then
  redis.call('HINCRBY', KEYS[1], 'pc', -1)
end
if ARGV[2] ~= '' then
  local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
  if tonumber(ARGV[2]) > v then
    redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
  end
end
local pc = tonumber(redis.call('HGET', KEYS[1], 'pc') or '0')
if pc <= 0 then
  if redis.call('HEXISTS', KEYS[1], 'v') == 1 then
    redis.call('HDEL', KEYS[1], 'pc')
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
  else
    redis.call('DEL', KEYS[1])
  end
end
return had`)

	// fillScript caches what a reader found in the store, unless a write is
	// in progress or a newer version is already there.
	fillScript = redis.NewScript(`
if tonumber(redis.call('HGET', KEYS[1], 'pc') or '0') > 0 then return 0 end
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if tonumber(ARGV[1]) <= v then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`)
)

type redisState int

const (
	redisMiss redisState = iota
	redisHit
	redisPending
)

type redisTier struct {
	c           redis.UniversalClient
	names       names
	ttl         time.Duration
	negativeTTL time.Duration
	pendingTTL  time.Duration
	interned    *interned
}

func (r *redisTier) key(h *[32]byte) string { return r.names.keyPrefix + hex.EncodeToString(h[:]) }

func (r *redisTier) get(ctx context.Context, h *[32]byte) (*entry, redisState, error) {
	vals, err := r.c.HMGet(ctx, r.key(h), "v", "d", "pc").Result()
	if err != nil {
		return nil, redisMiss, fmt.Errorf("redis get: %w", err)
	}
	if pc, _ := vals[2].(string); pc != "" && pc != "0" {
		return nil, redisPending, nil
	}
	vs, ok := vals[0].(string)
	if !ok {
		return nil, redisMiss, nil
	}
	version, err := strconv.ParseInt(vs, 10, 64)
	if err != nil {
		return nil, redisMiss, fmt.Errorf("redis entry version: %w", err)
	}
	data, _ := vals[1].(string)
	if data != "" {
		if k := r.interned.get(h, version); k != nil {
			return &entry{key: k, version: version, size: sizeOf(k)}, redisHit, nil
		}
	}
	k, err := decode(data)
	if errors.Is(err, errSnapshotFormat) {
		return nil, redisMiss, nil // another release's snapshot: read the store
	}
	if err != nil {
		return nil, redisMiss, err
	}
	if k != nil {
		if k.Version != version {
			return nil, redisMiss, errors.New("redis entry: snapshot and version disagree")
		}
		k = r.interned.intern(h, k)
	}
	return &entry{key: k, version: version, size: sizeOf(k)}, redisHit, nil
}

func (r *redisTier) fill(ctx context.Context, h *[32]byte, e *entry) error {
	data, err := encode(e.key)
	if err != nil {
		return err
	}
	ttl := r.ttl
	if e.key == nil {
		ttl = r.negativeTTL
	}
	return fillScript.Run(ctx, r.c, []string{r.key(h)}, e.version, data, ttl.Milliseconds()).Err()
}

func (r *redisTier) prepare(ctx context.Context, h *[32]byte, token string) error {
	return prepareScript.Run(ctx, r.c, []string{r.key(h)}, token, r.pendingTTL.Milliseconds()).Err()
}

// finish ends token's claim on h; e (the post-commit truth) may be nil when
// the write did not commit.
func (r *redisTier) finish(ctx context.Context, h *[32]byte, token string, e *entry) error {
	_, err := r.finishClaim(ctx, h, token, e)
	return err
}

// finishClaim is finish, reporting whether the claim was still there.
func (r *redisTier) finishClaim(ctx context.Context, h *[32]byte, token string, e *entry) (bool, error) {
	version, data := "", ""
	if e != nil {
		version = strconv.FormatInt(e.version, 10)
		var err error
		if data, err = encode(e.key); err != nil {
			return false, err
		}
	}
	had, err := finishScript.Run(ctx, r.c, []string{r.key(h)}, token, version, data, r.ttl.Milliseconds()).Int()
	return had == 1, err
}

// snapshotFormat is written into every snapshot, and a snapshot with
// another one is not used. Format 2 added the policies and the previous
// secret: a snapshot written by an earlier release lacks them, and reading it
// as a key without an allow-list or quota would lift them during a rolling
// upgrade. Such a snapshot is a miss instead, answered from the store. Bump
// it whenever a field that changes a validation's outcome is added.
const snapshotFormat = 2

var errSnapshotFormat = errors.New("decode cache entry: another snapshot format")

// snapshot is a cached key as stored in Redis. QuotaUsage is left out: it
// is a counter, not content, and changes without a new version.
type snapshot struct {
	Format      int               `json:"f"`
	ID          string            `json:"i"`
	Name        string            `json:"n"`
	Description string            `json:"de,omitempty"`
	Environment string            `json:"e"`
	State       keys.State        `json:"s"`
	Hash        []byte            `json:"h"`
	Start       string            `json:"st"`
	Last4       string            `json:"l4"`
	Scopes      []string          `json:"sc,omitempty"`
	Metadata    map[string]string `json:"m,omitempty"`
	CreateTime  time.Time         `json:"ct"`
	UpdateTime  time.Time         `json:"ut"`
	ExpireTime  time.Time         `json:"et"`
	LastUsed    time.Time         `json:"lu"`
	Version     int64             `json:"v"`

	AllowedCIDRs []string       `json:"ac,omitempty"`
	RateLimit    *snapRateLimit `json:"rl,omitempty"`
	Quota        *snapQuota     `json:"q,omitempty"`
	PrevHash     []byte         `json:"ph,omitempty"`
	PrevStart    string         `json:"ps,omitempty"`
	PrevLast4    string         `json:"pl,omitempty"`
	PrevExpire   time.Time      `json:"pe,omitzero"`
}

type snapRateLimit struct {
	Limit  int64         `json:"l"`
	Period time.Duration `json:"p"`
	Burst  int64         `json:"b"`
}

type snapQuota struct {
	Limit  int64       `json:"l"`
	Refill keys.Refill `json:"r"`
}

func encode(k *keys.Key) (string, error) {
	if k == nil {
		return "", nil
	}
	s := snapshot{
		Format: snapshotFormat,
		ID:     k.ID, Name: k.Name, Description: k.Description, Environment: k.Environment, State: k.State,
		Hash: k.Hash, Start: k.Start, Last4: k.Last4, Scopes: k.Scopes, Metadata: k.Metadata,
		CreateTime: k.CreateTime, UpdateTime: k.UpdateTime, ExpireTime: k.ExpireTime, LastUsed: k.LastUsed, Version: k.Version,
		PrevHash: k.PrevHash, PrevStart: k.PrevStart, PrevLast4: k.PrevLast4, PrevExpire: k.PrevExpire,
	}
	for _, p := range k.AllowedCIDRs {
		s.AllowedCIDRs = append(s.AllowedCIDRs, p.String())
	}
	if r := k.RateLimit; r != (keys.RateLimit{}) {
		s.RateLimit = &snapRateLimit{Limit: r.Limit, Period: r.Period, Burst: r.Burst}
	}
	if q := k.Quota; q != (keys.Quota{}) {
		s.Quota = &snapQuota{Limit: q.Limit, Refill: q.Refill}
	}
	b, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("encode cache entry: %w", err)
	}
	return string(b), nil
}

func decode(data string) (*keys.Key, error) {
	if data == "" {
		return nil, nil
	}
	var s snapshot
	if err := json.Unmarshal([]byte(data), &s); err != nil {
		return nil, fmt.Errorf("decode cache entry: %w", err)
	}
	if s.Format != snapshotFormat {
		return nil, errSnapshotFormat
	}
	if s.ID == "" || len(s.Hash) != 32 {
		return nil, errors.New("decode cache entry: incomplete")
	}
	if s.Scopes == nil {
		s.Scopes = []string{}
	}
	if s.Metadata == nil {
		s.Metadata = map[string]string{}
	}
	k := &keys.Key{
		ID: s.ID, Name: s.Name, Description: s.Description, Environment: s.Environment, State: s.State,
		Hash: s.Hash, Start: s.Start, Last4: s.Last4, Scopes: s.Scopes, Metadata: s.Metadata,
		CreateTime: s.CreateTime, UpdateTime: s.UpdateTime, ExpireTime: s.ExpireTime, LastUsed: s.LastUsed, Version: s.Version,
		PrevStart: s.PrevStart, PrevLast4: s.PrevLast4, PrevExpire: s.PrevExpire,
	}
	if len(s.PrevHash) > 0 { // nil when empty, as the store returns it
		k.PrevHash = s.PrevHash
	}
	if len(s.AllowedCIDRs) > 0 {
		k.AllowedCIDRs = make([]netip.Prefix, len(s.AllowedCIDRs))
		for i, c := range s.AllowedCIDRs {
			var err error
			if k.AllowedCIDRs[i], err = netip.ParsePrefix(c); err != nil {
				return nil, fmt.Errorf("decode cache entry: allowed CIDR: %w", err)
			}
		}
	}
	if r := s.RateLimit; r != nil {
		k.RateLimit = keys.RateLimit{Limit: r.Limit, Period: r.Period, Burst: r.Burst}
	}
	if q := s.Quota; q != nil {
		k.Quota = keys.Quota{Limit: q.Limit, Refill: q.Refill}
	}
	return k, nil
}
