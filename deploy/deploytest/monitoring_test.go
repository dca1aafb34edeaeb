package deploytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// The chart can only ship files inside its own folder, so the canonical rule
// file and dashboard live there; deploy/ holds byte-for-byte copies for
// operators who do not use the chart.
const (
	rulesFile     = "../../helm/tokenbroker/rules/tokenbroker.rules.yaml"
	rulesCopy     = "../prometheus/rules.yaml"
	dashboardFile = "../../helm/tokenbroker/dashboards/tokenbroker.json"
	dashboardCopy = "../grafana/tokenbroker.json"
	operationsDoc = "../../docs/operations.md"
	runbookPrefix = "https://github.com/tokenbroker/tokenbroker/blob/main/docs/operations.md#"
)

// wantAlerts are the alerts issue 5 asks for; a rule file with fewer or more
// fails, so that the runbook, the tests and the file stay in step.
var wantAlerts = []string{
	"TokenbrokerAuditWriteFailing",
	"TokenbrokerIntegrationsExpiringSoon",
	"TokenbrokerIntegrationsFlagged",
	"TokenbrokerLeaseContention",
	"TokenbrokerProxy5xxRatio",
	"TokenbrokerRefreshFailures",
	"TokenbrokerStoreDown",
	"TokenbrokerVendorPoolLow",
	"TokenbrokerWebhookDeliveriesFailing",
	"TokenbrokerWebhookOutboxBacklog",
}

// dashboardMetrics must each appear in at least one panel: the views the
// dashboard exists for.
var dashboardMetrics = []string{
	"tokenbroker_proxy_requests_total",                      // rate by vendor and code_class
	"tokenbroker_proxy_request_duration_seconds_bucket",     // p50/p95/p99
	"tokenbroker_proxy_upstream_errors_total",               // errors by reason
	"tokenbroker_refreshes_total",                           // refreshes by result
	"tokenbroker_connections_refresh_token_expired",         // flagged connections
	"tokenbroker_oauth_callbacks_total",                     // callbacks by action and result
	"tokenbroker_store_operation_duration_seconds_bucket",   // store latency
	"tokenbroker_refresh_lease_contention_total",            // lease contention
	"tokenbroker_store_up",                                  // store reachability
	"tokenbroker_build_info",                                // versions in a rollout
	"tokenbroker_account_budget_spent_total",                // per-account budget use
	"tokenbroker_account_budget_refused_total",              // calls refused over budget
	"go_gc_gomemlimit_bytes", "go_sched_gomaxprocs_threads", // runtime sizing
	"tokenbroker_vendor_rate_limited_total",              // vendor 429s
	"tokenbroker_proxy_local_rate_limited_total",         // local 429s by scope and reason
	"tokenbroker_vendor_app_pool_remaining_ratio",        // the app's pool
	"tokenbroker_webhook_deliveries_total",               // deliveries by result
	"tokenbroker_webhook_outbox_depth",                   // waiting events
	"tokenbroker_webhook_oldest_undelivered_age_seconds", // oldest waiting event
	"tokenbroker_audit_records_total",                    // management actions recorded
	"tokenbroker_audit_write_errors_total",               // audit records lost, by destination
}

// targetLabels are attached by Prometheus (and the Prometheus Operator) at
// scrape time, so an expression may use them although the broker does not
// expose them.
var targetLabels = map[string]bool{
	"job": true, "namespace": true, "instance": true, "pod": true, "container": true,
	"service": true, "endpoint": true,
}

// boundedLabels are the only label names tokenbroker_* series may carry:
// each takes its values from a small fixed set (vendor names, status classes,
// error classes, actions, API error codes, store names and operations, the
// build's version). An account, user, instance URL or path as a label would
// grow without bound, and could leak who the customers are.
var boundedLabels = map[string]bool{
	"vendor": true, "code_class": true, "reason": true, "result": true, "action": true,
	"le": true, "quantile": true, "version": true, "goversion": true, "store": true, "operation": true,
	"type":        true, // broker.EventTypes(), a fixed set
	"scope":       true, // a rate-limit window's: connection, instance or app
	"destination": true, // an audit record's: sink or store
	// A webhook delivery's: "account" for every per-account endpoint, or the
	// name of a global endpoint, which only the operator's file adds.
	"endpoint": true,
}

