package budget

import (
	"net/http"
	"strconv"
)

// Unit is what a budget counts.
type Unit int

const (
	// Requests: every call costs 1.
	Requests Unit = iota
	// Points: Atlassian's points-based limits (docs/vendor-notes.md). A
	// call's real cost (1 point, plus points per object a read returns) is
	// known only after the answer, so the budget charges an estimate up
	// front: see EstimatePoints.
	Points
)

const (
	// defaultPageSize is Confluence v2's page size when a read names none.
	defaultPageSize = 25
	// maxPageSize is the largest `limit` Confluence v2 accepts (250); a
	// larger one is answered with 250 objects at most.
	maxPageSize = 250
)

// Cost is what a call costs in unit u.
func (u Unit) Cost(r *http.Request) int {
	if u == Points {
		return EstimatePoints(r)
	}
	return 1
}

// EstimatePoints is the points a call is charged before it is made. Writes
// (anything but GET and HEAD) cost Atlassian's base point only. A read costs
// the base point plus one per object it may return: its `limit` query
// parameter, or the default page of 25, capped at 250. A read of a single
// object is over-estimated this way (charged 26 for 2); a list read of a
// full page is charged what it costs. Over, never under: the pool is what
// must not run dry.
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
