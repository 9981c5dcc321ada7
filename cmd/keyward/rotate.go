package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/keyward/keyward/internal/app"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/sealer"
	"github.com/keyward/keyward/internal/store"
)

const rotateUsage = `usage: keyward rotate-master-key [--new-key-file FILE] [--old-key-file FILE]... [store flags]

Re-encrypts the kept secrets of recoverable keys under a new master key.

  --new-key-file FILE  the new master key (or KEYWARD_MASTER_KEY)
  --old-key-file FILE  a master key being replaced; repeat it or separate files
                       with commas (or KEYWARD_PREVIOUS_MASTER_KEYS, comma-separated)

The store is chosen as for keyward serve (--postgres-dsn, --data-dir, --config
and their KEYWARD_* variables). Keys already under the new master key are
left alone, so the command can be stopped and run again at any time. It exits
non-zero if a secret sealed under a key it was not given remains.

Zero-downtime rotation (docs/recoverable.md):
  1. restart every server with the new key as KEYWARD_MASTER_KEY and the old
     one in KEYWARD_PREVIOUS_MASTER_KEYS: they seal under the new key and
     still open what the old one sealed;
  2. run keyward rotate-master-key with the same two keys;
  3. remove the old key from the servers (and destroy it once backups made
     with it have expired).
`

// rotatePageSize is how many keys are read at a time.
const rotatePageSize = 500

// rotateCommand runs `keyward rotate-master-key`.
func rotateCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	args, help, err := rotateArgs(args)
	if help {
		fmt.Fprint(stdout, rotateUsage)
		return nil
	}
	if err != nil {
		fmt.Fprint(stderr, rotateUsage)
		return fmt.Errorf("rotate-master-key: %w", err)
	}
	cfg, err := config.Parse("keyward rotate-master-key", args, getenv)
	if err != nil {
		return err
	}
	sl, err := cfg.Sealer()
	if err != nil {
		return err
	}
	if sl == nil {
		return errors.New("rotate-master-key: no new master key: give --new-key-file or set KEYWARD_MASTER_KEY")
	}
	st, err := app.OpenStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Fprintf(stdout, "re-sealing recoverable keys under master key %s\n", sl.Fingerprint())
	r, err := rotate(ctx, st, sl)
	fmt.Fprintf(stdout, "%d keys: %d re-sealed, %d already under the new master key, %d not recoverable\n",
		r.seen, r.resealed, r.current, r.plain)
	if err != nil {
		return fmt.Errorf("rotate-master-key: stopped after %d re-sealed: %w (running it again resumes)", r.resealed, err)
	}
	if len(r.failed) > 0 {
		fmt.Fprintf(stdout, "%d keys could not be re-sealed:\n", len(r.failed))
		for _, f := range r.failed {
			fmt.Fprintf(stdout, "  %s\n", f)
		}
		return fmt.Errorf("rotate-master-key: %d keys are still sealed under another master key; run it again with that key as --old-key-file", len(r.failed))
	}
	return nil
}

// rotation counts what rotate did.
type rotation struct {
	seen, resealed, current, plain int
	failed                         []string // "key_…: why"
}

// errAlreadyCurrent: the key was re-sealed (or regenerated) since it was
// listed; nothing to write.
var errAlreadyCurrent = errors.New("already under the current master key")

// rotate re-seals, key by key, every sealed secret that is not under sl's
// current master key. Each key is its own transaction with its own audit
// event, so an interrupted run loses nothing and the next one resumes.
func rotate(ctx context.Context, st store.Store, sl *sealer.Sealer) (rotation, error) {
	var r rotation
	after := ""
	for {
		page, err := st.List(ctx, store.ListQuery{AfterID: after, Limit: rotatePageSize})
		if err != nil {
			return r, fmt.Errorf("list keys: %w", err)
		}
		for _, k := range page {
			r.seen++
			switch {
			case len(k.Sealed) == 0:
				r.plain++
				continue
			case sl.Current(k.Sealed):
				r.current++
				continue
			}
			_, _, err := st.Update(ctx, k.ID, func(k *keys.Key) error {
				if len(k.Sealed) == 0 || sl.Current(k.Sealed) {
					return errAlreadyCurrent
				}
				sealed, err := sl.Reseal(k.ID, k.Sealed)
				if err != nil {
					return err
				}
				k.Sealed = sealed
				return nil
			}, store.Audit{Actor: audit.ActorMasterKeyRotate, Action: audit.ActionReseal})
			switch {
			case err == nil:
				r.resealed++
			case errors.Is(err, errAlreadyCurrent), errors.Is(err, keys.ErrNotFound): // changed or deleted meanwhile
				r.current++
			case errors.Is(err, sealer.ErrUnknownKey), errors.Is(err, sealer.ErrCorrupt):
				r.failed = append(r.failed, fmt.Sprintf("%s: %s", k.ID, trimWrap(err)))
			default:
				return r, fmt.Errorf("re-seal key %s: %w", k.ID, err)
			}
		}
		if len(page) < rotatePageSize {
			return r, nil
		}
		after = page[len(page)-1].ID
	}
}

// trimWrap is the sealer's own message, without the store's wrapping.
func trimWrap(err error) string {
	for _, e := range []error{sealer.ErrUnknownKey, sealer.ErrCorrupt} {
		if errors.Is(err, e) {
			msg := err.Error()
			if i := strings.Index(msg, e.Error()); i >= 0 {
				return msg[i:]
			}
		}
	}
	return err.Error()
}

// rotateArgs turns --new-key-file and --old-key-file into the serve flags
// --master-key-file and --previous-master-key-files, leaving the rest for
// config.Parse.
func rotateArgs(args []string) (rest []string, help bool, err error) {
	var newFile string
	var oldFiles []string
	seen := map[string]bool{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			rest = append(rest, a)
			continue
		}
		switch name {
		case "h", "help":
			return nil, true, nil
		case "new-key-file", "old-key-file":
			if !hasValue {
				if i+1 >= len(args) {
					return nil, false, fmt.Errorf("--%s needs a file", name)
				}
				i++
				value = args[i]
			}
			if name == "new-key-file" {
				if newFile != "" {
					return nil, false, errors.New("--new-key-file given twice")
				}
				newFile = value
			} else {
				oldFiles = append(oldFiles, value)
			}
		default:
			seen[name] = true
			rest = append(rest, a)
		}
	}
	if newFile != "" {
		if seen["master-key-file"] {
			return nil, false, errors.New("--new-key-file and --master-key-file: give the new key once")
		}
		rest = append(rest, "--master-key-file="+newFile)
	}
	if len(oldFiles) > 0 {
		if seen["previous-master-key-files"] {
			return nil, false, errors.New("--old-key-file and --previous-master-key-files: give the old keys one way")
		}
		rest = append(rest, "--previous-master-key-files="+strings.Join(oldFiles, ","))
	}
	return rest, false, nil
}
