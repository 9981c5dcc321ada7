package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/cache"
	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/keyservice"
	"github.com/keyward/keyward/internal/sealer"
	"github.com/keyward/keyward/internal/store/sqlite"
	"github.com/keyward/keyward/internal/validate"
)

// maxErrorLen bounds the message of an error the service answers a request
// with: it is echoed to the client and must not grow with the input.
const maxErrorLen = 1024

// restRoute is one REST call with a JSON body, decoded as the generated
// gateway decodes it (key_service.pb.gw.go), then passed to the service.
type restRoute struct {
	name   string // method and path
	method string // the gRPC method, for toStatus
	writes bool   // a success may change the store
	// call decodes body (returning the gateway's own error if it cannot)
	// and calls the service; derived reports an update mask the gateway
	// derived from the body.
	call func(ctx context.Context, fx *restFixture, m runtime.Marshaler, body []byte) (resp proto.Message, derived bool, decodeErr, err error)
}

// decodeBody decodes body into v as the generated gateway does: an empty
// body is no error, any other failure is InvalidArgument with the decoder's
// message.
func decodeBody(m runtime.Marshaler, body []byte, v any) error {
	if err := m.NewDecoder(bytes.NewReader(body)).Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return status.Errorf(codes.InvalidArgument, "%v", err)
	}
	return nil
}

var restRoutes = []restRoute{
	{"POST /v1/keys (body: key)", keywardv1.KeyService_CreateKey_FullMethodName, true,
		func(ctx context.Context, fx *restFixture, m runtime.Marshaler, body []byte) (proto.Message, bool, error, error) {
			var req keywardv1.CreateKeyRequest
			if err := decodeBody(m, body, &req.Key); err != nil {
				return nil, false, err, nil
			}
			resp, err := fx.svc.CreateKey(ctx, &req)
			return resp, false, nil, err
		}},
	{"PATCH /v1/keys/{key.key_id} (body: key)", keywardv1.KeyService_UpdateKey_FullMethodName, true,
		func(ctx context.Context, fx *restFixture, m runtime.Marshaler, body []byte) (proto.Message, bool, error, error) {
			var req keywardv1.UpdateKeyRequest
			if err := decodeBody(m, body, &req.Key); err != nil {
				return nil, false, err, nil
			}
			derived := false
			if len(req.GetUpdateMask().GetPaths()) == 0 {
				mask, err := runtime.FieldMaskFromRequestBody(bytes.NewReader(body), req.Key)
				if err != nil {
					return nil, false, status.Errorf(codes.InvalidArgument, "%v", err), nil
				}
				req.UpdateMask, derived = mask, len(mask.GetPaths()) > 0
			}
			if err := runtime.PopulateFieldFromPath(&req, "key.key_id", fx.id); err != nil {
				return nil, false, status.Errorf(codes.InvalidArgument, "%v", err), nil
			}
			resp, err := fx.svc.UpdateKey(ctx, &req)
			return resp, derived, nil, err
		}},
	{"POST /v1/keys:validate (body: *)", keywardv1.KeyService_Validate_FullMethodName, false,
		func(ctx context.Context, fx *restFixture, m runtime.Marshaler, body []byte) (proto.Message, bool, error, error) {
			var req keywardv1.ValidateRequest
			if err := decodeBody(m, body, &req); err != nil {
				return nil, false, err, nil
			}
			resp, err := fx.svc.Validate(ctx, &req)
			return resp, false, nil, err
		}},
	{"POST /v1/keys/{key_id}:regenerate (body: *)", keywardv1.KeyService_RegenerateKey_FullMethodName, true,
		func(ctx context.Context, fx *restFixture, m runtime.Marshaler, body []byte) (proto.Message, bool, error, error) {
			var req keywardv1.RegenerateKeyRequest
			if err := decodeBody(m, body, &req); err != nil {
				return nil, false, err, nil
			}
			if err := runtime.PopulateFieldFromPath(&req, "key_id", fx.id); err != nil {
				return nil, false, status.Errorf(codes.InvalidArgument, "%v", err), nil
			}
			resp, err := fx.svc.RegenerateKey(ctx, &req)
			return resp, false, nil, err
		}},
	{"POST /v1/keys:reportLeaked (body: *)", keywardv1.KeyService_ReportLeakedKey_FullMethodName, true,
		func(ctx context.Context, fx *restFixture, m runtime.Marshaler, body []byte) (proto.Message, bool, error, error) {
			var req keywardv1.ReportLeakedKeyRequest
			if err := decodeBody(m, body, &req); err != nil {
				return nil, false, err, nil
			}
			resp, err := fx.svc.ReportLeakedKey(ctx, &req)
			return resp, false, nil, err
		}},
	{"POST /v1/keys:search (body: *)", keywardv1.KeyService_ListKeys_FullMethodName, false,
		func(ctx context.Context, fx *restFixture, m runtime.Marshaler, body []byte) (proto.Message, bool, error, error) {
			var req keywardv1.ListKeysRequest
			if err := decodeBody(m, body, &req); err != nil {
				return nil, false, err, nil
			}
			resp, err := fx.svc.ListKeys(ctx, &req)
			return resp, false, nil, err
		}},
}

