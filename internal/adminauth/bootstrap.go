package adminauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
)

// MinTokenLen bounds how weak an operator-chosen KEYWARD_ADMIN_KEY may be.
const MinTokenLen = 24

// BootstrapStore is what Bootstrap needs of the store.
type BootstrapStore interface {
	Create(ctx context.Context, k *keys.Key, requestID string, a store.Audit) (*keys.Key, error)
	GetByHash(ctx context.Context, hash []byte) (*keys.Key, error)
}

// BootstrapOptions says where the first admin key comes from.
type BootstrapOptions struct {
	// EnvKey is KEYWARD_ADMIN_KEY; when set it is registered if the store does not know it.
	EnvKey string
	// File is <data-dir>/admin.key, used when EnvKey is empty.
	File   string
	Logger *slog.Logger
}

// Bootstrap makes sure an admin credential exists. With EnvKey set, that key
// is registered if unknown. Otherwise the key in File is used if the store
// knows it; if not (a new data dir, or a store that never saw it), a new admin
// key is generated, stored, and written to File with mode 0600. Only the path
// is logged, never the key.
func Bootstrap(ctx context.Context, st BootstrapStore, o BootstrapOptions) error {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if o.EnvKey != "" {
		if len(o.EnvKey) < MinTokenLen {
			return fmt.Errorf("KEYWARD_ADMIN_KEY is too short: use at least %d random characters", MinTokenLen)
		}
		created, err := ensure(ctx, st, o.EnvKey, "admin (KEYWARD_ADMIN_KEY)")
		if err != nil {
			return err
		}
		if created {
			log.InfoContext(ctx, "registered the admin key from KEYWARD_ADMIN_KEY")
		}
		return nil
	}
	if raw, err := os.ReadFile(o.File); err == nil {
		token := strings.TrimSpace(string(raw))
		if _, err := st.GetByHash(ctx, keymat.Hash(token)); err == nil {
			log.InfoContext(ctx, "admin key", "file", o.File)
			return nil
		} else if !errors.Is(err, keys.ErrNotFound) {
			return fmt.Errorf("look up admin key from %s: %w", o.File, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read admin key file: %w", err)
	}
	secret, err := keymat.Generate("live")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(o.File), 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	// Write the file first: a key in the store that nobody can read is useless.
	if err := writeSecretFile(o.File, secret.String()); err != nil {
		return err
	}
	if _, err := ensure(ctx, st, secret.String(), "admin (generated)"); err != nil {
		return err
	}
	log.InfoContext(ctx, "generated an admin key", "file", o.File)
	return nil
}

// ensure registers token as an admin key unless the store already has it.
func ensure(ctx context.Context, st BootstrapStore, token, name string) (bool, error) {
	hash := keymat.Hash(token)
	_, err := st.GetByHash(ctx, hash)
	if err == nil {
		return false, nil
	}
	if !errors.Is(err, keys.ErrNotFound) {
		return false, fmt.Errorf("look up admin key: %w", err)
	}
	now := time.Now()
	id, err := keys.NewID(now)
	if err != nil {
		return false, err
	}
	k := &keys.Key{ID: id, Name: name, Environment: "live", State: keys.StateActive, Hash: hash, Scopes: []string{Scope}}
	if s, err := keymat.Parse(token); err == nil {
		k.Start, k.Last4 = s.Start(), s.Last4()
	} else {
		// An operator-chosen token shows nothing of itself.
		k.Start, k.Last4 = "admin", "****"
	}
	if _, err := st.Create(ctx, k, "", store.Audit{Actor: audit.ActorBootstrap, Action: audit.ActionCreate}); err != nil && !errors.Is(err, keys.ErrAlreadyExists) {
		// AlreadyExists: another instance registered it concurrently; fine.
		return false, fmt.Errorf("register admin key: %w", err)
	}
	return true, nil
}

func writeSecretFile(path, secret string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("write admin key file: %w", err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil { // WriteFile keeps an existing file's mode
		return fmt.Errorf("write admin key file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write admin key file: %w", err)
	}
	return nil
}
