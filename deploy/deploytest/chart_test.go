//go:build chartcheck

package deploytest

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8sjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/tokenbroker/tokenbroker/config"
)

// `make chart-check` runs `helm lint --strict` and `helm template` for every
// values file in helm/tokenbroker/ci, writes each rendering to
// $CHART_RENDER_DIR/<values file name> and runs these tests with $HELM naming
// the helm binary.

const (
	chartDir         = "../../helm/tokenbroker"
	configDoc        = "../../docs/configuration.md"
	brokerName       = "tokenbroker" // the broker's container
	productionSecret = "tokenbroker-secrets"
)

// chartCase is what one ci values file must render.
type chartCase struct {
	kinds map[string]int
	// existingSecret stands in for the Secret the values name (it is not
	// rendered), so that the broker's whole environment can be checked.
	existingSecret map[string]map[string]string
	sidecar        bool // the broker runs as a native sidecar of the example
}

var chartCases = map[string]chartCase{
	"defaults.yaml": {
		kinds: map[string]int{"ConfigMap": 1, "ServiceAccount": 1, "Deployment": 1, "Service": 1},
	},
	"minimal-embedded.yaml": {
		kinds: map[string]int{"ConfigMap": 1, "Secret": 1, "ServiceAccount": 1, "Deployment": 1, "Service": 1},
	},
	"production.yaml": {
		kinds: map[string]int{
			"ConfigMap": 2, "ServiceAccount": 1, "Deployment": 1, "Service": 1, "PodDisruptionBudget": 1,
			"HorizontalPodAutoscaler": 1, "NetworkPolicy": 1, "ServiceMonitor": 1, "PrometheusRule": 1,
		},
		existingSecret: map[string]map[string]string{productionSecret: {
			"BROKER_REDIS_URL":                "rediss://:password@redis.redis.svc:6379/0",
			"BROKER_ENCRYPTION_KEY":           base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)),
			"BROKER_SERVICENOW_CLIENT_SECRET": "servicenow-client-secret",
			"BROKER_CONFLUENCE_CLIENT_SECRET": "confluence-client-secret",
		}},
	},
	"sidecar-example.yaml": {
		kinds:   map[string]int{"ConfigMap": 1, "Secret": 1, "ServiceAccount": 1, "Deployment": 1},
		sidecar: true,
	},
}

func renderDir(t *testing.T) string {
	t.Helper()
	d := os.Getenv("CHART_RENDER_DIR")
	if d == "" {
		t.Fatal("CHART_RENDER_DIR is not set: `make chart-check` renders the chart into it and runs this test")
	}
	return d
}

func helmBinary(t *testing.T) string {
	t.Helper()
	h := os.Getenv("HELM")
	if h == "" {
		t.Fatal("HELM is not set: `make chart-check` sets it (scripts/ensure-helm.sh)")
	}
	return h
}

// --- docs/configuration.md: the settings and which of them are secrets ---

var settingRow = regexp.MustCompile("^\\| `(BROKER_[A-Z0-9_]+)` \\|(.*)\\|[^|]*\\|$")

// knownSettings reads the table that TestConfigDoc (package config) keeps in
// step with config/settings.go: name -> whether it is marked (secret).
func knownSettings(t *testing.T) map[string]bool {
	t.Helper()
	doc := string(readFile(t, configDoc))
	begin, end := strings.Index(doc, "<!-- BEGIN generated"), strings.Index(doc, "<!-- END generated")
	if begin < 0 || end < begin {
		t.Fatalf("%s: no generated settings table", configDoc)
	}
	out := map[string]bool{}
	for _, line := range strings.Split(doc[begin:end], "\n") {
		if m := settingRow.FindStringSubmatch(line); m != nil {
			out[m[1]] = strings.Contains(m[2], "**(secret)**")
		}
	}
	if len(out) < 20 {
		t.Fatalf("%s: only %d settings found in the table", configDoc, len(out))
	}
	return out
}

