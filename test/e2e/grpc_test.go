package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestGRPCReflectionAndHealth uses grpcurl, which needs server reflection,
// against a real server.
func TestGRPCReflectionAndHealth(t *testing.T) {
	t.Parallel()
	grpcurl := toolPath(t, "grpcurl")
	s := startServer(t, t.TempDir(), "")
	run := func(args ...string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, grpcurl, append([]string{"-plaintext"}, args...)...).CombinedOutput()
		return string(out), err
	}

	out, err := run(s.GRPCAddr, "list")
	if err != nil {
		t.Fatalf("grpcurl list: %v\n%s", err, out)
	}
	services := strings.Fields(out)
	for _, want := range []string{"keyward.v1.KeyService", "grpc.health.v1.Health"} {
		if !contains(services, want) {
			t.Errorf("grpcurl list: no %s in %v", want, services)
		}
	}

	out, err = run(s.GRPCAddr, "list", "keyward.v1.KeyService")
	if err != nil {
		t.Fatalf("grpcurl list keyward.v1.KeyService: %v\n%s", err, out)
	}
	for _, m := range []string{"CreateKey", "GetKey", "ListKeys", "UpdateKey", "EnableKey", "DisableKey", "RegenerateKey", "DeleteKey", "Validate"} {
		if !contains(strings.Fields(out), "keyward.v1.KeyService."+m) {
			t.Errorf("grpcurl list keyward.v1.KeyService: no %s in\n%s", m, out)
		}
	}

	out, err = run(s.GRPCAddr, "grpc.health.v1.Health/Check")
	if err != nil {
		t.Fatalf("grpcurl Health/Check: %v\n%s", err, out)
	}
	var health struct{ Status string }
	if err := json.Unmarshal([]byte(out), &health); err != nil || health.Status != "SERVING" {
		t.Errorf("Health/Check = %q, want status SERVING", out)
	}

	// Management calls need the admin key over gRPC too.
	out, err = run("-d", "{}", s.GRPCAddr, "keyward.v1.KeyService/ListKeys")
	if err == nil || !strings.Contains(out, "Unauthenticated") {
		t.Errorf("ListKeys without credentials: err %v, output %q; want Unauthenticated", err, out)
	}
	out, err = run("-H", "authorization: Bearer "+s.AdminKey, "-d", "{}", s.GRPCAddr, "keyward.v1.KeyService/ListKeys")
	if err != nil || !strings.Contains(out, `"keys"`) {
		t.Errorf("ListKeys with the admin key: err %v, output %q", err, out)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
