package deploytest

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
)

// alertCase feeds synthetic series to one alert and says which alerts must be
// firing at the end. Series use promtool's notation (`0+10x30`: 0, 10, 20, …,
// 31 samples), one sample per minute from time 0; the rule is evaluated every
// minute from time 0 to at, honouring its `for`, as Prometheus does.
type alertCase struct {
	name   string
	alert  string
	series []string
	at     time.Duration
	// firing lists the alerts expected at `at`, each as the label values
	// that tell them apart (e.g. "vendor=servicenow,result=dead"); nil means
	// the alert must be quiet.
	firing []string
}

// Common target labels, as a ServiceMonitor would attach them.
const tl = `namespace="tb",job="tokenbroker",`

var alertCases = []alertCase{
	{
		name: "flagged connections fire after 5 minutes", alert: "TokenbrokerIntegrationsFlagged",
		series: []string{
			// Both replicas report the fleet's count: max, not sum.
			`tokenbroker_connections_refresh_token_expired{` + tl + `pod="a",vendor="servicenow"} 0x5 2x20`,
			`tokenbroker_connections_refresh_token_expired{` + tl + `pod="b",vendor="servicenow"} 0x5 2x20`,
			`tokenbroker_connections_refresh_token_expired{` + tl + `pod="a",vendor="confluence"} 0x25`,
		},
		at: 20 * time.Minute, firing: []string{"vendor=servicenow"},
	},
	{
		name: "a flag cleared within 5 minutes does not fire", alert: "TokenbrokerIntegrationsFlagged",
		series: []string{`tokenbroker_connections_refresh_token_expired{` + tl + `pod="a",vendor="servicenow"} 0x5 1x3 0x10`},
		at:     9 * time.Minute,
	},
	{
		name: "a third of refreshes dead", alert: "TokenbrokerRefreshFailures",
		series: []string{
			`tokenbroker_refreshes_total{` + tl + `pod="a",vendor="servicenow",result="success"} 0+10x40`,
			`tokenbroker_refreshes_total{` + tl + `pod="a",vendor="servicenow",result="dead"} 0+5x40`,
			`tokenbroker_refreshes_total{` + tl + `pod="a",vendor="confluence",result="success"} 0+10x40`,
			`tokenbroker_refreshes_total{` + tl + `pod="a",vendor="confluence",result="transient"} 0+0.5x40`,
		},
		at: 35 * time.Minute, firing: []string{"vendor=servicenow,result=dead"},
	},
	{
		name: "client_config across replicas", alert: "TokenbrokerRefreshFailures",
		series: []string{
			`tokenbroker_refreshes_total{` + tl + `pod="a",vendor="confluence",result="success"} 0+2x40`,
			`tokenbroker_refreshes_total{` + tl + `pod="a",vendor="confluence",result="client_config"} 0+1x40`,
			`tokenbroker_refreshes_total{` + tl + `pod="b",vendor="confluence",result="client_config"} 0+1x40`,
		},
		at: 35 * time.Minute, firing: []string{"vendor=confluence,result=client_config"},
	},
	{
		name: "1% transient failures are normal", alert: "TokenbrokerRefreshFailures",
		series: []string{
			`tokenbroker_refreshes_total{` + tl + `pod="a",vendor="servicenow",result="success"} 0+100x40`,
			`tokenbroker_refreshes_total{` + tl + `pod="a",vendor="servicenow",result="transient"} 0+1x40`,
		},
		at: 35 * time.Minute,
	},
	{
		name: "a single failure on a quiet vendor does not fire", alert: "TokenbrokerRefreshFailures",
		series: []string{
			`tokenbroker_refreshes_total{` + tl + `pod="a",vendor="servicenow",result="success"} 0x40`,
			`tokenbroker_refreshes_total{` + tl + `pod="a",vendor="servicenow",result="dead"} 0x10 1x30`,
		},
		at: 35 * time.Minute,
	},
	{
		name: "vendor 5xx and timeouts above 5%", alert: "TokenbrokerProxy5xxRatio",
		series: []string{
			`tokenbroker_proxy_requests_total{` + tl + `pod="a",vendor="servicenow",code_class="2xx"} 0+60x30`,
			`tokenbroker_proxy_requests_total{` + tl + `pod="a",vendor="servicenow",code_class="5xx"} 0+3x30`,
			`tokenbroker_proxy_requests_total{` + tl + `pod="a",vendor="servicenow",code_class="broker_error"} 0+3x30`,
			`tokenbroker_proxy_upstream_errors_total{` + tl + `pod="a",vendor="servicenow",reason="timeout"} 0+3x30`,
			`tokenbroker_proxy_requests_total{` + tl + `pod="a",vendor="confluence",code_class="2xx"} 0+60x30`,
		},
		at: 25 * time.Minute, firing: []string{"vendor=servicenow"},
	},
	{
		name: "callers that went away are not vendor errors", alert: "TokenbrokerProxy5xxRatio",
		series: []string{
			`tokenbroker_proxy_requests_total{` + tl + `pod="a",vendor="servicenow",code_class="2xx"} 0+60x30`,
			`tokenbroker_proxy_requests_total{` + tl + `pod="a",vendor="servicenow",code_class="4xx"} 0+30x30`,
			`tokenbroker_proxy_upstream_errors_total{` + tl + `pod="a",vendor="servicenow",reason="canceled"} 0+30x30`,
			`tokenbroker_proxy_requests_total{` + tl + `pod="a",vendor="servicenow",code_class="5xx"} 0+1x30`,
		},
		at: 25 * time.Minute,
	},
	{
		name: "too little traffic to judge", alert: "TokenbrokerProxy5xxRatio",
		series: []string{`tokenbroker_proxy_requests_total{` + tl + `pod="a",vendor="servicenow",code_class="5xx"} 0+1x30`},
		at:     25 * time.Minute,
	},
	{
		name: "contention far above refreshes", alert: "TokenbrokerLeaseContention",
		series: []string{
			`tokenbroker_refresh_lease_contention_total{` + tl + `pod="a",vendor="confluence"} 0+100x50`,
			`tokenbroker_refreshes_total{` + tl + `pod="a",vendor="confluence",result="success"} 0+1x50`,
		},
		at: 45 * time.Minute, firing: []string{"vendor=confluence"},
	},
	{
		name: "contention while no refresh completes", alert: "TokenbrokerLeaseContention",
		series: []string{
			`tokenbroker_refresh_lease_contention_total{` + tl + `pod="a",vendor="servicenow"} 0+10x50`,
			`tokenbroker_refreshes_total{` + tl + `pod="a",vendor="servicenow",result="success"} 0x50`,
		},
		at: 45 * time.Minute, firing: []string{"vendor=servicenow"},
	},
	{
		name: "a few waits per refresh are normal", alert: "TokenbrokerLeaseContention",
		series: []string{
			`tokenbroker_refresh_lease_contention_total{` + tl + `pod="a",vendor="servicenow"} 0+2x50`,
			`tokenbroker_refresh_lease_contention_total{` + tl + `pod="b",vendor="servicenow"} 0+2x50`,
			`tokenbroker_refreshes_total{` + tl + `pod="a",vendor="servicenow",result="success"} 0+1x50`,
		},
		at: 45 * time.Minute,
	},
	{
		name: "store unreachable from one replica", alert: "TokenbrokerStoreDown",
		series: []string{
			`tokenbroker_store_up{` + tl + `pod="a"} 1x5 0x10`,
			`tokenbroker_store_up{` + tl + `pod="b"} 1x15`,
			`tokenbroker_store_up{namespace="other",job="tokenbroker",pod="c"} 1x15`,
		},
		at: 15 * time.Minute, firing: []string{"namespace=tb,job=tokenbroker"},
	},
	{
		name: "the app pool under 10% for 5 minutes", alert: "TokenbrokerVendorPoolLow",
		series: []string{
			`tokenbroker_vendor_app_pool_remaining_ratio{` + tl + `pod="a",vendor="confluence"} 0.5 0.2 0.08x10`,
			`tokenbroker_vendor_app_pool_remaining_ratio{` + tl + `pod="b",vendor="confluence"} 0.5x12`,
			`tokenbroker_vendor_app_pool_remaining_ratio{` + tl + `pod="a",vendor="servicenow"} ` + strings.Repeat("NaN ", 12),
		},
		at: 10 * time.Minute, firing: []string{"vendor=confluence"},
	},
	{
		name: "a pool that refills does not fire", alert: "TokenbrokerVendorPoolLow",
		series: []string{`tokenbroker_vendor_app_pool_remaining_ratio{` + tl + `pod="a",vendor="confluence"} 0.05x3 0.9x10`},
		at:     10 * time.Minute,
	},
	{
		name: "a one-minute blip does not fire", alert: "TokenbrokerStoreDown",
		series: []string{`tokenbroker_store_up{` + tl + `pod="a"} 1x5 0 1x10`},
		at:     15 * time.Minute,
	},
	{
		name: "most webhook deliveries failing for 15 minutes", alert: "TokenbrokerWebhookDeliveriesFailing",
		series: []string{
			`tokenbroker_webhook_deliveries_total{` + tl + `pod="a",result="delivered"} 0+1x40`,
			`tokenbroker_webhook_deliveries_total{` + tl + `pod="a",result="failed"} 0+1x5 5+9x35`,
			`tokenbroker_webhook_deliveries_total{` + tl + `pod="a",result="gave_up"} 0x40`,
		},
		at: 40 * time.Minute, firing: []string{"namespace=tb,job=tokenbroker"},
	},
	{
		name: "a few failed webhook deliveries do not fire", alert: "TokenbrokerWebhookDeliveriesFailing",
		series: []string{
			`tokenbroker_webhook_deliveries_total{` + tl + `pod="a",result="delivered"} 0+10x40`,
			`tokenbroker_webhook_deliveries_total{` + tl + `pod="a",result="failed"} 0+2x40`,
		},
		at: 40 * time.Minute,
	},
	{
		name: "an event waiting over an hour fires", alert: "TokenbrokerWebhookOutboxBacklog",
		series: []string{
			// Both replicas report the fleet's outbox: max, not sum.
			`tokenbroker_webhook_oldest_undelivered_age_seconds{` + tl + `pod="a"} 0+60x90`,
			`tokenbroker_webhook_oldest_undelivered_age_seconds{` + tl + `pod="b"} 0+60x90`,
		},
		at: 80 * time.Minute, firing: []string{"namespace=tb,job=tokenbroker"},
	},
	{
		name: "connections inside the expiry warning for an hour", alert: "TokenbrokerIntegrationsExpiringSoon",
		series: []string{
			// Every replica reports the fleet's count: max, not sum.
			`tokenbroker_connections_expiring_soon{` + tl + `pod="a",vendor="servicenow"} 3x80`,
			`tokenbroker_connections_expiring_soon{` + tl + `pod="b",vendor="servicenow"} 3x80`,
			`tokenbroker_connections_expiring_soon{` + tl + `pod="a",vendor="confluence"} 0x80`,
		},
		at: 70 * time.Minute, firing: []string{"vendor=servicenow"},
	},
	{
		name: "connections reconnected in time do not fire", alert: "TokenbrokerIntegrationsExpiringSoon",
		series: []string{`tokenbroker_connections_expiring_soon{` + tl + `pod="a",vendor="servicenow"} 2x30 0x50`},
		at:     70 * time.Minute,
	},
	{
		name: "audit sink writes failing fire", alert: "TokenbrokerAuditWriteFailing",
		series: []string{
			`tokenbroker_audit_write_errors_total{` + tl + `pod="a",destination="sink"} 0x5 1+1x20`,
			`tokenbroker_audit_write_errors_total{` + tl + `pod="a",destination="store"} 0x25`,
		},
		at: 15 * time.Minute, firing: []string{"destination=sink"},
	},
	{
		name: "audit writes that stopped failing go quiet", alert: "TokenbrokerAuditWriteFailing",
		series: []string{
			`tokenbroker_audit_write_errors_total{` + tl + `pod="a",destination="store"} 0x3 2x40`,
			`tokenbroker_audit_write_errors_total{` + tl + `pod="a",destination="sink"} 0x43`,
		},
		at: 40 * time.Minute,
	},
	{
		name: "an outbox that drains does not fire", alert: "TokenbrokerWebhookOutboxBacklog",
		series: []string{`tokenbroker_webhook_oldest_undelivered_age_seconds{` + tl + `pod="a"} 0+60x50 0x40`},
		at:     90 * time.Minute,
	},
}

