package deploytest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	k8sjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// apiTypes are the kinds the chart may render, by apiVersion and kind. A kind
// missing here fails the decoding: add its Go type before the chart renders
// it.
var apiTypes = map[string]func() any{
	"v1/ConfigMap":                             func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                                func() any { return &corev1.Secret{} },
	"v1/Service":                               func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                        func() any { return &corev1.ServiceAccount{} },
	"apps/v1/Deployment":                       func() any { return &appsv1.Deployment{} },
	"policy/v1/PodDisruptionBudget":            func() any { return &policyv1.PodDisruptionBudget{} },
	"autoscaling/v2/HorizontalPodAutoscaler":   func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"networking.k8s.io/v1/NetworkPolicy":       func() any { return &networkingv1.NetworkPolicy{} },
	"rbac.authorization.k8s.io/v1/Role":        func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/RoleBinding": func() any { return &rbacv1.RoleBinding{} },
	// The Prometheus Operator's own Go types (pkg/apis/monitoring, the
	// module its CRDs are generated from).
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monitoringv1.ServiceMonitor{} },
	"monitoring.coreos.com/v1/PrometheusRule": func() any { return &monitoringv1.PrometheusRule{} },
}

// manifest is one decoded document of a rendered chart.
type manifest struct {
	Source string // the template, from helm's "# Source:" comment
	Kind   string
	Name   string
	Object any // a pointer to the API type
}

var sourceComment = regexp.MustCompile(`(?m)^# Source: (.+)$`)

// decodeManifests splits a YAML stream (the output of `helm template`) into
// documents and decodes each strictly into its API type, as the API server
// does with strict field validation: an unknown field, a field in the wrong
// case and a field given twice are errors, and so is a kind without a type.
func decodeManifests(r io.Reader) ([]manifest, error) {
	var out []manifest
	docs := k8syaml.NewYAMLReader(bufio.NewReader(r))
	for i := 1; ; i++ {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		src := fmt.Sprintf("document %d", i)
		if m := sourceComment.FindSubmatch(doc); m != nil {
			src = string(m[1])
		}
		m, err := decodeManifest(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		if m == nil {
			continue // only comments
		}
		m.Source = src
		out = append(out, *m)
	}
}

func decodeManifest(doc []byte) (*manifest, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, err
	}
	if t := bytes.TrimSpace(js); len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return nil, nil
	}
	var tm metav1.TypeMeta
	if err := k8sjson.UnmarshalCaseSensitivePreserveInts(js, &tm); err != nil {
		return nil, err
	}
	newObj, ok := apiTypes[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("apiVersion %q kind %q: no API type known to the test", tm.APIVersion, tm.Kind)
	}
	obj := newObj()
	strict, err := k8sjson.UnmarshalStrict(js, obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = e.Error()
		}
		return nil, fmt.Errorf("%s: %s", tm.Kind, strings.Join(msgs, "; "))
	}
	name := ""
	if o, ok := obj.(metav1.Object); ok {
		name = o.GetName()
	}
	return &manifest{Kind: tm.Kind, Name: name, Object: obj}, nil
}

// TestStrictDecoding shows that the decoder the chart check relies on refuses
// what it must: without this, a decoder that accepted everything would let
// every chart pass.
func TestStrictDecoding(t *testing.T) {
	const good = `# Source: tokenbroker/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: tb
spec:
  replicas: 2
  selector:
    matchLabels: {app: tb}
  template:
    metadata:
      labels: {app: tb}
    spec:
      containers:
        - name: broker
          image: tokenbroker:dev
          readinessProbe:
            httpGet: {path: /readyz, port: metrics}
          resources:
            limits: {memory: 256Mi}
`
	ms, err := decodeManifests(strings.NewReader("---\n# only a comment\n---\n" + good))
	if err != nil {
		t.Fatalf("good manifest refused: %v", err)
	}
	if len(ms) != 1 || ms[0].Kind != "Deployment" || ms[0].Name != "tb" || ms[0].Source != "tokenbroker/templates/deployment.yaml" {
		t.Fatalf("decoded %+v", ms)
	}
	if d := ms[0].Object.(*appsv1.Deployment); *d.Spec.Replicas != 2 || d.Spec.Template.Spec.Containers[0].ReadinessProbe.HTTPGet.Port.StrVal != "metrics" {
		t.Fatalf("decoded wrongly: %+v", d.Spec)
	}
	for _, c := range []struct{ name, from, to string }{
		{"unknown field", "  replicas: 2\n", "  replicas: 2\n  replica: 2\n"},
		{"field in the wrong case", "readinessProbe:", "readinessprobe:"},
		{"field given twice", "  replicas: 2\n", "  replicas: 2\n  replicas: 3\n"},
		{"misspelt nested field", "httpGet: {path", "httpGet: {pth"},
		{"wrong type", "replicas: 2", "replicas: two"},
		{"unknown kind", "kind: Deployment", "kind: Deploymnet"},
		{"unknown apiVersion", "apps/v1", "apps/v1beta9"},
	} {
		bad := strings.Replace(good, c.from, c.to, 1)
		if bad == good {
			t.Fatalf("%s: the edit did not apply", c.name)
		}
		if _, err := decodeManifests(strings.NewReader(bad)); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	monitor := `apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: tb}
spec:
  selector: {matchLabels: {app: tb}}
  endpoints: [{port: metrics, path: /metrics}]
`
	if _, err := decodeManifests(strings.NewReader(monitor)); err != nil {
		t.Fatalf("good ServiceMonitor refused: %v", err)
	}
	if _, err := decodeManifests(strings.NewReader(strings.Replace(monitor, "endpoints:", "endpoint:", 1))); err == nil {
		t.Error("ServiceMonitor with a misspelt field accepted")
	}
}
