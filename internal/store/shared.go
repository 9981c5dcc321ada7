package store

import (
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/keys"
)

// Normalize gives k the form every read returns: UTC microsecond times (the
// precision both backends keep), non-nil Scopes and Metadata.
func Normalize(k *keys.Key) {
	if k.Scopes == nil {
		k.Scopes = []string{}
	}
	if k.Metadata == nil {
		k.Metadata = map[string]string{}
	}
	k.CreateTime = Micro(k.CreateTime)
	k.UpdateTime = Micro(k.UpdateTime)
	k.ExpireTime = Micro(k.ExpireTime)
	k.LastUsed = Micro(k.LastUsed)
}

// Micro is t as stored: UTC, whole microseconds; the zero time stays zero.
func Micro(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	t = t.UTC().Truncate(time.Microsecond)
	if t.IsZero() { // within a microsecond of year 1: as good as unset
		return time.Time{}
	}
	return t
}

// Migration is one embedded schema step.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations reads migrations/NNNN_what.sql from fsys in version order.
func Migrations(fsys fs.FS) ([]Migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	seen := map[int]string{}
	for _, p := range names {
		name := path.Base(p)
		num, _, _ := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v < 1 {
			return nil, fmt.Errorf("migration %s: name must start with a positive number", name)
		}
		if other, ok := seen[v]; ok {
			return nil, fmt.Errorf("migrations %s and %s share version %d", other, name, v)
		}
		seen[v] = name
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms, nil
}
