package deploy

import (
	"encoding/base64"
	"net"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/keyward/keyward/internal/config"
)

// checkKube checks what a schema cannot: that the objects refer to each
// other correctly and that Keyward would run with them.
func checkKube(t *testing.T, k *kube, example *corev1.Secret) {
	t.Helper()
	d, job, hpa, pdb := k.deployment, k.job, k.hpa, k.pdb
	if k.namespace == nil || d == nil || job == nil || hpa == nil || pdb == nil || k.services["keyward"] == nil {
		t.Fatalf("kustomize build lacks a Namespace, the Deployment, the migration Job, the HPA, the PDB or Service keyward: %+v", k)
	}
	ns := k.namespace.Name
	if k.namespace.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("Namespace %s: pods are not held to the restricted Pod Security Standard", ns)
	}
	for _, m := range []metav1.Object{d, job, hpa, pdb} {
		if m.GetNamespace() != ns {
			t.Errorf("%s is in namespace %q, want %q", m.GetName(), m.GetNamespace(), ns)
		}
	}

	// The server: listeners, probes, credentials.
	pod := d.Spec.Template
	c := onlyContainer(t, "Deployment "+d.Name, pod.Spec)
	if strings.Join(c.Args, " ") != "serve" {
		t.Errorf("Deployment: args %q, want serve", c.Args)
	}
	env := checkPod(t, "Deployment "+d.Name, pod.Spec, k, example)
	grpcPort := listenPort(t, "Deployment", env, "KEYWARD_GRPC_ADDR")
	httpPort := listenPort(t, "Deployment", env, "KEYWARD_HTTP_ADDR")
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["grpc"] != grpcPort || ports["http"] != httpPort {
		t.Errorf("Deployment: container ports %v, want grpc %d and http %d as the listeners are configured", ports, grpcPort, httpPort)
	}
	for _, p := range []struct {
		name, path string
		probe      *corev1.Probe
	}{{"readinessProbe", "/readyz", c.ReadinessProbe}, {"livenessProbe", "/healthz", c.LivenessProbe}, {"startupProbe", "/healthz", c.StartupProbe}} {
		switch {
		case p.probe == nil && p.name == "startupProbe":
		case p.probe == nil || p.probe.HTTPGet == nil:
			t.Errorf("Deployment: no HTTP %s", p.name)
		case p.probe.HTTPGet.Path != p.path || resolvePort(c, p.probe.HTTPGet.Port) != httpPort:
			t.Errorf("Deployment: %s GET %s on port %s, want %s on the HTTP listener (%d)", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path, httpPort)
		}
	}
	for _, name := range []string{"KEYWARD_POSTGRES_DSN", "KEYWARD_ADMIN_KEY"} {
		if !fromSecret(c, name) {
			t.Errorf("Deployment: %s must come from a secretKeyRef, not a literal or a ConfigMap", name)
		}
	}
	if d.Spec.Replicas != nil {
		t.Errorf("Deployment sets replicas: every apply would undo the HorizontalPodAutoscaler's count")
	}
	podLabels := labels.Set(pod.Labels)
	if !selects(t, "Deployment", d.Spec.Selector, podLabels) {
		t.Errorf("Deployment: selector %v does not select its own pods %v", d.Spec.Selector, pod.Labels)
	}

	// Services reach those ports on those pods.
	for name, svc := range k.services {
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) || len(svc.Spec.Selector) == 0 {
			t.Errorf("Service %s: selector %v does not select the Deployment's pods %v", name, svc.Spec.Selector, pod.Labels)
		}
		for _, p := range svc.Spec.Ports {
			if resolvePort(c, p.TargetPort) == 0 {
				t.Errorf("Service %s: port %s targets %s, which the container does not expose", name, p.Name, p.TargetPort.String())
			}
		}
	}
	svcPorts := map[string]corev1.ServicePort{}
	for _, p := range k.services["keyward"].Spec.Ports {
		svcPorts[p.Name] = p
	}
	if g := svcPorts["grpc"]; g.Port != 9090 || g.AppProtocol == nil || *g.AppProtocol != "kubernetes.io/h2c" {
		t.Errorf("Service keyward: grpc port %+v, want 9090 with appProtocol kubernetes.io/h2c", g)
	}
	if h := svcPorts["http"]; h.Port != 8080 {
		t.Errorf("Service keyward: http port %+v, want 8080", h)
	}

	// Scaling and disruptions.
	ref := hpa.Spec.ScaleTargetRef
	if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != d.Name {
		t.Errorf("HorizontalPodAutoscaler targets %s %s %s, want apps/v1 Deployment %s", ref.APIVersion, ref.Kind, ref.Name, d.Name)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas {
		t.Errorf("HorizontalPodAutoscaler: min %v max %d, want at least 2 and max ≥ min", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
	}
	for _, m := range hpa.Spec.Metrics {
		if m.Resource != nil && m.Resource.Target.Type == "Utilization" && c.Resources.Requests.Name(m.Resource.Name, "").IsZero() {
			t.Errorf("HorizontalPodAutoscaler scales on %s utilization, but the container requests no %s", m.Resource.Name, m.Resource.Name)
		}
	}
	if !selects(t, "PodDisruptionBudget", pdb.Spec.Selector, podLabels) {
		t.Errorf("PodDisruptionBudget: selector %v does not select the Deployment's pods", pdb.Spec.Selector)
	}
	if mu := pdb.Spec.MaxUnavailable; mu == nil || mu.IntValue() < 1 {
		t.Errorf("PodDisruptionBudget: maxUnavailable %v, want at least 1, or no node could ever be drained", mu)
	}

	// The migration Job: same image, same store.
	jc := onlyContainer(t, "Job "+job.Name, job.Spec.Template.Spec)
	if strings.Join(jc.Args, " ") != "migrate" || jc.Image != c.Image {
		t.Errorf("Job %s: %s %q, want %s migrate (the server's image)", job.Name, jc.Image, jc.Args, c.Image)
	}
	if p := job.Spec.Template.Spec.RestartPolicy; p != corev1.RestartPolicyOnFailure && p != corev1.RestartPolicyNever {
		t.Errorf("Job %s: restartPolicy %q", job.Name, p)
	}
	if !fromSecret(jc, "KEYWARD_POSTGRES_DSN") {
		t.Errorf("Job %s: KEYWARD_POSTGRES_DSN must come from the same secretKeyRef as the server's", job.Name)
	}
	checkPod(t, "Job "+job.Name, job.Spec.Template.Spec, k, example)

	// The example Secret documents the external one and is not applied.
	if _, applied := k.secrets[example.Name]; applied {
		t.Errorf("Secret %s is in the kustomize output: secrets must not live in the repository", example.Name)
	}
	if example.Namespace != ns {
		t.Errorf("secret.example.yaml: namespace %q, want %q", example.Namespace, ns)
	}
	for key, v := range example.StringData {
		if !strings.Contains(v, "CHANGE-ME") {
			t.Errorf("secret.example.yaml: %s does not look like a placeholder (no CHANGE-ME): never commit a real secret", key)
		}
	}
	if len(example.Data) > 0 {
		t.Errorf("secret.example.yaml: use stringData with CHANGE-ME placeholders, not data")
	}
}

func onlyContainer(t *testing.T, where string, spec corev1.PodSpec) corev1.Container {
	t.Helper()
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: %d containers, want 1", where, len(spec.Containers))
	}
	return spec.Containers[0]
}

