package telemetry

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
)

// Store wraps st so that each call is timed, its failures are counted and,
// with tracing on, it runs in a span named after the operation. system is
// the database ("postgresql", "sqlite") for the span. No argument (ids,
// hashes, queries) is recorded anywhere. Methods the Store interface gains
// later pass through unobserved until they are added here.
func Store(st store.Store, m *Metrics, t *Tracing, system string) store.Store {
	o := &observedStore{Store: st, m: m, system: attribute.String("db.system.name", system)}
	if t != nil {
		o.tracer = t.Tracer("github.com/keyward/keyward/internal/store")
	}
	for _, op := range storeOps {
		o.seconds[op] = m.storeSeconds.WithLabelValues(op.String())
	}
	return o
}

type storeOp int

const (
	opCreate storeOp = iota
	opGet
	opGetByHash
	opList
	opUpdate
	opDelete
	opConsumeQuota
	opPing
	opAppendAudit
	opListAudit
	opScanAudit
	opRecordUsage
	opUsage
	numStoreOps
)

var storeOps = [numStoreOps]storeOp{opCreate, opGet, opGetByHash, opList, opUpdate, opDelete, opConsumeQuota, opPing,
	opAppendAudit, opListAudit, opScanAudit, opRecordUsage, opUsage}

func (op storeOp) String() string {
	return [...]string{"create", "get", "get_by_hash", "list", "update", "delete", "consume_quota", "ping",
		"append_audit", "list_audit", "scan_audit", "record_usage", "usage"}[op]
}

type observedStore struct {
	store.Store
	m       *Metrics
	tracer  trace.Tracer // nil: tracing off
	system  attribute.KeyValue
	seconds [numStoreOps]prometheus.Observer
}

var _ store.Store = (*observedStore)(nil)

// call is one observed store call.
type call struct {
	s     *observedStore
	op    storeOp
	start time.Time
	span  trace.Span // nil without tracing
}

func (s *observedStore) begin(ctx context.Context, op storeOp) (context.Context, call) {
	c := call{s: s, op: op, start: time.Now()}
	if s.tracer != nil {
		ctx, c.span = s.tracer.Start(ctx, "store."+op.String(), trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(s.system, attribute.String("db.operation.name", op.String())))
	}
	return ctx, c
}

// end records the call. callerErr is the error of the caller's callback
// (Update's and Delete's fn), which the store returns wrapped: that is the
// caller's refusal, not a store failure.
func (c call) end(err, callerErr error) {
	c.s.seconds[c.op].Observe(time.Since(c.start).Seconds())
	kind := errorKind(err, callerErr)
	if kind != "" {
		c.s.m.storeErrors.WithLabelValues(c.op.String(), kind).Inc()
	}
	if c.span != nil {
		if kind != "" {
			// The kind only: driver messages may quote the statement's values.
			c.span.SetStatus(otelcodes.Error, kind)
			c.span.SetAttributes(attribute.String("error.type", kind))
		}
		c.span.End()
	}
}

// errorKind classifies a store error; "" for none and for answers.
func errorKind(err, callerErr error) string {
	var invalid *keys.InvalidArgumentError
	switch {
	case err == nil,
		callerErr != nil && errors.Is(err, callerErr),
		errors.Is(err, keys.ErrNotFound),
		errors.Is(err, keys.ErrAlreadyExists),
		errors.Is(err, keys.ErrConflict),
		errors.Is(err, keys.ErrQuotaExceeded),
		errors.As(err, &invalid),
		errors.Is(err, context.Canceled): // the caller left
		return ""
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, keys.ErrUnavailable):
		return "unavailable"
	}
	return "internal"
}

func (s *observedStore) Create(ctx context.Context, k *keys.Key, requestID string, a store.Audit) (*keys.Key, error) {
	ctx, c := s.begin(ctx, opCreate)
	out, err := s.Store.Create(ctx, k, requestID, a)
	c.end(err, nil)
	return out, err
}