// FuzzRESTBody sends arbitrary JSON bodies to the REST calls that take one:
// route picks the call (restRoutes), body is decoded with the gateway's own
// marshaler and rules and, if that succeeds, passed to the real service
// (wired as internal/app wires it: SQLite store, in-process cache, quota
// counter, a master key). In the body, {{id}} and {{secret}} stand for the
// id and secret of an active key with one scope (orders:read) and one
// metadata entry, fresh for every input that follows a successful write
// (so that a failing input fails again on its own); the calls with a key
// id in their path name that key.
//
// Nothing panics; every answer renders through the gateway's error handler
// as a JSON status with the HTTP code of its gRPC code (no fallback 500),
// a message that is valid UTF-8 and repeats no valid secret; the service
// refuses only with a client-side code (InvalidArgument, NotFound,
// FailedPrecondition, AlreadyExists, Aborted), never Internal or Unknown,
// in at most maxErrorLen bytes; an update mask the gateway derived from
// the body names only fields the service knows; a successful answer
// marshals.
func FuzzRESTBody(f *testing.F) {
	f.Add(uint8(0), []byte(`{"displayName":"orders","scopes":["orders:read"]}`))
	fx := newRESTFixture(f)
	m := gatewayMarshaler()
	mux := runtime.NewServeMux()
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		fx.fresh(t)
		body = bytes.ReplaceAll(body, []byte("{{id}}"), []byte(fx.id))
		body = bytes.ReplaceAll(body, []byte("{{secret}}"), []byte(fx.secret))
		r := restRoutes[int(route)%len(restRoutes)]
		resp, derived, decodeErr, err := r.call(ctx, fx, m, body)
		switch {
		case decodeErr != nil:
			render(t, r.name, mux, m, decodeErr, codes.InvalidArgument)
		case err != nil:
			st := toStatus(ctx, log, r.method, err)
			switch c := status.Code(st); c {
			case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.AlreadyExists, codes.Aborted:
				render(t, r.name, mux, m, st, c)
			default:
				t.Fatalf("%s: %v (%T), answered as %v", r.name, err, err, st)
			}
			if msg := status.Convert(st).Message(); len(msg) > maxErrorLen {
				t.Fatalf("%s: message of %d bytes: %.200q…", r.name, len(msg), msg)
			}
			var inv *keys.InvalidArgumentError
			if derived && errors.As(err, &inv) && inv.Field == "update_mask" && strings.HasPrefix(inv.Reason, "unknown field") {
				t.Fatalf("%s: the service refuses the update mask the gateway derived from the body: %v", r.name, err)
			}
		default:
			if r.writes {
				fx.writes++
				fx.dirty = true
			}
			if _, err := m.Marshal(resp); err != nil {
				t.Fatalf("%s: response does not marshal: %v", r.name, err)
			}
		}
	})
}