// checkPod checks a pod against the restricted Pod Security Standard and
// Keyward's configuration, and returns the container's environment (secret
// references as placeholders).
func checkPod(t *testing.T, where string, spec corev1.PodSpec, k *kube, example *corev1.Secret) map[string]string {
	t.Helper()
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken must be false: Keyward never calls the Kubernetes API", where)
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || (psc.RunAsUser != nil && *psc.RunAsUser == 0) {
		t.Errorf("%s: the pod must run as non-root", where)
	}
	c := onlyContainer(t, where, spec)
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Errorf("%s: container has no securityContext", where)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("%s: allowPrivilegeEscalation must be false", where)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("%s: readOnlyRootFilesystem must be true", where)
	case sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) > 0:
		t.Errorf("%s: capabilities must drop ALL and add none", where)
	}
	seccomp := psc != nil && psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault
	if sc != nil && sc.SeccompProfile != nil {
		seccomp = sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault
	}
	if !seccomp {
		t.Errorf("%s: seccompProfile must be RuntimeDefault", where)
	}
	if c.Image == "" || c.Image == "keyward" || strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
		t.Errorf("%s: image %q: want a pinned tag, set by kustomization.yaml's images", where, c.Image)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: want CPU and memory requests and a memory limit, got %v", where, c.Resources)
	}

	// The environment as the container sees it.
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil {
			t.Errorf("%s: envFrom other than a ConfigMap", where)
			continue
		}
		cm, ok := k.configMaps[from.ConfigMapRef.Name]
		if !ok {
			t.Errorf("%s: envFrom ConfigMap %q is not in the kustomize output", where, from.ConfigMapRef.Name)
			continue
		}
		for name, v := range cm.Data {
			env[name] = v
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			if _, pending := pendingEnv[e.Name]; pending && (ref.Optional == nil || !*ref.Optional) {
				t.Errorf("%s: %s is for a feature config does not read yet: its secretKeyRef must be optional", where, e.Name)
			}
			if !secretHas(k, example, ref.Name, ref.Key) {
				t.Errorf("%s: %s reads key %q of Secret %q, which neither the kustomize output nor secret.example.yaml has", where, e.Name, ref.Key, ref.Name)
			}
			env[e.Name] = placeholder(e.Name)
		default:
			t.Errorf("%s: %s: only literal values and secretKeyRefs are expected", where, e.Name)
		}
	}
	checkEnvNames(t, where, sortedKeys(env))
	// Keyward itself must accept this configuration.
	if _, err := config.Parse("keyward", nil, func(k string) string { return env[k] }); err != nil {
		t.Errorf("%s: keyward refuses this configuration: %v", where, err)
	}
	return env
}