func TestAlertsFire(t *testing.T) {
	rules := map[string]rulefmt.Rule{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			rules[r.Alert] = r
		}
	}
	fires := map[string]bool{}
	for _, c := range alertCases {
		if len(c.firing) > 0 {
			fires[c.alert] = true
		}
	}
	for name := range rules {
		if !fires[name] {
			t.Errorf("%s: no case shows it firing", name)
		}
	}
	engine := promql.NewEngine(promql.EngineOpts{
		MaxSamples: 1_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute, Parser: newParser(),
	})
	for _, c := range alertCases {
		t.Run(c.name, func(t *testing.T) {
			r, ok := rules[c.alert]
			if !ok {
				t.Fatalf("no alert %s in %s", c.alert, rulesFile)
			}
			got := evalAlert(t, engine, loadSeries(t, c.series), r, c.at)
			want := slices.Clone(c.firing)
			sort.Strings(want)
			var gotKeys []string
			for _, ls := range got {
				gotKeys = append(gotKeys, distinguishing(ls, want))
			}
			sort.Strings(gotKeys)
			if !slices.Equal(gotKeys, want) {
				t.Errorf("%s at %v: firing %v, want %v (full labels: %v)", c.alert, c.at, gotKeys, want, got)
			}
		})
	}
}