// secretName is the rule for keys that must never be in a ConfigMap:
// anything with a word (between non-alphanumerics) such as SECRET, TOKEN,
// KEY or PASSWORD in its name, except
// settings the configuration reference lists as not secret (such as
// BROKER_SERVICENOW_REFRESH_TOKEN_LIFETIME), plus every setting it marks
// (secret) whatever its name (BROKER_REDIS_URL).
var secretLike = regexp.MustCompile(`(^|[^A-Z0-9])(SECRETS?|TOKENS?|KEYS?|APIKEY|PASSWORDS?|PASSWD|CREDENTIALS?)([^A-Z0-9]|$)`)

func secretName(known map[string]bool, name string) bool {
	if secret, ok := known[name]; ok {
		return secret
	}
	return secretLike.MatchString(strings.ToUpper(name))
}

// --- the rendered manifests ---

type rendering struct {
	file string
	ms   []manifest
}

func load(t *testing.T, path string) rendering {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ms, err := decodeManifests(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rendering{file: filepath.Base(path), ms: ms}
}

func all[T any](r rendering) []T {
	var out []T
	for _, m := range r.ms {
		if v, ok := m.Object.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func TestChartRenderings(t *testing.T) {
	dir := renderDir(t)
	ciFiles, _ := filepath.Glob(filepath.Join(chartDir, "ci", "*.yaml"))
	rendered, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	var ci, out, want []string
	for _, f := range ciFiles {
		ci = append(ci, filepath.Base(f))
	}
	for _, f := range rendered {
		out = append(out, filepath.Base(f))
	}
	for f := range chartCases {
		want = append(want, f)
	}
	slices.Sort(want)
	if !slices.Equal(ci, want) || !slices.Equal(out, want) {
		t.Fatalf("values files in helm/tokenbroker/ci %v, renderings in %s %v, expectations in chartCases %v: all three must match",
			ci, dir, out, want)
	}
	known := knownSettings(t)
	for _, f := range want {
		t.Run(f, func(t *testing.T) {
			r := load(t, filepath.Join(dir, f))
			checkRendering(t, r, chartCases[f], known)
		})
	}
}

func checkRendering(t *testing.T, r rendering, c chartCase, known map[string]bool) {
	kinds := map[string]int{}
	names := map[string]bool{}
	for _, m := range r.ms {
		kinds[m.Kind]++
		if names[m.Kind+"/"+m.Name] {
			t.Errorf("%s %s rendered twice", m.Kind, m.Name)
		}
		names[m.Kind+"/"+m.Name] = true
	}
	if !reflect.DeepEqual(kinds, c.kinds) {
		t.Errorf("rendered kinds %v, want %v", kinds, c.kinds)
	}

	configMaps := map[string]*corev1.ConfigMap{}
	for _, cm := range all[*corev1.ConfigMap](r) {
		configMaps[cm.Name] = cm
	}
	secrets := map[string]map[string]string{}
	for _, s := range all[*corev1.Secret](r) {
		data := map[string]string{}
		for k, v := range s.StringData {
			data[k] = v
		}
		for k, v := range s.Data {
			data[k] = string(v)
		}
		for k, v := range data {
			if _, ok := known[k]; !ok {
				t.Errorf("Secret %s: %s is not a setting of docs/configuration.md", s.Name, k)
			}
			if v == "" {
				t.Errorf("Secret %s: %s is empty", s.Name, k)
			}
		}
		secrets[s.Name] = data
	}
	for name, data := range c.existingSecret {
		secrets[name] = data
	}
	checkConfigMaps(t, configMaps, secrets, known)

	serviceAccounts := map[string]bool{}
	for _, sa := range all[*corev1.ServiceAccount](r) {
		serviceAccounts[sa.Name] = true
	}
	deployments := all[*appsv1.Deployment](r)
	for _, d := range deployments {
		checkDeployment(t, d, c, configMaps, secrets, serviceAccounts, known)
	}
	checkWiring(t, r, deployments)
}

func checkConfigMaps(t *testing.T, cms map[string]*corev1.ConfigMap, secrets map[string]map[string]string, known map[string]bool) {
	dashboard := string(bytes.TrimRight(readFile(t, dashboardFile), "\n"))
	for _, cm := range cms {
		for k, v := range cm.Data {
			if secretName(known, k) {
				t.Errorf("ConfigMap %s holds %s, a secret", cm.Name, k)
			}
			for sname, sdata := range secrets {
				for sk, sv := range sdata {
					if len(sv) >= 8 && strings.Contains(v, sv) {
						t.Errorf("ConfigMap %s key %s holds the value of %s from Secret %s", cm.Name, k, sk, sname)
					}
				}
			}
		}
		if cm.Labels["grafana_dashboard"] != "" {
			if cm.Labels["grafana_dashboard"] != "1" || len(cm.Data) != 1 || cm.Data["tokenbroker.json"] != dashboard {
				t.Errorf("ConfigMap %s: want the label grafana_dashboard: \"1\" and tokenbroker.json equal to %s", cm.Name, dashboardFile)
			}
			continue
		}
		for k := range cm.Data {
			if _, ok := known[k]; !ok {
				t.Errorf("ConfigMap %s: %s is not a setting of docs/configuration.md", cm.Name, k)
			}
		}
	}
}

func checkDeployment(t *testing.T, d *appsv1.Deployment, c chartCase, cms map[string]*corev1.ConfigMap,
	secrets map[string]map[string]string, sas map[string]bool, known map[string]bool) {
	pod := d.Spec.Template.Spec
	where := "Deployment " + d.Name
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil ||
		psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod securityContext must set runAsNonRoot and seccompProfile RuntimeDefault: %+v", where, psc)
	}
	if pod.AutomountServiceAccountToken == nil {
		t.Errorf("%s: automountServiceAccountToken must be explicit", where)
	}
	if !sas[pod.ServiceAccountName] {
		t.Errorf("%s: serviceAccountName %q is not rendered", where, pod.ServiceAccountName)
	}
	var broker *corev1.Container
	for _, list := range [][]corev1.Container{pod.InitContainers, pod.Containers} {
		for i := range list {
			ctr := &list[i]
			checkContainerSecurity(t, where+" container "+ctr.Name, ctr, psc)
			if ctr.Name == brokerName {
				if broker != nil {
					t.Errorf("%s: two broker containers", where)
				}
				broker = ctr
			}
		}
	}
	if broker == nil {
		t.Errorf("%s: no container %q", where, brokerName)
		return
	}
	inInit := slices.ContainsFunc(pod.InitContainers, func(c corev1.Container) bool { return c.Name == brokerName })
	if c.sidecar {
		if !inInit || broker.RestartPolicy == nil || *broker.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("%s: the broker must be a native sidecar (an init container with restartPolicy Always)", where)
		}
	} else if inInit {
		t.Errorf("%s: the broker is an init container in service mode", where)
	}

	env := brokerEnv(t, where, broker, cms, secrets, known)
	ports := map[string]int32{}
	for _, p := range broker.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"readiness", broker.ReadinessProbe, "/readyz"},
		{"liveness", broker.LivenessProbe, "/healthz"},
		{"startup", broker.StartupProbe, "/healthz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: no %s probe over HTTP", where, p.name)
			continue
		}
		g := p.probe.HTTPGet
		port, ok := ports[g.Port.StrVal]
		if g.Path != p.path || !ok || port != addrPort(t, env["BROKER_METRICS_ADDR"]) {
			t.Errorf("%s: %s probe GET %s on port %q (%d), want %s on the metrics listener %s",
				where, p.name, g.Path, g.Port.String(), port, p.path, env["BROKER_METRICS_ADDR"])
		}
	}
	if api := addrPort(t, env["BROKER_LISTEN_ADDR"]); !slices.Contains(slices.Collect(mapValues(ports)), api) {
		t.Errorf("%s: BROKER_LISTEN_ADDR %s is not a container port %v", where, env["BROKER_LISTEN_ADDR"], ports)
	}

	// The environment the chart gives the broker must be one it starts with.
	if _, err := config.Load(func(k string) string { return env[k] }); err != nil {
		t.Errorf("%s: the broker would refuse its configuration: %v", where, err)
	}

	if dir, embedded := env["BROKER_DATA_DIR"]; embedded {
		if d.Spec.Replicas != nil && *d.Spec.Replicas != 1 {
			t.Errorf("%s: the embedded store runs one replica, got %v", where, d.Spec.Replicas)
		}
		if !c.sidecar && d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("%s: the embedded store needs strategy Recreate, got %q", where, d.Spec.Strategy.Type)
		}
		vol := ""
		for _, m := range broker.VolumeMounts {
			if m.MountPath == dir && !m.ReadOnly {
				vol = m.Name
			}
		}
		i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == vol })
		if vol == "" || i < 0 || (pod.Volumes[i].EmptyDir == nil && pod.Volumes[i].PersistentVolumeClaim == nil) {
			t.Errorf("%s: BROKER_DATA_DIR %s must be a writable emptyDir or claim (mounts %+v)", where, dir, broker.VolumeMounts)
		}
	}
}