func TestDeployCopiesMatchTheChart(t *testing.T) {
	for _, c := range []struct{ canonical, copy string }{
		{rulesFile, rulesCopy},
		{dashboardFile, dashboardCopy},
	} {
		a, b := readFile(t, c.canonical), readFile(t, c.copy)
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from %s, the chart's copy, which is the canonical one; run: cp %s %s",
				c.copy, c.canonical, strings.TrimPrefix(c.canonical, "../../"), "deploy/"+strings.TrimPrefix(c.copy, "../"))
		}
	}
}

func TestAlertRules(t *testing.T) {
	groups := loadRules(t)
	anchors := markdownAnchors(t, operationsDoc)
	var got []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: recording rule %q: the file holds alerts only", g.Name, r.Record)
				continue
			}
			got = append(got, r.Alert)
			if sev := r.Labels["severity"]; sev != "warning" && sev != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, sev)
			}
			if r.For == 0 {
				t.Errorf("%s: no `for`: one bad scrape would page", r.Alert)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: annotation %s is missing", r.Alert, a)
				}
			}
			u := r.Annotations["runbook_url"]
			anchor, ok := strings.CutPrefix(u, runbookPrefix)
			if !ok || !anchors[anchor] {
				t.Errorf("%s: runbook_url %q must be %s<anchor> of a heading in docs/operations.md", r.Alert, u, runbookPrefix)
			} else if anchor != strings.ToLower(r.Alert) {
				t.Errorf("%s: runbook_url points at #%s, want the alert's own section #%s", r.Alert, anchor, strings.ToLower(r.Alert))
			}
		}
	}
	sort.Strings(got)
	if !slices.Equal(got, wantAlerts) {
		t.Errorf("alerts %v, want %v", got, wantAlerts)
	}
}

func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 {
		t.Errorf("dashboard needs uid, title and schemaVersion; got %q, %q, %d", d.UID, d.Title, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" {
		t.Errorf("dashboard needs a datasource variable, so that it works with any Prometheus data source; got %v", vars)
	}
	ids := map[int]string{}
	used := map[string]bool{}
	for _, p := range d.allPanels() {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: bad gridPos %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || p.Description == "" {
			t.Errorf("panel %d: needs a title and a description", p.ID)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource must be the ${datasource} variable, got %+v", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no queries", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if refs[tg.RefID] || tg.RefID == "" {
				t.Errorf("panel %q: refId %q missing or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			e, err := parseExpr(grafanaToPromQL(tg.Expr))
			if err != nil {
				t.Errorf("panel %q, %s: %v\n%s", p.Title, tg.RefID, err, tg.Expr)
				continue
			}
			for _, s := range selectors(e) {
				used[s.name] = true
			}
		}
	}
	for _, m := range dashboardMetrics {
		if !used[m] {
			t.Errorf("no dashboard panel shows %s", m)
		}
	}
}

// TestMetricsExposed starts a broker, reads its /metrics and checks every
// metric name, label name and literal label value that the dashboard and the
// rules use against it. A name the broker does not expose fails the test: a
// panel or alert on it would show nothing, or never fire.
func TestMetricsExposed(t *testing.T) {
	exposed := scrape(t, testenv.StartBroker(t).Metrics())

	var missing []string
	for _, q := range allQueries(t) {
		e, err := parseExpr(q.expr)
		if err != nil {
			t.Errorf("%s: %v\n%s", q.where, err, q.expr)
			continue
		}
		for _, s := range selectors(e) {
			fam, ok := exposed[s.name]
			if !ok {
				missing = append(missing, s.name+" ("+q.where+")")
				continue
			}
			for _, m := range s.matchers {
				checkMatcher(t, q.where, s.name, fam, m)
			}
		}
		checkGrouping(t, q.where, e, exposed)
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		missing = slices.Compact(missing)
		t.Errorf("the dashboard or the alert rules use metrics that the broker does not expose:\n  %s",
			strings.Join(missing, "\n  "))
	}
}

// TestExposedLabelsAreBounded: no tokenbroker_* series carries a label whose
// values could grow without bound.
func TestExposedLabelsAreBounded(t *testing.T) {
	exposed := scrape(t, testenv.StartBroker(t).Metrics())
	if _, ok := exposed["tokenbroker_build_info"]; !ok {
		t.Fatal("tokenbroker_build_info is not exposed")
	}
	for name, fam := range exposed {
		if !strings.HasPrefix(name, "tokenbroker_") {
			continue
		}
		for l := range fam {
			if !boundedLabels[l] {
				t.Errorf("%s has label %q, which is not one of the bounded label names %v; "+
					"if its values do come from a small fixed set, add it to boundedLabels", name, l, slices.Sorted(maps.Keys(boundedLabels)))
			}
		}
	}
}

// TestOperationsDocListsMetrics: the metrics table of docs/operations.md
// names every tokenbroker_* metric the broker exposes, and no other.
func TestOperationsDocListsMetrics(t *testing.T) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(testenv.StartBroker(t).Metrics()))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `(tokenbroker_[a-z0-9_]+)` \\|")
	documented := map[string]bool{}
	for _, line := range strings.Split(string(readFile(t, operationsDoc)), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			documented[m[1]] = true
		}
	}
	for name := range mfs {
		if strings.HasPrefix(name, "tokenbroker_") && !documented[name] {
			t.Errorf("%s is exposed but not in the metrics table of docs/operations.md", name)
		}
	}
	for name := range documented {
		if _, ok := mfs[name]; !ok {
			t.Errorf("docs/operations.md lists %s, which the broker does not expose", name)
		}
	}
}

