package replica

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
)

// fake records which methods were called; err is what they return. A
// method the Store interface gains is not implemented here: calling it
// panics, so TestRouting asks for a decision about it.
type fake struct {
	store.Store
	calls []string
	err   error
}

func (f *fake) rec(name string) error { f.calls = append(f.calls, name); return f.err }

func (f *fake) Create(context.Context, *keys.Key, string, store.Audit) (*keys.Key, error) {
	return nil, f.rec("Create")
}
func (f *fake) Get(context.Context, string) (*keys.Key, error) { return nil, f.rec("Get") }
func (f *fake) GetByHash(context.Context, []byte) (*keys.Key, error) {
	return nil, f.rec("GetByHash")
}
func (f *fake) List(context.Context, store.ListQuery) ([]*keys.Key, error) {
	return nil, f.rec("List")
}
func (f *fake) Update(context.Context, string, func(*keys.Key) error, store.Audit) (*keys.Key, *keys.Key, error) {
	return nil, nil, f.rec("Update")
}
func (f *fake) Delete(context.Context, string, func(*keys.Key) error, store.Audit) (*keys.Key, error) {
	return nil, f.rec("Delete")
}
func (f *fake) AppendAudit(context.Context, store.Audit) error { return f.rec("AppendAudit") }
func (f *fake) ListAudit(context.Context, store.AuditQuery) ([]*audit.Event, error) {
	return nil, f.rec("ListAudit")
}
func (f *fake) ScanAudit(context.Context, func(*audit.Event) error) error {
	return f.rec("ScanAudit")
}
func (f *fake) RecordUsage(context.Context, []store.UsageCount, map[string]time.Time) error {
	return f.rec("RecordUsage")
}
func (f *fake) Usage(context.Context, string, time.Time, time.Time) ([]store.UsageCount, error) {
	return nil, f.rec("Usage")
}
func (f *fake) ConsumeQuota(context.Context, string, keys.Quota, time.Time) (int64, error) {
	return 0, f.rec("ConsumeQuota")
}
func (f *fake) Ping(context.Context) error { return f.rec("Ping") }
func (f *fake) Close() error               { return f.rec("Close") }

// toReplica are the only reads that may be stale. Adding one here is a
// decision about the revocation contract: read the package comment first.
var toReplica = []string{"List", "ListAudit", "Usage"}

// TestRouting calls every method of store.Store and checks where it went:
// the browsing reads to the replica, everything else (validation's
// GetByHash above all) to the primary.
func TestRouting(t *testing.T) {
	iface := reflect.TypeFor[store.Store]()
	for i := range iface.NumMethod() {
		m := iface.Method(i)
		t.Run(m.Name, func(t *testing.T) {
			primary, replica := &fake{}, &fake{}
			s := New(primary, replica, nil)
			args := []reflect.Value{}
			for j := range m.Type.NumIn() {
				in := m.Type.In(j)
				if in == reflect.TypeFor[context.Context]() {
					args = append(args, reflect.ValueOf(context.Background()))
				} else {
					args = append(args, reflect.Zero(in))
				}
			}
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("%s is not in this test's fake (%v): add it, and decide whether it may read a replica", m.Name, r)
					}
				}()
				reflect.ValueOf(s).MethodByName(m.Name).Call(args)
			}()
			switch {
			case m.Name == "Close":
				if !slices.Equal(primary.calls, []string{"Close"}) || !slices.Equal(replica.calls, []string{"Close"}) {
					t.Errorf("Close: primary got %v, replica %v; want both closed", primary.calls, replica.calls)
				}
			case slices.Contains(toReplica, m.Name):
				if !slices.Equal(replica.calls, []string{m.Name}) || len(primary.calls) != 0 {
					t.Errorf("%s: primary got %v, replica %v; want the replica only", m.Name, primary.calls, replica.calls)
				}
			default:
				if !slices.Equal(primary.calls, []string{m.Name}) || len(replica.calls) != 0 {
					t.Errorf("%s: primary got %v, replica %v; want the primary only", m.Name, primary.calls, replica.calls)
				}
			}
		})
	}
}

// TestUnavailableReplica: a replica that cannot be reached is not an outage:
// its reads are retried on the primary. Other errors are answers.
func TestUnavailableReplica(t *testing.T) {
	ctx := context.Background()
	down := fmt.Errorf("%w: connection refused", keys.ErrUnavailable)
	primary, replica := &fake{}, &fake{err: down}
	s := New(primary, replica, nil)
	if _, err := s.List(ctx, store.ListQuery{Limit: 1}); err != nil {
		t.Fatalf("List with the replica down: %v, want the primary's answer", err)
	}
	if _, err := s.Usage(ctx, "key_x", time.Time{}, time.Now()); err != nil {
		t.Fatalf("Usage with the replica down: %v", err)
	}
	if _, err := s.ListAudit(ctx, store.AuditQuery{Limit: 1}); err != nil {
		t.Fatalf("ListAudit with the replica down: %v", err)
	}
	if want := []string{"List", "Usage", "ListAudit"}; !slices.Equal(primary.calls, want) {
		t.Errorf("primary got %v, want %v", primary.calls, want)
	}

	invalid := keys.Invalid("page_size", "too big")
	primary, replica = &fake{}, &fake{err: invalid}
	s = New(primary, replica, nil)
	if _, err := s.List(ctx, store.ListQuery{}); !errors.Is(err, invalid) || len(primary.calls) != 0 {
		t.Errorf("List refused by the replica: err %v, primary got %v; want the refusal, not a retry", err, primary.calls)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	primary, replica = &fake{}, &fake{err: down}
	s = New(primary, replica, nil)
	if _, err := s.List(cancelled, store.ListQuery{}); err == nil || len(primary.calls) != 0 {
		t.Errorf("List with the caller gone: err %v, primary got %v; want no retry", err, primary.calls)
	}
}
