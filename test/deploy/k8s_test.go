package deploy

import (
	"fmt"
	"path/filepath"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// kube is the output of `kustomize build deploy/k8s`, decoded into the
// typed structs of k8s.io/api.
type kube struct {
	namespace  *corev1.Namespace
	deployment *appsv1.Deployment
	services   map[string]*corev1.Service
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
	hpa        *autoscalingv2.HorizontalPodAutoscaler
	pdb        *policyv1.PodDisruptionBudget
	job        *batchv1.Job
}

// decoder decodes the built-in kinds Keyward's manifests may use, strictly:
// an unknown or duplicated field is an error, as is any other kind.
var decoder = func() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, autoscalingv2.AddToScheme, policyv1.AddToScheme, batchv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}()

func decodeObject(doc []byte) (runtime.Object, error) {
	obj, _, err := decoder.Decode(doc, nil, nil)
	return obj, err
}

// TestKubernetesManifests builds deploy/k8s as `kubectl apply -k` would,
// validates every object against the Kubernetes API schema, and checks that
// the objects fit together and fit Keyward (checkKube).
func TestKubernetesManifests(t *testing.T) {
	dir := filepath.Join(repoRoot(t), "deploy", "k8s")
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build deploy/k8s: %v", err)
	}
	v := kubeValidator(t)
	k := &kube{services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	for _, r := range m.Resources() {
		id := r.GetKind() + "/" + r.GetName()
		doc, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		validateSchema(t, v, id, doc)
		if err := k.add(doc); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	example := readFile(t, filepath.Join(dir, "secret.example.yaml"))
	validateSchema(t, v, "secret.example.yaml", example)
	obj, err := decodeObject(example)
	if err != nil {
		t.Fatalf("secret.example.yaml: %v", err)
	}
	secret, ok := obj.(*corev1.Secret)
	if !ok {
		t.Fatalf("secret.example.yaml holds a %T, want a Secret", obj)
	}
	checkKube(t, k, secret)
}

func (k *kube) add(doc []byte) error {
	obj, err := decodeObject(doc)
	if err != nil {
		return err
	}
	switch o := obj.(type) {
	case *corev1.Namespace:
		k.namespace = o
	case *appsv1.Deployment:
		k.deployment = o
	case *corev1.Service:
		k.services[o.Name] = o
	case *corev1.ConfigMap:
		k.configMaps[o.Name] = o
	case *corev1.Secret:
		k.secrets[o.Name] = o
	case *autoscalingv2.HorizontalPodAutoscaler:
		k.hpa = o
	case *policyv1.PodDisruptionBudget:
		k.pdb = o
	case *batchv1.Job:
		k.job = o
	default:
		return fmt.Errorf("unexpected kind %T", obj)
	}
	return nil
}

// TestKubernetesRejectsTypos: the strict decoding catches what a lenient
// kubectl would drop without a word.
func TestKubernetesRejectsTypos(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field":   "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replica: 2}\n",
		"duplicate field": "apiVersion: v1\nkind: Service\nmetadata: {name: x, name: y}\n",
		"unknown kind":    "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\n",
	} {
		if _, err := decodeObject([]byte(doc)); err == nil {
			t.Errorf("%s: decoded without an error", name)
		}
	}
}