// --- loading ---

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newParser() parser.Parser { return parser.NewParser(parser.Options{}) }

func parseExpr(q string) (parser.Expr, error) { return newParser().ParseExpr(q) }

// loadRules parses the rule file as Prometheus does (unknown fields refused,
// every expression and annotation template checked).
func loadRules(t *testing.T) *rulefmt.RuleGroups {
	t.Helper()
	groups, errs := rulefmt.Parse(readFile(t, rulesFile), false, model.LegacyValidation, newParser(),
		slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("%s: %v", rulesFile, err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	return groups
}

type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Datasource  *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos *struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

func (d *dashboard) allPanels() []panel {
	var all []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			all = append(all, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return all
}

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal(readFile(t, dashboardFile), &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return &d
}

var (
	grafanaInterval = regexp.MustCompile(`\$(__rate_interval|__interval|__range)\b`)
	grafanaVariable = regexp.MustCompile(`\$\{?\w+\}?`)
	labelValuesCall = regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)
)

// grafanaToPromQL replaces Grafana's variables with values PromQL parses:
// a duration for the interval variables, a match-all regexp for the others
// (which the dashboard only uses inside =~ matchers).
func grafanaToPromQL(q string) string {
	q = grafanaInterval.ReplaceAllString(q, "5m")
	return grafanaVariable.ReplaceAllString(q, ".*")
}

type query struct{ where, expr string }

// allQueries are the rule expressions, the panel queries and the metric
// selectors of the dashboard's query variables.
func allQueries(t *testing.T) []query {
	var qs []query
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			qs = append(qs, query{"alert " + r.Alert, r.Expr})
		}
	}
	d := loadDashboard(t)
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			qs = append(qs, query{fmt.Sprintf("panel %q", p.Title), grafanaToPromQL(tg.Expr)})
		}
	}
	for _, v := range d.Templating.List {
		if m := labelValuesCall.FindStringSubmatch(v.Definition); m != nil {
			qs = append(qs, query{"variable " + v.Name, grafanaToPromQL(m[1])})
		}
	}
	return qs
}

