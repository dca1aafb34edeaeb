package e2e_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/vendorsim"
)

var nextLink = regexp.MustCompile(`<([^>]*)>;rel="next"`)

// TestServiceNowPaginationThroughTheBroker follows the Table API's
// rel="next" links as a client would: every link names the broker, every
// page arrives, and the instance sees the connection's token, never the
// caller's JWT.
func TestServiceNowPaginationThroughTheBroker(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithSim(func(o *vendorsim.Options) { o.SNTableRows = 8 }))
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	token := stored(t, e, broker.Key{Account: acme, Vendor: "servicenow"}).Tokens.AccessToken
	proxied := e.URL + "/proxy/servicenow/"

	seen := map[string]bool{}
	next, pages := e.URL+"/proxy/servicenow/api/now/table/incident?sysparm_limit=3&sysparm_fields=sys_id", 0
	for next != "" {
		r := e.Get(next, admin)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", next, r.Status, r.Body)
		}
		if got := e.Sim.LastAPIRequests(1)[0]; got.Bearer != token {
			t.Fatalf("page %d reached the instance with bearer %q, want the connection's token", pages+1, got.Bearer)
		}
		pages++
		if r.Header.Get("X-Total-Count") != "8" {
			t.Errorf("X-Total-Count = %q, want 8", r.Header.Get("X-Total-Count"))
		}
		link := r.Header.Get("Link")
		for _, rel := range []string{"first", "last"} {
			if !strings.Contains(link, `;rel="`+rel+`"`) {
				t.Errorf("Link without rel=%s: %s", rel, link)
			}
		}
		for _, target := range regexp.MustCompile(`<([^>]*)>`).FindAllStringSubmatch(link, -1) {
			if !strings.HasPrefix(target[1], proxied) {
				t.Errorf("Link target %q does not go through the broker", target[1])
			}
		}
		var body struct {
			Result []struct {
				SysID string `json:"sys_id"`
			}
		}
		r.JSON(t, &body)
		for _, row := range body.Result {
			seen[row.SysID] = true
		}
		next = ""
		if m := nextLink.FindStringSubmatch(link); m != nil {
			next = m[1]
		}
		if pages > 5 {
			t.Fatalf("more pages than 8 rows in threes can make; Link: %s", link)
		}
	}
	if pages != 3 || len(seen) != 8 {
		t.Errorf("followed %d pages with %d distinct rows, want 3 pages and 8 rows", pages, len(seen))
	}
	for _, req := range e.Sim.LastAPIRequests(0) {
		if strings.Contains(req.Bearer, admin) || strings.Contains(strings.Join(req.Header.Values("Authorization"), " "), admin) {
			t.Fatalf("the caller's JWT reached the instance: %s %s", req.Method, req.Path)
		}
	}
}