// evalAlert evaluates the rule every minute from 0 to at, as the rule
// manager does, and returns the label sets that are firing at `at`: active at
// every evaluation for at least the rule's `for`.
func evalAlert(t *testing.T, engine *promql.Engine, q storage.Queryable, r rulefmt.Rule, at time.Duration) []labels.Labels {
	t.Helper()
	activeSince := map[uint64]time.Duration{}
	last := map[uint64]labels.Labels{}
	for ts := time.Duration(0); ts <= at; ts += time.Minute {
		qry, err := engine.NewInstantQuery(context.Background(), q, nil, r.Expr, time.Unix(0, 0).Add(ts))
		if err != nil {
			t.Fatalf("%s: %v", r.Alert, err)
		}
		res := qry.Exec(context.Background())
		if res.Err != nil {
			t.Fatalf("%s at %v: %v", r.Alert, ts, res.Err)
		}
		vec, err := res.Vector()
		if err != nil {
			t.Fatalf("%s at %v: %v", r.Alert, ts, err)
		}
		now := map[uint64]bool{}
		for _, s := range vec {
			h := s.Metric.Hash()
			now[h] = true
			last[h] = s.Metric
			if _, ok := activeSince[h]; !ok {
				activeSince[h] = ts
			}
		}
		for h := range activeSince {
			if !now[h] {
				delete(activeSince, h)
			}
		}
		qry.Close()
	}
	var firing []labels.Labels
	for h, since := range activeSince {
		if at-since >= time.Duration(r.For) {
			firing = append(firing, last[h])
		}
	}
	return firing
}

