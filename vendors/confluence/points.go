package confluence

import (
	"net/http"
	"strconv"
)

const (
	// defaultPageSize is Confluence v2's page size when a read names none.
	defaultPageSize = 25
	// maxPageSize is the largest `limit` Confluence v2 accepts (250); a
	// larger one is answered with 250 objects at most.
	maxPageSize = 250
	// MaxPoints is the most EstimatePoints charges a call: a full-page read.
	// A points budget's burst is never smaller, or such a read could never
	// pass.
	MaxPoints = 1 + maxPageSize
)

// EstimatePoints is what a proxied call is charged before it is made,
// in Atlassian's points (docs/vendor-notes.md): the account budget's cost
// of a call when BROKER_CONFLUENCE_ACCOUNT_BUDGET_UNIT is points. A call's
// real cost (1 point, plus points per object a read returns) is known only
// after the answer. Writes (anything but GET and HEAD) cost the base point
// only. A read costs the base point plus one per object it may return: its
// `limit` query parameter, or the default page of 25, capped at 250. A read
// of a single object is over-estimated this way (charged 26 for 2); a list
// read of a full page is charged what it costs. Over, never under: the pool
// is what must not run dry.
func EstimatePoints(r *http.Request) int {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return 1
	}
	n := defaultPageSize
	if s := r.URL.Query().Get("limit"); s != "" {
		if v, err := strconv.Atoi(s); err == nil && v > 0 {
			n = min(v, maxPageSize)
		}
	}
	return 1 + n
}