func checkContainerSecurity(t *testing.T, where string, c *corev1.Container, pod *corev1.PodSecurityContext) {
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("%s: no securityContext", where)
		return
	}
	nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (sc.RunAsNonRoot == nil && pod != nil && pod.RunAsNonRoot != nil && *pod.RunAsNonRoot)
	seccomp := sc.SeccompProfile
	if seccomp == nil && pod != nil {
		seccomp = pod.SeccompProfile
	}
	switch {
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("%s: allowPrivilegeEscalation must be false", where)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("%s: readOnlyRootFilesystem must be true", where)
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Errorf("%s: capabilities must drop ALL and add none: %+v", where, sc.Capabilities)
	case !nonRoot:
		t.Errorf("%s: runAsNonRoot must be true", where)
	case sc.Privileged != nil && *sc.Privileged:
		t.Errorf("%s: privileged", where)
	case seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Errorf("%s: seccompProfile must be RuntimeDefault", where)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: needs cpu and memory requests and a memory limit (GOMEMLIMIT follows it): %+v", where, c.Resources)
	}
}

// brokerEnv is the environment the broker container gets: envFrom in order,
// then env. Literal values of secret settings are errors.
func brokerEnv(t *testing.T, where string, c *corev1.Container, cms map[string]*corev1.ConfigMap,
	secrets map[string]map[string]string, known map[string]bool) map[string]string {
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, ok := cms[from.ConfigMapRef.Name]
			if !ok {
				t.Errorf("%s: envFrom ConfigMap %s is not rendered", where, from.ConfigMapRef.Name)
				continue
			}
			for k, v := range cm.Data {
				env[k] = v
			}
		case from.SecretRef != nil:
			s, ok := secrets[from.SecretRef.Name]
			if !ok {
				t.Errorf("%s: envFrom Secret %s is neither rendered nor the case's existing Secret", where, from.SecretRef.Name)
				continue
			}
			for k, v := range s {
				env[k] = v
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil && secretName(known, e.Name) {
			t.Errorf("%s: env %s is a secret given as a literal value", where, e.Name)
		}
		env[e.Name] = e.Value
	}
	return env
}