func (s *observedStore) Get(ctx context.Context, id string) (*keys.Key, error) {
	ctx, c := s.begin(ctx, opGet)
	out, err := s.Store.Get(ctx, id)
	c.end(err, nil)
	return out, err
}

func (s *observedStore) GetByHash(ctx context.Context, hash []byte) (*keys.Key, error) {
	ctx, c := s.begin(ctx, opGetByHash)
	out, err := s.Store.GetByHash(ctx, hash)
	c.end(err, nil)
	return out, err
}

func (s *observedStore) List(ctx context.Context, q store.ListQuery) ([]*keys.Key, error) {
	ctx, c := s.begin(ctx, opList)
	out, err := s.Store.List(ctx, q)
	c.end(err, nil)
	return out, err
}

func (s *observedStore) Update(ctx context.Context, id string, fn func(*keys.Key) error, a store.Audit) (before, after *keys.Key, err error) {
	ctx, c := s.begin(ctx, opUpdate)
	var fnErr error
	before, after, err = s.Store.Update(ctx, id, func(k *keys.Key) error {
		fnErr = fn(k)
		return fnErr
	}, a)
	c.end(err, fnErr)
	return before, after, err
}

func (s *observedStore) Delete(ctx context.Context, id string, fn func(*keys.Key) error, a store.Audit) (*keys.Key, error) {
	ctx, c := s.begin(ctx, opDelete)
	var fnErr error
	wrapped := fn
	if fn != nil {
		wrapped = func(k *keys.Key) error {
			fnErr = fn(k)
			return fnErr
		}
	}
	out, err := s.Store.Delete(ctx, id, wrapped, a)
	c.end(err, fnErr)
	return out, err
}

func (s *observedStore) ConsumeQuota(ctx context.Context, id string, q keys.Quota, now time.Time) (int64, error) {
	ctx, c := s.begin(ctx, opConsumeQuota)
	left, err := s.Store.ConsumeQuota(ctx, id, q, now)
	c.end(err, nil)
	return left, err
}

func (s *observedStore) AppendAudit(ctx context.Context, a store.Audit) error {
	ctx, c := s.begin(ctx, opAppendAudit)
	err := s.Store.AppendAudit(ctx, a)
	c.end(err, nil)
	return err
}

func (s *observedStore) ListAudit(ctx context.Context, q store.AuditQuery) ([]*audit.Event, error) {
	ctx, c := s.begin(ctx, opListAudit)
	out, err := s.Store.ListAudit(ctx, q)
	c.end(err, nil)
	return out, err
}

// ScanAudit is timed as a whole, fn's time included; fn's error is the
// caller's, not a store failure.
func (s *observedStore) ScanAudit(ctx context.Context, fn func(*audit.Event) error) error {
	ctx, c := s.begin(ctx, opScanAudit)
	var fnErr error
	err := s.Store.ScanAudit(ctx, func(e *audit.Event) error {
		fnErr = fn(e)
		return fnErr
	})
	c.end(err, fnErr)
	return err
}

func (s *observedStore) RecordUsage(ctx context.Context, counts []store.UsageCount, lastUsed map[string]time.Time) error {
	ctx, c := s.begin(ctx, opRecordUsage)
	err := s.Store.RecordUsage(ctx, counts, lastUsed)
	c.end(err, nil)
	return err
}

func (s *observedStore) Usage(ctx context.Context, id string, from, to time.Time) ([]store.UsageCount, error) {
	ctx, c := s.begin(ctx, opUsage)
	out, err := s.Store.Usage(ctx, id, from, to)
	c.end(err, nil)
	return out, err
}

func (s *observedStore) Ping(ctx context.Context) error {
	ctx, c := s.begin(ctx, opPing)
	err := s.Store.Ping(ctx)
	c.end(err, nil)
	return err
}
