package postgres_test

import (
	"testing"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/postgres"
	"github.com/keyward/keyward/internal/testenv"
)

// TestOpenReplica: a replica's store reads what the primary wrote, and
// refuses to write, so a write routed to it by mistake cannot land there.
func TestOpenReplica(t *testing.T) {
	dsn := testenv.Postgres(t)
	primary := open(t, dsn)
	rep, err := postgres.OpenReplica(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rep.Close() })
	newKey := func() *keys.Key {
		sec, err := keymat.Generate("live")
		if err != nil {
			t.Fatal(err)
		}
		id, _ := keys.NewID(time.Now())
		return &keys.Key{ID: id, Name: "replicated", Environment: "live", State: keys.StateActive,
			Hash: sec.Hash(), Start: sec.Start(), Last4: sec.Last4()}
	}
	k, err := primary.Create(t.Context(), newKey(), "", store.Audit{Action: audit.ActionCreate})
	if err != nil {
		t.Fatal(err)
	}
	got, err := rep.List(t.Context(), store.ListQuery{Limit: 10})
	if err != nil || len(got) != 1 || got[0].ID != k.ID {
		t.Fatalf("List on the replica: %v %v, want the key the primary wrote", got, err)
	}
	if _, err := rep.Create(t.Context(), newKey(), "", store.Audit{Action: audit.ActionCreate}); err == nil {
		t.Fatal("Create on the replica's store succeeded; its sessions should be read-only")
	}
	if _, _, err := rep.Update(t.Context(), k.ID, func(k *keys.Key) error { k.State = keys.StateDisabled; return nil },
		store.Audit{Action: audit.ActionDisable}); err == nil {
		t.Fatal("Update on the replica's store succeeded; its sessions should be read-only")
	}
	if after, err := primary.Get(t.Context(), k.ID); err != nil || after.State != keys.StateActive || after.Version != k.Version {
		t.Fatalf("after the refused writes: %+v %v, want the key unchanged", after, err)
	}
	if got, _ := primary.List(t.Context(), store.ListQuery{Limit: 10}); len(got) != 1 {
		t.Fatalf("after the refused writes the primary holds %d keys, want 1", len(got))
	}
}