// distinguishing renders the labels named in want's entries, in their order.
func distinguishing(ls labels.Labels, want []string) string {
	names := []string{"namespace", "job", "vendor", "result"}
	if len(want) > 0 {
		names = names[:0]
		for _, kv := range strings.Split(want[0], ",") {
			n, _, _ := strings.Cut(kv, "=")
			names = append(names, n)
		}
	}
	var parts []string
	for _, n := range names {
		if v := ls.Get(n); v != "" {
			parts = append(parts, n+"="+v)
		}
	}
	return strings.Join(parts, ",")
}

// --- an in-memory storage.Queryable for the engine ---

func loadSeries(t *testing.T, descs []string) storage.Queryable {
	t.Helper()
	var all []storage.Series
	for _, d := range descs {
		ls, vals, err := newParser().ParseSeriesDesc(d)
		if err != nil {
			t.Fatalf("series %q: %v", d, err)
		}
		var samples []chunks.Sample
		for i, v := range vals {
			if !v.Omitted {
				samples = append(samples, fsample{t: int64(i) * time.Minute.Milliseconds(), f: v.Value})
			}
		}
		all = append(all, storage.NewListSeries(ls, samples))
	}
	sort.Slice(all, func(i, j int) bool { return labels.Compare(all[i].Labels(), all[j].Labels()) < 0 })
	return storage.QueryableFunc(func(_, _ int64) (storage.Querier, error) { return memQuerier(all), nil })
}

type memQuerier []storage.Series

func (m memQuerier) Select(_ context.Context, _ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	var out seriesSet
	for _, s := range m {
		if matchesAll(s.Labels(), ms) {
			out.series = append(out.series, s)
		}
	}
	return &out
}

func matchesAll(ls labels.Labels, ms []*labels.Matcher) bool {
	for _, m := range ms {
		if !m.Matches(ls.Get(m.Name)) {
			return false
		}
	}
	return true
}

func (m memQuerier) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, fmt.Errorf("not needed by the alert tests")
}

func (m memQuerier) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, fmt.Errorf("not needed by the alert tests")
}

func (memQuerier) Close() error { return nil }

type seriesSet struct {
	series []storage.Series
	i      int
}

func (s *seriesSet) Next() bool                        { s.i++; return s.i <= len(s.series) }
func (s *seriesSet) At() storage.Series                { return s.series[s.i-1] }
func (s *seriesSet) Err() error                        { return nil }
func (s *seriesSet) Warnings() annotations.Annotations { return nil }

// fsample is a float sample for storage.NewListSeries.
type fsample struct {
	t int64
	f float64
}

func (s fsample) T() int64                      { return s.t }
func (s fsample) ST() int64                     { return 0 }
func (s fsample) F() float64                    { return s.f }
func (s fsample) H() *histogram.Histogram       { return nil }
func (s fsample) FH() *histogram.FloatHistogram { return nil }
func (s fsample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s fsample) Copy() chunks.Sample           { return s }