func secretHas(k *kube, example *corev1.Secret, name, key string) bool {
	if s, ok := k.secrets[name]; ok {
		_, inData := s.Data[key]
		_, inString := s.StringData[key]
		return inData || inString
	}
	_, ok := example.StringData[key]
	return example.Name == name && ok
}

// placeholder stands in for a secret's value when checking a configuration.
func placeholder(name string) string {
	switch name {
	case "KEYWARD_POSTGRES_DSN":
		return "postgres://keyward:secret@postgres:5432/keyward?sslmode=disable"
	case "KEYWARD_ADMIN_KEY":
		return strings.Repeat("a", 32)
	case "KEYWARD_MASTER_KEY": // 32 bytes, base64
		return base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	}
	return "secret"
}

func fromSecret(c corev1.Container, name string) bool {
	for _, e := range c.Env {
		if e.Name == name {
			return e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
		}
	}
	return false
}

// listenPort is the port of a listen address in env; in a pod the host
// must be the wildcard, or nothing outside the pod reaches it.
func listenPort(t *testing.T, where string, env map[string]string, name string) int32 {
	t.Helper()
	host, port, err := net.SplitHostPort(env[name])
	if err != nil {
		t.Errorf("%s: %s=%q: %v", where, name, env[name], err)
		return 0
	}
	if host != "0.0.0.0" && host != "" && host != "::" {
		t.Errorf("%s: %s=%q listens on %s only: probes and Services could not reach it", where, name, env[name], host)
	}
	p, err := strconv.ParseInt(port, 10, 32)
	if err != nil {
		t.Errorf("%s: %s=%q: %v", where, name, env[name], err)
	}
	return int32(p)
}

// resolvePort is the container port a probe or Service port means (by
// name or number), 0 if the container has none such.
func resolvePort(c corev1.Container, p intstr.IntOrString) int32 {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort
		}
	}
	return 0
}

func selects(t *testing.T, where string, sel *metav1.LabelSelector, set labels.Set) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Errorf("%s: selector: %v", where, err)
		return false
	}
	return !s.Empty() && s.Matches(set)
}
