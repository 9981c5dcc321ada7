package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/yannh/kubeconform/pkg/resource"
	"github.com/yannh/kubeconform/pkg/validator"

	"github.com/keyward/keyward/internal/testenv"
)

// kubeVersion is the Kubernetes release whose API the k8s.io/api module in
// go.mod describes (k8s.io/api v0.X.Y is Kubernetes v1.X.Y): the schema, the
// typed decoding and the Makefile's K8S_OPENAPI_VERSION must all agree.
func kubeVersion(t *testing.T) string {
	t.Helper()
	// go.mod, not the test binary's build info: `go test` records no
	// dependencies there.
	m := regexp.MustCompile(`(?m)^\s*k8s\.io/api (v0\.\S+)`).FindSubmatch(readFile(t, filepath.Join(repoRoot(t), "go.mod")))
	if m == nil {
		t.Fatal("go.mod: no k8s.io/api v0.X.Y requirement")
	}
	return "v1." + strings.TrimPrefix(string(m[1]), "v0.")
}

// openAPIDocument finds Kubernetes' OpenAPI v2 document (api/openapi-spec/
// swagger.json of the k8s.io/kubernetes module) for version: where
// `make k8s-openapi` puts it, or in the module cache. Missing: fatal when
// CI=true, a loud skip otherwise.
func openAPIDocument(t *testing.T, version string) []byte {
	t.Helper()
	candidates := []string{filepath.Join(repoRoot(t), ".tools", "k8s-openapi", version, "swagger.json")}
	if cache, err := exec.Command("go", "env", "GOMODCACHE").Output(); err == nil {
		candidates = append(candidates, filepath.Join(strings.TrimSpace(string(cache)),
			"k8s.io", "kubernetes@"+version, "api", "openapi-spec", "swagger.json"))
	}
	for _, p := range candidates {
		if b, err := os.ReadFile(p); err == nil {
			return b
		}
	}
	testenv.Require(t, "the Kubernetes OpenAPI document",
		fmt.Errorf("%s not found; run `make k8s-openapi` (K8S_OPENAPI_VERSION must be %s, matching k8s.io/api in go.mod)", candidates[0], version))
	return nil
}

// kubeValidator is kubeconform with strict schemas made from the official
// OpenAPI document, offline: kubeconform's own schemas live on GitHub, which
// CI cannot reach. The conversion is the one kubeconform's
// openapi2jsonschema applies (strict flavour): objects reject unknown
// fields, int-or-string and quantities accept both forms.
func kubeValidator(t *testing.T) validator.Validator {
	t.Helper()
	version := kubeVersion(t)
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(openAPIDocument(t, version), &doc); err != nil {
		t.Fatalf("Kubernetes OpenAPI document %s: %v", version, err)
	}
	if len(doc.Definitions) < 100 {
		t.Fatalf("Kubernetes OpenAPI document %s: only %d definitions", version, len(doc.Definitions))
	}
	dir := t.TempDir()
	defs := map[string]any{}
	for name, def := range doc.Definitions {
		switch name {
		case "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
			defs[name] = map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
		case "io.k8s.apimachinery.pkg.api.resource.Quantity":
			defs[name] = map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
		default:
			defs[name] = strictSchema(def)
		}
		// One file per kind, named as kubeconform looks it up
		// ({{ .ResourceKind }}{{ .KindSuffix }}.json), referring to the shared
		// definitions.
		gvks, _ := def["x-kubernetes-group-version-kind"].([]any)
		for _, g := range gvks {
			gvk, _ := g.(map[string]any)
			group, _ := gvk["group"].(string)
			version, _ := gvk["version"].(string)
			kind, _ := gvk["kind"].(string)
			suffix := "-" + version
			if group != "" {
				suffix = "-" + strings.Split(group, ".")[0] + "-" + version
			}
			writeJSON(t, filepath.Join(dir, strings.ToLower(kind)+suffix+".json"),
				map[string]any{"$ref": "_definitions.json#/definitions/" + name})
		}
	}
	writeJSON(t, filepath.Join(dir, "_definitions.json"), map[string]any{"definitions": defs})
	v, err := validator.New([]string{filepath.Join(dir, "{{ .ResourceKind }}{{ .KindSuffix }}.json")},
		validator.Opts{Strict: true, KubernetesVersion: strings.TrimPrefix(version, "v")})
	if err != nil {
		t.Fatalf("kubeconform: %v", err)
	}
	return v
}

// strictSchema returns s with additionalProperties: false on every object
// schema that lists its properties and says nothing about others (what
// kubectl's client-side validation did), and int-or-string formats as oneOf.
func strictSchema(s any) any {
	switch v := s.(type) {
	case map[string]any:
		if v["format"] == "int-or-string" {
			return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
		}
		out := make(map[string]any, len(v)+1)
		for k, e := range v {
			out[k] = strictSchema(e)
		}
		if _, ok := v["properties"]; ok {
			if _, set := v["additionalProperties"]; !set {
				out["additionalProperties"] = false
			}
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = strictSchema(e)
		}
		return out
	}
	return s
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// validateSchema checks one object (YAML or JSON) against its schema.
func validateSchema(t *testing.T, v validator.Validator, where string, doc []byte) {
	t.Helper()
	res := v.ValidateResource(resource.Resource{Path: where, Bytes: doc})
	switch res.Status {
	case validator.Valid:
		return
	case validator.Invalid:
		// res.Err has the whole cause tree; ValidationErrors only its first
		// level, which behind a $ref says no more than "validation failed".
		t.Errorf("%s: invalid: %v", where, res.Err)
	default:
		t.Errorf("%s: not validated (status %d): %v", where, res.Status, res.Err)
	}
}

// TestSchemaValidatorRejects proves the validator has teeth: the mistakes
// it exists to catch fail.
func TestSchemaValidatorRejects(t *testing.T) {
	v := kubeValidator(t)
	for name, doc := range map[string]string{
		"unknown field":      "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80}], selectr: {a: b}}\n",
		"wrong type":         "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: \"eighty\"}]}\n",
		"missing required":   "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {template: {spec: {containers: [{image: x}]}}}\n",
		"bad date-time":      "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: x, creationTimestamp: yesterday}\nspec: {}\n",
		"unknown apiVersion": "apiVersion: autoscaling/v9\nkind: HorizontalPodAutoscaler\nmetadata: {name: x}\n",
		"duplicate key":      "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b, a: c}\n",
	} {
		res := v.ValidateResource(resource.Resource{Path: name, Bytes: []byte(doc)})
		if res.Status == validator.Valid {
			t.Errorf("%s: accepted:\n%s", name, doc)
		}
	}
	for name, doc := range map[string]string{
		"int-or-string as number": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80, targetPort: 8080}]}\n",
		"int-or-string as name":   "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80, targetPort: http}]}\n",
	} {
		if res := v.ValidateResource(resource.Resource{Path: name, Bytes: []byte(doc)}); res.Status != validator.Valid {
			t.Errorf("%s: refused (%v, %v)", name, res.Err, res.ValidationErrors)
		}
	}
}
