package cache

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
	// once no writer is left.
	finishScript = redis.NewScript(`
if redis.call('HDEL', KEYS[1], 'p:' .. ARGV[1]) == 1 then
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
return 1`)

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
	version, data := "", ""
	if e != nil {
		version = strconv.FormatInt(e.version, 10)
		var err error
		if data, err = encode(e.key); err != nil {
			return err
		}
	}
	return finishScript.Run(ctx, r.c, []string{r.key(h)}, token, version, data, r.ttl.Milliseconds()).Err()
}

// snapshot is a cached key as stored in Redis.
type snapshot struct {
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
}

func encode(k *keys.Key) (string, error) {
	if k == nil {
		return "", nil
	}
	b, err := json.Marshal(snapshot{
		ID: k.ID, Name: k.Name, Description: k.Description, Environment: k.Environment, State: k.State,
		Hash: k.Hash, Start: k.Start, Last4: k.Last4, Scopes: k.Scopes, Metadata: k.Metadata,
		CreateTime: k.CreateTime, UpdateTime: k.UpdateTime, ExpireTime: k.ExpireTime, LastUsed: k.LastUsed, Version: k.Version,
	})
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
	if s.ID == "" || len(s.Hash) != 32 {
		return nil, errors.New("decode cache entry: incomplete")
	}
	if s.Scopes == nil {
		s.Scopes = []string{}
	}
	if s.Metadata == nil {
		s.Metadata = map[string]string{}
	}
	return &keys.Key{
		ID: s.ID, Name: s.Name, Description: s.Description, Environment: s.Environment, State: s.State,
		Hash: s.Hash, Start: s.Start, Last4: s.Last4, Scopes: s.Scopes, Metadata: s.Metadata,
		CreateTime: s.CreateTime, UpdateTime: s.UpdateTime, ExpireTime: s.ExpireTime, LastUsed: s.LastUsed, Version: s.Version,
	}, nil
}