func addrPort(t *testing.T, addr string) int32 {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("address %q: %v", addr, err)
		return 0
	}
	n, _ := strconv.Atoi(p)
	return int32(n)
}

func mapValues[K comparable, V any](m map[K]V) func(func(V) bool) {
	return func(yield func(V) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

// checkWiring: the objects that point at the broker's pods or at each other
// do find them.
func checkWiring(t *testing.T, r rendering, deployments []*appsv1.Deployment) {
	podsOf := func(sel *metav1.LabelSelector) []*appsv1.Deployment {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil || s.Empty() {
			t.Errorf("selector %v: %v (empty selectors select everything)", sel, err)
			return nil
		}
		var out []*appsv1.Deployment
		for _, d := range deployments {
			if s.Matches(labels.Set(d.Spec.Template.Labels)) {
				out = append(out, d)
			}
		}
		return out
	}
	portNames := func(d *appsv1.Deployment) map[string]bool {
		names := map[string]bool{}
		for _, c := range slices.Concat(d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers) {
			for _, p := range c.Ports {
				names[p.Name] = true
			}
		}
		return names
	}
	services := all[*corev1.Service](r)
	for _, s := range services {
		ds := podsOf(&metav1.LabelSelector{MatchLabels: s.Spec.Selector})
		if len(ds) != 1 {
			t.Errorf("Service %s selects the pods of %d Deployments, want 1", s.Name, len(ds))
			continue
		}
		for _, p := range s.Spec.Ports {
			if !portNames(ds[0])[p.TargetPort.StrVal] {
				t.Errorf("Service %s port %s targets %q, not a port of %s", s.Name, p.Name, p.TargetPort.String(), ds[0].Name)
			}
		}
	}
	for _, p := range all[*policyv1.PodDisruptionBudget](r) {
		if len(podsOf(p.Spec.Selector)) != 1 {
			t.Errorf("PodDisruptionBudget %s does not select the broker's pods", p.Name)
		}
	}
	for _, h := range all[*autoscalingv2.HorizontalPodAutoscaler](r) {
		i := slices.IndexFunc(deployments, func(d *appsv1.Deployment) bool { return d.Name == h.Spec.ScaleTargetRef.Name })
		if h.Spec.ScaleTargetRef.Kind != "Deployment" || i < 0 {
			t.Errorf("HorizontalPodAutoscaler %s scales %s %s, which is not rendered", h.Name, h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name)
		} else if deployments[i].Spec.Replicas != nil {
			t.Errorf("Deployment %s sets replicas although %s scales it: every upgrade would reset the count", deployments[i].Name, h.Name)
		}
	}
	for _, np := range all[*networkingv1.NetworkPolicy](r) {
		ds := podsOf(&np.Spec.PodSelector)
		if len(ds) != 1 {
			t.Errorf("NetworkPolicy %s does not select the broker's pods", np.Name)
			continue
		}
		for _, in := range np.Spec.Ingress {
			for _, p := range in.Ports {
				if p.Port != nil && !portNames(ds[0])[p.Port.StrVal] {
					t.Errorf("NetworkPolicy %s allows port %s, which the pods do not name", np.Name, p.Port.String())
				}
			}
		}
		dns := slices.ContainsFunc(np.Spec.Egress, func(e networkingv1.NetworkPolicyEgressRule) bool {
			return slices.ContainsFunc(e.Ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port != nil && p.Port.IntVal == 53 })
		})
		if slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) && !dns {
			t.Errorf("NetworkPolicy %s restricts egress without allowing DNS", np.Name)
		}
	}
	for _, sm := range all[*monitoringv1.ServiceMonitor](r) {
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		i := slices.IndexFunc(services, func(s *corev1.Service) bool { return err == nil && sel.Matches(labels.Set(s.Labels)) })
		if i < 0 {
			t.Errorf("ServiceMonitor %s selects no Service", sm.Name)
			continue
		}
		for _, e := range sm.Spec.Endpoints {
			if e.Port == "" || !slices.ContainsFunc(services[i].Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port }) || e.Path != "/metrics" {
				t.Errorf("ServiceMonitor %s endpoint %+v must scrape /metrics on a port of Service %s", sm.Name, e, services[i].Name)
			}
		}
	}
	for _, pr := range all[*monitoringv1.PrometheusRule](r) {
		js, err := yaml.YAMLToJSONStrict(readFile(t, rulesFile))
		if err != nil {
			t.Fatal(err)
		}
		var want monitoringv1.PrometheusRuleSpec
		if strict, err := k8sjson.UnmarshalStrict(js, &want); err != nil || len(strict) > 0 {
			t.Fatalf("%s as a PrometheusRule spec: %v %v", rulesFile, err, strict)
		}
		if !reflect.DeepEqual(pr.Spec, want) {
			t.Errorf("PrometheusRule %s differs from %s", pr.Name, rulesFile)
		}
	}
}