// render writes err through the gateway's error handler and checks what a
// client would receive.
func render(t *testing.T, name string, mux *runtime.ServeMux, m runtime.Marshaler, err error, want codes.Code) {
	t.Helper()
	w := httptest.NewRecorder()
	errorHandler(context.Background(), mux, m, w, httptest.NewRequest(http.MethodPost, "/v1/keys", nil), err)
	if w.Code != runtime.HTTPStatusFromCode(want) {
		t.Fatalf("%s: %v rendered as HTTP %d, want %d: %s", name, err, w.Code, runtime.HTTPStatusFromCode(want), w.Body)
	}
	var got struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if jerr := json.Unmarshal(w.Body.Bytes(), &got); jerr != nil || codes.Code(got.Code) != want {
		t.Fatalf("%s: %v rendered as %s (%v)", name, err, w.Body, jerr)
	}
	if !utf8.ValidString(got.Message) || strings.TrimSpace(got.Message) == "" {
		t.Fatalf("%s: message %q", name, got.Message)
	}
	for _, s := range keymat.Pattern.FindAllString(w.Body.String(), -1) {
		if _, perr := keymat.Parse(s); perr == nil {
			t.Fatalf("%s: error repeats a secret: %s", name, w.Body)
		}
	}
}

// maxFixtureWrites is how many writes a fixture's store takes (each may add
// a key and audit events) before it is replaced by a fresh one.
const maxFixtureWrites = 500

// restFixture is a service over a SQLite store in a temporary directory,
// with one key that bodies can name.
type restFixture struct {
	base       string
	dir        string
	st         *sqlite.Store
	svc        *keyservice.Service
	id, secret string
	writes     int  // writes to the store
	dirty      bool // the key may have changed since it was created
}

func newRESTFixture(f *testing.F) *restFixture {
	fx := &restFixture{base: f.TempDir()}
	fx.reset(f)
	f.Cleanup(func() { fx.st.Close() })
	return fx
}

// reset replaces the store with a fresh one holding a single key.
func (fx *restFixture) reset(tb testing.TB) {
	ctx := context.Background()
	if fx.st != nil {
		fx.st.Close()
		os.RemoveAll(fx.dir)
	}
	dir, err := os.MkdirTemp(fx.base, "store")
	if err != nil {
		tb.Fatal(err)
	}
	st, err := sqlite.Open(ctx, filepath.Join(dir, "keyward.db"))
	if err != nil {
		tb.Fatal(err)
	}
	seal, err := sealer.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	c := cache.New(cache.Options{Store: st.GetByHash, Local: true, Logger: log})
	v := validate.NewWith(validate.Options{Lookup: c, Quotas: st})
	svc := keyservice.New(keyservice.Options{Store: st, Verifier: v, Caches: c, Logger: log, Sealer: seal})
	*fx = restFixture{base: fx.base, dir: dir, st: st, svc: svc, dirty: true}
	fx.fresh(tb)
}

// fresh makes sure the key bodies name is as created, replacing the store
// when it has taken maxFixtureWrites writes.
func (fx *restFixture) fresh(tb testing.TB) {
	if fx.writes >= maxFixtureWrites {
		fx.reset(tb)
		return
	}
	if !fx.dirty {
		return
	}
	created, err := fx.svc.CreateKey(context.Background(), &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{
		DisplayName: "fuzz", Scopes: []string{"orders:read"}, Metadata: map[string]string{"team": "mes"},
	}})
	if err != nil {
		tb.Fatal(err)
	}
	fx.id, fx.secret, fx.dirty = created.GetKey().GetKeyId(), created.GetSecret(), false
	fx.writes++
}
