package audit_test

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenbroker/tokenbroker/audit"
	"github.com/tokenbroker/tokenbroker/store/embedded"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func openStore(t *testing.T) *embedded.Store {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	s, err := embedded.Open(embedded.Options{Dir: t.TempDir(), Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newTrail(t *testing.T, o audit.Options) (*audit.Trail, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	o.Registerer = reg
	tr, err := audit.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return tr, reg
}

func readLines(t *testing.T, path string) []audit.Record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []audit.Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("sink line %q is not one JSON record: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// TestSinkWritesWholeLines: records from concurrent requests land as whole
// JSON lines, one each, with distinct ids, in a 0600 file.
func TestSinkWritesWholeLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	sink, closeSink, err := audit.OpenSink("file:"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeSink()
	tr, reg := newTrail(t, audit.Options{Sink: sink, Store: openStore(t)})
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			tr.Record(t.Context(), audit.Record{Account: "acme", Action: audit.ActionDisconnect, Vendor: "servicenow",
				Actor: audit.Actor{Subject: fmt.Sprint("admin-", i), Admin: true}, Result: audit.ResultOK,
				// A long field makes torn writes likely if writes were not serialised.
				RequestID: strings.Repeat("r", 4000)})
		})
	}
	wg.Wait()
	recs := readLines(t, path)
	if len(recs) != n {
		t.Fatalf("%d lines, want %d", len(recs), n)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		if seen[r.ID] || r.Time.IsZero() {
			t.Fatalf("record %+v: duplicate id or no time", r.ID)
		}
		seen[r.ID] = true
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("sink file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	want := fmt.Sprintf(`
# HELP tokenbroker_audit_records_total Management actions recorded in the audit trail.
# TYPE tokenbroker_audit_records_total counter
tokenbroker_audit_records_total %d
`, n)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokenbroker_audit_records_total"); err != nil {
		t.Error(err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// TestWriteFailuresCounted: a sink or store that fails is counted by
// destination, and the other destination still gets the record.
func TestWriteFailuresCounted(t *testing.T) {
	st := openStore(t)
	tr, reg := newTrail(t, audit.Options{Sink: failingWriter{}, Store: st})
	tr.Record(t.Context(), audit.Record{Account: "acme", Action: audit.ActionOAuthURL, Result: audit.ResultOK})
	page, err := tr.List(t.Context(), "acme", audit.Filter{})
	if err != nil || len(page.Records) != 1 {
		t.Fatalf("the store did not get the record the sink refused: %+v, %v", page, err)
	}
	want := `
# HELP tokenbroker_audit_write_errors_total Audit records that could not be written, by destination (sink: the JSON-lines file or stdout; store: the per-account trail).
# TYPE tokenbroker_audit_write_errors_total counter
tokenbroker_audit_write_errors_total{destination="sink"} 1
tokenbroker_audit_write_errors_total{destination="store"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokenbroker_audit_write_errors_total"); err != nil {
		t.Error(err)
	}

	path := filepath.Join(t.TempDir(), "audit.log")
	sink, closeSink, err := audit.OpenSink("file:"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeSink()
	closed := openStore(t)
	_ = closed.Close()
	tr, reg = newTrail(t, audit.Options{Sink: sink, Store: closed})
	tr.Record(t.Context(), audit.Record{Account: "acme", Action: audit.ActionOAuthURL, Result: audit.ResultOK})
	if recs := readLines(t, path); len(recs) != 1 {
		t.Errorf("the sink did not get the record the store refused: %d lines", len(recs))
	}
	want = strings.Replace(strings.Replace(want, `"sink"} 1`, `"sink"} 0`, 1), `"store"} 0`, `"store"} 1`, 1)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokenbroker_audit_write_errors_total"); err != nil {
		t.Error(err)
	}
}

// TestNoAccountSinkOnly: a record of no account (a callback with an
// unknown state) goes to the sink and to no account's trail.
func TestNoAccountSinkOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	sink, closeSink, err := audit.OpenSink("file:"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeSink()
	st := openStore(t)
	tr, _ := newTrail(t, audit.Options{Sink: sink, Store: st})
	tr.Record(t.Context(), audit.Record{Action: audit.ActionOAuthCallback, Result: "invalid_state"})
	if recs := readLines(t, path); len(recs) != 1 || recs[0].Result != "invalid_state" {
		t.Errorf("sink: %+v", recs)
	}
	if got, _ := st.AuditRecords(t.Context(), "", audit.Query{Limit: 10}); len(got) != 0 {
		t.Errorf("a record of no account was stored: %+v", got)
	}
}

// TestListPagesAndFilters: pages of the documented size chain through
// nextCursor without gaps or repeats, newest first; filters and the time
// window select exactly; retention hides and trims old records.
func TestListPagesAndFilters(t *testing.T) {
	clk := &clock{t: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	st := openStore(t)
	tr, _ := newTrail(t, audit.Options{Store: st, Now: clk.now, Retention: 48 * time.Hour})
	start := clk.now()
	const n = 250
	for i := range n {
		vendor, action := "servicenow", audit.ActionOAuthURL
		if i%5 == 0 {
			vendor, action = "confluence", audit.ActionWebhookCreate
		}
		tr.Record(t.Context(), audit.Record{Account: "acme", Action: action, Vendor: vendor, Result: audit.ResultOK,
			RequestID: fmt.Sprint(i)})
		tr.Record(t.Context(), audit.Record{Account: "globex", Action: action, Vendor: vendor, Result: audit.ResultOK})
		clk.add(time.Minute)
	}
	var all []audit.Record
	cursor := ""
	for pages := 0; ; pages++ {
		page, err := tr.List(t.Context(), "acme", audit.Filter{Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page.Records...)
		if page.NextCursor == "" {
			if pages != 2 || len(page.Records) != 50 {
				t.Errorf("last page %d has %d records; want page 2 with 50", pages, len(page.Records))
			}
			break
		}
		if len(page.Records) != audit.DefaultPageSize {
			t.Fatalf("page %d has %d records, want %d", pages, len(page.Records), audit.DefaultPageSize)
		}
		cursor = page.NextCursor
	}
	if len(all) != n {
		t.Fatalf("%d records over all pages, want %d", len(all), n)
	}
	for i, r := range all {
		if r.Account != "acme" || r.RequestID != fmt.Sprint(n-1-i) {
			t.Fatalf("record %d is %s/%s, want acme's request %d (newest first)", i, r.Account, r.RequestID, n-1-i)
		}
	}

	count := func(f audit.Filter) int {
		t.Helper()
		f.Limit = audit.MaxPageSize
		page, err := tr.List(t.Context(), "acme", f)
		if err != nil {
			t.Fatal(err)
		}
		return len(page.Records)
	}
	for _, tc := range []struct {
		name string
		f    audit.Filter
		want int
	}{
		{"vendor", audit.Filter{Vendor: "confluence"}, 50},
		{"action", audit.Filter{Action: audit.ActionOAuthURL}, 200},
		{"vendor and action", audit.Filter{Vendor: "confluence", Action: audit.ActionOAuthURL}, 0},
		{"since (inclusive)", audit.Filter{Since: start.Add(240 * time.Minute)}, 10},
		{"until (exclusive)", audit.Filter{Until: start.Add(10 * time.Minute)}, 10},
		{"window", audit.Filter{Since: start.Add(10 * time.Minute), Until: start.Add(20 * time.Minute), Vendor: "confluence"}, 2},
	} {
		if got := count(tc.f); got != tc.want {
			t.Errorf("%s: %d records, want %d", tc.name, got, tc.want)
		}
	}

	// 48h retention: two days on, the first 100 minutes' records are past it.
	clk.add(48*time.Hour - 150*time.Minute)
	if got := count(audit.Filter{}); got != 150 {
		t.Errorf("after retention: %d records listed, want 150", got)
	}
	n2, err := st.TrimAudit(t.Context(), clk.now().Add(-48*time.Hour))
	if err != nil || n2 != 200 {
		t.Errorf("trim dropped %d (%v), want 200 (both accounts' first 100)", n2, err)
	}
}

// TestListRefusesBadFilters: each bad filter is ErrInvalidQuery.
func TestListRefusesBadFilters(t *testing.T) {
	tr, _ := newTrail(t, audit.Options{Store: openStore(t)})
	now := time.Now()
	for _, f := range []audit.Filter{
		{Limit: -1}, {Limit: audit.MaxPageSize + 1}, {Action: "token.read"}, {Cursor: "abc"},
		{Cursor: strings.Repeat("g", 24)}, {Since: now, Until: now}, {Since: now, Until: now.Add(-time.Second)},
	} {
		if _, err := tr.List(t.Context(), "acme", f); !errors.Is(err, audit.ErrInvalidQuery) {
			t.Errorf("%+v: %v, want ErrInvalidQuery", f, err)
		}
	}
}

func TestOpenSink(t *testing.T) {
	if w, closeSink, err := audit.OpenSink("off", os.Stdout); err != nil || w != nil || closeSink() != nil {
		t.Errorf("off: %v %v", w, err)
	}
	if w, _, err := audit.OpenSink("stdout", os.Stdout); err != nil || w != os.Stdout {
		t.Errorf("stdout: %v %v", w, err)
	}
	for _, bad := range []string{"", "file:", "syslog", "file:" + filepath.Join(t.TempDir(), "missing", "audit.log")} {
		if _, _, err := audit.OpenSink(bad, os.Stdout); err == nil {
			t.Errorf("%q: opened", bad)
		}
	}
}