// --- the chart's own refusals, rendered with helm ---

func helmTemplate(t *testing.T, values string, extra ...string) (string, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"template", "tb", chartDir, "-f", f}, extra...)
	cmd := exec.Command(helmBinary(t), args...)
	cmd.Env = append(os.Environ(), helmHome(t)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func helmHome(t *testing.T) []string {
	d := t.TempDir()
	return []string{"HELM_CACHE_HOME=" + d + "/cache", "HELM_CONFIG_HOME=" + d + "/config", "HELM_DATA_HOME=" + d + "/data"}
}

// TestChartKeepsSecretsOutOfConfigMaps: every setting docs/configuration.md
// marks (secret) is refused in `config` (it would land in the ConfigMap),
// and every other setting is accepted there.
func TestChartKeepsSecretsOutOfConfigMaps(t *testing.T) {
	known := knownSettings(t)
	managed := map[string]bool{"BROKER_LISTEN_ADDR": true, "BROKER_METRICS_ADDR": true, "BROKER_DATA_DIR": true, "BROKER_CONFIG_FILE": true}
	var plain []string
	for name, secret := range known {
		if !secret {
			if !managed[name] {
				plain = append(plain, name)
			}
			continue
		}
		out, err := helmTemplate(t, fmt.Sprintf("config:\n  BROKER_AUTH_JWKS_URL: https://idp.example.com/jwks\n  %s: not-really-a-secret\n", name))
		if err == nil || !strings.Contains(out, "holds a secret") {
			t.Errorf("config.%s (a secret) was not refused: %v\n%s", name, err, out)
		}
	}
	slices.Sort(plain)
	var b strings.Builder
	b.WriteString("config:\n")
	for _, name := range plain {
		v := "x"
		if name == "BROKER_AUTH_JWKS_URL" {
			v = "https://idp.example.com/jwks"
		}
		fmt.Fprintf(&b, "  %s: %q\n", name, v)
	}
	// The store settings need store.type=vault-redis, which needs the Redis URL and the key.
	b.WriteString("store: {type: vault-redis}\nserviceAccount: {automountToken: true}\nexistingSecret: s\n")
	out, err := helmTemplate(t, b.String())
	if err != nil {
		t.Fatalf("non-secret settings refused in config: %v\n%s", err, out)
	}
	r, err := decodeManifests(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range r {
		if cm, ok := m.Object.(*corev1.ConfigMap); ok {
			for _, name := range plain {
				if _, ok := cm.Data[name]; !ok {
					t.Errorf("config.%s missing from ConfigMap %s", name, cm.Name)
				}
			}
		}
	}
	for _, bad := range []struct{ name, values, want string }{
		{"managed by the chart", "config: {BROKER_AUTH_JWKS_URL: https://i/j, BROKER_LISTEN_ADDR: ':1'}\n", "set by the chart"},
		{"literal secret in extraEnv", "config: {BROKER_AUTH_JWKS_URL: https://i/j}\nextraEnv: [{name: BROKER_VAULT_TOKEN, value: s}]\n", "secretKeyRef"},
		{"embedded with replicas", "config: {BROKER_AUTH_JWKS_URL: https://i/j}\nreplicaCount: 2\n", "exactly one replica"},
		{"no caller authentication", "config: {BROKER_PUBLIC_URL: https://b}\n", "caller authentication"},
		{"misspelt value key", "config: {BROKER_AUTH_JWKS_URL: https://i/j}\nreplicaCont: 2\n", "replicaCont"},
		{"vault-redis without the key", "config: {BROKER_AUTH_JWKS_URL: https://i/j, BROKER_VAULT_ADDR: https://v}\nstore: {type: vault-redis}\nsecrets: {BROKER_REDIS_URL: 'redis://r:6379'}\n", "BROKER_ENCRYPTION_KEY"},
	} {
		if out, err := helmTemplate(t, bad.values); err == nil || !strings.Contains(out, bad.want) {
			t.Errorf("%s: want a refusal naming %q, got %v\n%s", bad.name, bad.want, err, out)
		}
	}
}

// TestSidecarFromParentChart renders a chart that depends on this one and
// adds the broker to its own Deployment exactly as the comment of
// tokenbroker.sidecarContainer in _helpers.tpl shows.
func TestSidecarFromParentChart(t *testing.T) {
	helm := helmBinary(t)
	chart, err := filepath.Abs(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	files := map[string]string{
		"Chart.yaml": fmt.Sprintf(`apiVersion: v2
name: app
version: 0.1.0
dependencies:
  - name: tokenbroker
    version: "*"
    repository: "file://%s"
`, chart),
		"values.yaml": `tokenbroker:
  deployment: {enabled: false}
  config: {BROKER_AUTH_JWKS_URL: "https://idp.example.com/jwks", BROKER_AUTH_ISSUER: "https://idp.example.com/", BROKER_AUTH_AUDIENCE: tokenbroker}
`,
		"templates/deployment.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      labels: {app: app}
    spec:
      serviceAccountName: {{ include "tokenbroker.serviceAccountName" .Subcharts.tokenbroker }}
      initContainers:
        {{- include "tokenbroker.sidecarContainer" .Subcharts.tokenbroker | nindent 8 }}
      containers:
        - name: app
          image: example.com/app:1
      volumes:
        {{- include "tokenbroker.sidecarVolumes" .Subcharts.tokenbroker | nindent 8 }}
`,
	}
	for name, content := range files {
		p := filepath.Join(parent, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := append(os.Environ(), helmHome(t)...)
	dep := exec.Command(helm, "dependency", "update", parent)
	dep.Env = env
	if out, err := dep.CombinedOutput(); err != nil {
		t.Fatalf("helm dependency update: %v\n%s", err, out)
	}
	tpl := exec.Command(helm, "template", "app", parent)
	tpl.Env = env
	out, err := tpl.Output()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	ms, err := decodeManifests(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	r := rendering{file: "parent", ms: ms}
	ds := all[*appsv1.Deployment](r)
	if len(ds) != 1 || ds[0].Name != "app" {
		t.Fatalf("want only the parent's Deployment, got %d", len(ds))
	}
	known := knownSettings(t)
	cms := map[string]*corev1.ConfigMap{}
	for _, cm := range all[*corev1.ConfigMap](r) {
		cms[cm.Name] = cm
	}
	sas := map[string]bool{}
	for _, sa := range all[*corev1.ServiceAccount](r) {
		sas[sa.Name] = true
	}
	// The parent's own container is not ours to judge; the pod and the broker are.
	pod := &ds[0].Spec.Template.Spec
	pod.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr(true), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
	pod.AutomountServiceAccountToken = ptr(false)
	pod.Containers = nil
	checkDeployment(t, ds[0], chartCase{sidecar: true}, cms, map[string]map[string]string{}, sas, known)
}

func ptr[T any](v T) *T { return &v }
