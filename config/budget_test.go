package config

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tokenbroker/tokenbroker/budget"
	"github.com/tokenbroker/tokenbroker/vendors/confluence"
)

// TestAccountBudgets: the budgets are off by default; set, they parse into
// limits with the documented default burst; a bad value stops start-up
// naming its variable.
func TestAccountBudgets(t *testing.T) {
	base := map[string]string{"BROKER_AUTH_HS256_SECRET": testSecret}
	c, err := Load(env(base))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.AccountBudgets(); err != nil || len(got) != 0 {
		t.Fatalf("defaults: %v, %v; want no budget", got, err)
	}

	c, err = Load(env(with(base, map[string]string{
		"BROKER_SERVICENOW_ACCOUNT_BUDGET": "3000/1h",
		"BROKER_CONFLUENCE_ACCOUNT_BUDGET": "5900/1h", "BROKER_CONFLUENCE_ACCOUNT_BUDGET_BURST": "600",
	})))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.AccountBudgets()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]budget.Limit{
		"servicenow": {Rate: 3000, Period: time.Hour, Burst: 300},
		"confluence": {Rate: 5900, Period: time.Hour, Burst: 600},
	}
	// ServiceNow counts requests (no Cost); Confluence Atlassian's points,
	// as its package estimates them.
	if got["servicenow"].Cost != nil {
		t.Error("the ServiceNow budget charges a cost other than 1 request")
	}
	read := httptest.NewRequest(http.MethodGet, "/wiki/api/v2/pages?limit=2", nil)
	if c := got["confluence"].Cost; c == nil || c(read) != confluence.EstimatePoints(read) {
		t.Error("the Confluence budget does not charge its points estimate")
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(budget.Limit{}, "Cost")); diff != "" {
		t.Fatalf("budgets (-want +got):\n%s", diff)
	}
	c, err = Load(env(with(base, map[string]string{"BROKER_CONFLUENCE_ACCOUNT_BUDGET": "5900/1h", "BROKER_CONFLUENCE_ACCOUNT_BUDGET_UNIT": "requests"})))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := c.AccountBudgets(); got["confluence"].Cost != nil || got["confluence"].Burst != 590 {
		t.Errorf("a Confluence budget in requests = %v, want one request a call and a tenth as burst", got["confluence"])
	}

	c, err = Load(env(with(base, map[string]string{"BROKER_CONFLUENCE_ACCOUNT_BUDGET": "300/1m"})))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := c.AccountBudgets(); got["confluence"].Burst != 251 {
		t.Errorf("a points budget's default burst is one full-page read (251), got %d", got["confluence"].Burst)
	}

	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"BROKER_SERVICENOW_ACCOUNT_BUDGET": "3000"},
			`BROKER_SERVICENOW_ACCOUNT_BUDGET: "3000": no / (want <units>/<period>, e.g. 5900/1h)`},
		{map[string]string{"BROKER_SERVICENOW_ACCOUNT_BUDGET": "-1/1h"},
			`BROKER_SERVICENOW_ACCOUNT_BUDGET: "-1/1h": the units must be a whole number from 1 to 1e9 (want <units>/<period>, e.g. 5900/1h)`},
		{map[string]string{"BROKER_CONFLUENCE_ACCOUNT_BUDGET": "10/1ms"},
			`BROKER_CONFLUENCE_ACCOUNT_BUDGET: "10/1ms": the period must be a duration from 1s to 744h (want <units>/<period>, e.g. 5900/1h)`},
		{map[string]string{"BROKER_SERVICENOW_ACCOUNT_BUDGET": "10/1h", "BROKER_SERVICENOW_ACCOUNT_BUDGET_BURST": "11"},
			`BROKER_SERVICENOW_ACCOUNT_BUDGET_BURST: 11 is more than the budget 10 itself`},
		{map[string]string{"BROKER_CONFLUENCE_ACCOUNT_BUDGET_BURST": "-1"},
			`BROKER_CONFLUENCE_ACCOUNT_BUDGET_BURST: must not be negative, got -1`},
		{map[string]string{"BROKER_CONFLUENCE_ACCOUNT_BUDGET_UNIT": "calls"},
			`BROKER_CONFLUENCE_ACCOUNT_BUDGET_UNIT: invalid unit "calls" (want points or requests)`},
		{map[string]string{"BROKER_ACCOUNT_BUDGET_BATCH": "0"},
			`BROKER_ACCOUNT_BUDGET_BATCH: must be 1 to 1000, got 0`},
	} {
		_, err := Load(env(with(base, tc.env)))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%v: error %v, want %s", tc.env, err, tc.want)
		}
	}
}