// markdownAnchors returns the GitHub anchors of the document's headings.
func markdownAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	drop := regexp.MustCompile("[^a-z0-9 _-]")
	anchors := map[string]bool{}
	inCode := false
	for _, line := range strings.Split(string(readFile(t, path)), "\n") {
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
		}
		if inCode || !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		anchors[strings.ReplaceAll(drop.ReplaceAllString(h, ""), " ", "-")] = true
	}
	return anchors
}

// --- the broker's exposition ---

// family maps each label name of a metric to the values seen.
type family map[string]map[string]bool

// scrape parses an exposition into the series names a query can select
// (a histogram X is X_bucket, X_sum and X_count) and their labels.
func scrape(t *testing.T, text string) map[string]family {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]family{}
	add := func(name string, m *dto.Metric, extra ...string) {
		f := out[name]
		if f == nil {
			f = family{}
			out[name] = f
		}
		for _, lp := range m.GetLabel() {
			if f[lp.GetName()] == nil {
				f[lp.GetName()] = map[string]bool{}
			}
			f[lp.GetName()][lp.GetValue()] = true
		}
		for _, l := range extra {
			if f[l] == nil {
				f[l] = map[string]bool{}
			}
		}
	}
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetType() {
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				add(name+"_bucket", m, "le")
				add(name+"_sum", m)
				add(name+"_count", m)
			case dto.MetricType_SUMMARY:
				add(name, m, "quantile")
				add(name+"_sum", m)
				add(name+"_count", m)
			default:
				add(name, m)
			}
		}
	}
	return out
}

type selector struct {
	name     string
	matchers []*labels.Matcher // without the name
}

func selectors(e parser.Expr) []selector {
	var out []selector
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		s := selector{name: vs.Name}
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel {
				if s.name == "" && m.Type == labels.MatchEqual {
					s.name = m.Value
				}
				continue
			}
			s.matchers = append(s.matchers, m)
		}
		out = append(out, s)
		return nil
	})
	return out
}

var literalAlternation = regexp.MustCompile(`^[A-Za-z0-9_]+(\|[A-Za-z0-9_]+)*$`)

// checkMatcher: the label must exist on the metric (or be a target label),
// and a literal value (=, !=, or =~/!~ of plain alternatives) must be one the
// broker reports, so that code_class="5XX" or result="expired" cannot pass.
func checkMatcher(t *testing.T, where, metric string, fam family, m *labels.Matcher) {
	t.Helper()
	if targetLabels[m.Name] {
		return
	}
	values, ok := fam[m.Name]
	if !ok {
		t.Errorf("%s: %s has no label %q (labels: %v)", where, metric, m.Name, slices.Sorted(maps.Keys(fam)))
		return
	}
	var want []string
	switch m.Type {
	case labels.MatchEqual, labels.MatchNotEqual:
		want = []string{m.Value}
	default:
		if literalAlternation.MatchString(m.Value) {
			want = strings.Split(m.Value, "|")
		}
	}
	for _, v := range want {
		if !values[v] {
			t.Errorf("%s: %s{%s} matches value %q, which the broker never reports (values: %v)",
				where, metric, m.Name, v, slices.Sorted(maps.Keys(values)))
		}
	}
}

// checkGrouping: every label an aggregation keeps with `by (...)` exists on
// the metrics it aggregates, or is a target label.
func checkGrouping(t *testing.T, where string, e parser.Expr, exposed map[string]family) {
	t.Helper()
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		agg, ok := n.(*parser.AggregateExpr)
		if !ok || agg.Without {
			return nil
		}
		have := map[string]bool{}
		for _, s := range selectors(agg.Expr) {
			fam, ok := exposed[s.name]
			if !ok {
				return nil // reported as missing already
			}
			for l := range fam {
				have[l] = true
			}
		}
		for _, l := range agg.Grouping {
			if !have[l] && !targetLabels[l] {
				t.Errorf("%s: %s groups by %q, which none of its metrics carries", where, agg.Op, l)
			}
		}
		return nil
	})
}
