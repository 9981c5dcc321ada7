package extauthz

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// probes are the header names the comparison looks up.
var probes = []string{"x-api-key", "authorization", ":path", "x-keyward-key-id", "x-token", "absent"}

// randomRequest builds a CheckRequest with the fields Check reads and
// others it must skip, in random combinations.
func randomRequest(r *rand.Rand) *authv3.CheckRequest {
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	value := func() string {
		return pick("", "kw_live_x", "Bearer kw_live_y", "Basic dTpw", "a,b", "ü-utf8", strings.Repeat("v", r.IntN(300)))
	}
	hr := &authv3.AttributeContext_HttpRequest{
		Id: pick("", "req-1"), Method: pick("GET", "POST"), Host: "h", Scheme: "http", Protocol: "HTTP/2", Size: int64(r.IntN(5)) - 1,
	}
	if r.IntN(3) > 0 {
		hr.Path = pick("", "/", "/a?api_key=kw_live_q", "/b?x=1")
	}
	raw := r.IntN(3) == 0
	n := r.IntN(40) // beyond the 32 kept inline now and then
	if raw {
		hr.HeaderMap = &corev3.HeaderMap{}
		for range n {
			hv := &corev3.HeaderValue{Key: pick(append(probes, "accept", "user-agent", "X-Keyward-Scopes", "X-API-KEY")...)}
			switch r.IntN(3) {
			case 0:
				hv.RawValue = []byte(value())
			case 1:
				hv.Value = value()
			default:
				hv.RawValue, hv.Value = []byte(value()), value()
			}
			hr.HeaderMap.Headers = append(hr.HeaderMap.Headers, hv)
		}
	} else if n > 0 {
		hr.Headers = map[string]string{}
		for range n {
			hr.Headers[pick(append(probes, "accept", "user-agent", "x-keyward-scopes", fmt.Sprint("h", r.IntN(50)))...)] = value()
		}
	}
	ac := &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Principal: "spiffe://x", Labels: map[string]string{"a": "b"}},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.Now(),
			Http: hr,
		},
		MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"f": {Fields: map[string]*structpb.Value{"k": structpb.NewNumberValue(1)}}}},
	}
	switch r.IntN(4) {
	case 0:
		ac.Source.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: pick("10.1.2.3", "2001:db8::1", "", "not-an-ip"), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 443},
		}}}
	case 1:
		ac.Source.Address = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/x.sock"}}}
	}
	if r.IntN(2) == 0 {
		ac.ContextExtensions = map[string]string{}
		for range r.IntN(4) {
			ac.ContextExtensions[pick(ExtensionScopes, ExtensionEnvironment, "other")] = pick("", "orders:read", "a, b", "live")
		}
	}
	return &authv3.CheckRequest{Attributes: ac}
}

// expected reads what Check needs from a decoded CheckRequest, the slow way.
func expected(req *authv3.CheckRequest) (lookups map[string]string, names []string, path, scopes, env, source string) {
	hr := req.GetAttributes().GetRequest().GetHttp()
	lookups = map[string]string{}
	if len(hr.GetHeaders()) > 0 {
		for _, p := range probes {
			// Keys are lower case by Envoy's contract; the view matches in any case.
			for k, v := range hr.GetHeaders() {
				if strings.EqualFold(k, p) {
					lookups[p] = "1:" + v
				}
			}
		}
		for k := range hr.GetHeaders() {
			names = append(names, k)
		}
	} else {
		for _, p := range probes {
			var last string
			n := 0
			for _, hv := range hr.GetHeaderMap().GetHeaders() {
				if strings.EqualFold(hv.GetKey(), p) {
					n++
					last = hv.GetValue()
					if hv.RawValue != nil {
						last = string(hv.GetRawValue())
					}
				}
			}
			if n > 0 {
				lookups[p] = fmt.Sprintf("%d:%s", n, last)
			}
		}
		for _, hv := range hr.GetHeaderMap().GetHeaders() {
			names = append(names, hv.GetKey())
		}
	}
	ext := req.GetAttributes().GetContextExtensions()
	source = req.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress()
	return lookups, names, hr.GetPath(), ext[ExtensionScopes], ext[ExtensionEnvironment], source
}

func viewed(v *checkView) (lookups map[string]string, names []string, path, scopes, env, source string) {
	lookups = map[string]string{}
	for _, p := range probes {
		if val, n := v.lookup(p); n > 0 {
			lookups[p] = fmt.Sprintf("%d:%s", n, val)
		}
	}
	v.each(func(name, _ []byte) { names = append(names, string(name)) })
	return lookups, names, string(v.path), string(v.scopes), string(v.environment), string(v.source)
}

// compareView parses b both ways and returns how the view differs from
// proto.Unmarshal, nil if it does not. When protobuf refuses b the view may
// still accept it: it checks neither UTF-8 nor the parts of the message it
// does not read. The reverse, the view refusing what protobuf accepts, is a
// difference.
func compareView(b []byte) error {
	var typed authv3.CheckRequest
	perr := proto.Unmarshal(b, &typed)
	var v checkView
	verr := v.parse(b)
	if perr != nil {
		if verr == nil { // exercise the accessors on whatever the view took
			viewed(&v)
		}
		return nil
	}
	if verr != nil {
		return fmt.Errorf("proto.Unmarshal accepts what the view refuses (%v)", verr)
	}
	wl, wn, wp, ws, we, wa := expected(&typed)
	gl, gn, gp, gs, ge, ga := viewed(&v)
	slices.Sort(wn)
	slices.Sort(gn)
	if len(typed.GetAttributes().GetRequest().GetHttp().GetHeaders()) > 0 {
		// Map keys are unique once decoded; the view lists a key each
		// time it occurs (merged messages).
		gn = slices.Compact(gn)
	}
	if !mapsEqual(wl, gl) || !slices.Equal(wn, gn) || wp != gp || ws != gs || we != ge || wa != ga {
		return fmt.Errorf("view differs from proto.Unmarshal:\nlookups %v\n   want %v\nnames %v\n want %v\npath %q/%q scopes %q/%q env %q/%q source %q/%q",
			gl, wl, gn, wn, gp, wp, gs, ws, ge, we, ga, wa)
	}
	return nil
}

// TestViewMatchesProto compares the wire reading with proto.Unmarshal on
// random requests, on merged requests (two encodings concatenated, which
// protobuf merges), and on corrupted ones.
func TestViewMatchesProto(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	compare := func(t *testing.T, b []byte) {
		t.Helper()
		if err := compareView(b); err != nil {
			t.Fatalf("%v: %x", err, b)
		}
	}
	for i := 0; i < 3000; i++ {
		a, err := proto.Marshal(randomRequest(r))
		if err != nil {
			t.Fatal(err)
		}
		compare(t, a)
		b, err := proto.Marshal(randomRequest(r))
		if err != nil {
			t.Fatal(err)
		}
		compare(t, append(slices.Clip(a), b...))
		// Corrupt a few bytes: the view must not panic, and must agree
		// whenever protobuf still accepts the message.
		c := slices.Clone(a)
		for range 1 + r.IntN(3) {
			if len(c) > 0 {
				c[r.IntN(len(c))] = byte(r.Uint32())
			}
		}
		compare(t, c)
		compare(t, a[:r.IntN(len(a)+1)])
	}
}
