package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"

	"google.golang.org/grpc"
)

// Size limits: oversized requests are refused before anything parses them.
const (
	// maxHeaderBytes bounds an HTTP request's header (net/http adds 4 KiB of
	// slack; over it: 431). Forward-auth receives the client's headers as a
	// proxy passes them on, and nginx's defaults accept up to 32 KiB.
	maxHeaderBytes = 32 << 10
	// maxValidateBody bounds the body of POST /v1/keys:validate, the public
	// REST call: a key, its scopes, an environment and an address need a
	// few KiB at most.
	maxValidateBody = 64 << 10
	// maxRESTBody bounds every other REST body (over it: 413). A key at the
	// service's limits (2,000 characters of description, 64 scopes of 128,
	// 64 metadata values of 512 characters, 64 CIDRs) takes up to about
	// 450 KiB of JSON if every character is escaped.
	maxRESTBody = 1 << 20
	// maxGRPCMessage bounds a received gRPC message (over it:
	// RESOURCE_EXHAUSTED): what REST allows, and Envoy's Check requests,
	// which carry the request's headers (Envoy allows at most 96 KiB of
	// them) and a body only if configured to send one.
	maxGRPCMessage = 1 << 20
	// maxGRPCHeaderList bounds a gRPC call's metadata (the gateway's copy of
	// an HTTP header within maxHeaderBytes fits); gRPC's default is 16 MiB.
	maxGRPCHeaderList = 64 << 10
)

// grpcLimits are the gRPC server's size limits.
func grpcLimits() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(maxGRPCMessage), grpc.MaxHeaderListSize(maxGRPCHeaderList)}
}

// limitBody refuses REST request bodies over their limit with 413 and a
// JSON error like the gateway's (RESOURCE_EXHAUSTED, as gRPC answers an
// oversized message), before the gateway reads them: at once when the
// declared length is over, else as soon as reading passes the limit.
func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := int64(maxRESTBody)
		if r.URL.Path == "/v1/keys:validate" {
			limit = maxValidateBody
		}
		switch {
		case r.ContentLength > limit:
			tooLarge(w, limit)
			return
		case r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody: // chunked: read it here
			b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
			var over *http.MaxBytesError
			if errors.As(err, &over) {
				tooLarge(w, limit)
				return
			}
			if err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]any{"code": 3, "message": "cannot read the request body", "details": []any{}})
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
			r.ContentLength = int64(len(b))
		}
		next.ServeHTTP(w, r)
	})
}

func tooLarge(w http.ResponseWriter, limit int64) {
	w.Header().Set("Connection", "close") // the rest of the body is not read
	writeJSON(w, http.StatusRequestEntityTooLarge, map[string]any{
		"code": 8, "message": fmt.Sprintf("request body larger than %d bytes", limit), "details": []any{},
	})
}
