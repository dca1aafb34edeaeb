package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/audit"
)

// RunAudit checks an audit.Store: records kept whole per account (and only
// there: "acme" never sees "acme2"), listed newest first within an id
// window, filtered by vendor and action, bounded by the limit, trimmed past
// retention on append (the appending account only) and by TrimAudit (all).
func RunAudit(t *testing.T, newStore func(t *testing.T) audit.Store) {
	rec := func(account string, i int, vendor, action string) audit.Record {
		at := base.Add(time.Duration(i) * time.Minute)
		return audit.Record{
			ID: audit.IDFloor(at) + fmt.Sprintf("%08x", i), Time: at, Account: account,
			Actor: audit.Actor{Subject: "admin@" + account, Admin: true}, Action: action, Vendor: vendor,
			Flow: "app", OAuthAction: "reconnect", TargetUserID: "u1", WebhookID: "ep_1", Result: audit.ResultOK,
			Outcome: "reconnected", RequestID: fmt.Sprint("req-", i), SourceAddress: "192.0.2.7",
		}
	}
	ids := func(rs []audit.Record) []string {
		out := []string{}
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	const keep = 1000 * time.Hour
	fill := func(t *testing.T, s audit.Store) []audit.Record {
		var acme []audit.Record
		for i := range 6 {
			vendor, action := "servicenow", audit.ActionOAuthURL
			if i%2 == 1 {
				vendor, action = "confluence", audit.ActionDisconnect
			}
			r := rec("acme", i, vendor, action)
			acme = append(acme, r)
			// The same ids in other accounts: each account's trail is its own.
			for _, account := range []string{"acme", "acme2", "acm"} {
				if err := s.AppendAudit(t.Context(), rec(account, i, vendor, action), keep); err != nil {
					t.Fatal(err)
				}
			}
		}
		return acme
	}
	newest := func(rs []audit.Record, pick ...int) []string {
		out := []string{}
		for _, i := range pick {
			out = append(out, rs[i].ID)
		}
		return out
	}
	t.Run("AuditList", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		acme := fill(t, s)
		got, err := s.AuditRecords(t.Context(), "acme", audit.Query{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if want := newest(acme, 5, 4, 3, 2, 1, 0); fmt.Sprint(ids(got)) != fmt.Sprint(want) {
			t.Fatalf("acme's records = %v, want %v (newest first, no other account's)", ids(got), want)
		}
		// Every field survives the round trip.
		g, w := got[5], acme[0]
		if !g.Time.Equal(w.Time) {
			t.Errorf("time = %v, want %v", g.Time, w.Time)
		}
		g.Time, w.Time = time.Time{}, time.Time{}
		if g != w {
			t.Errorf("record = %+v, want %+v", g, w)
		}
		for _, tc := range []struct {
			name string
			q    audit.Query
			want []string
		}{
			{"before", audit.Query{Before: acme[3].ID, Limit: 100}, newest(acme, 2, 1, 0)},
			{"after", audit.Query{After: acme[2].ID, Limit: 100}, newest(acme, 5, 4, 3)},
			{"window", audit.Query{After: acme[1].ID, Before: acme[4].ID, Limit: 100}, newest(acme, 3, 2)},
			{"limit", audit.Query{Limit: 2}, newest(acme, 5, 4)},
			{"vendor", audit.Query{Vendor: "confluence", Limit: 100}, newest(acme, 5, 3, 1)},
			{"action", audit.Query{Action: audit.ActionOAuthURL, Limit: 2}, newest(acme, 4, 2)},
			{"filter and window", audit.Query{Vendor: "servicenow", Before: acme[4].ID, Limit: 100}, newest(acme, 2, 0)},
			{"nothing matches", audit.Query{Vendor: "jira", Limit: 100}, []string{}},
			{"time floor", audit.Query{After: audit.IDFloor(acme[4].Time.Add(-time.Nanosecond)), Limit: 100}, newest(acme, 5, 4)},
		} {
			got, err := s.AuditRecords(t.Context(), "acme", tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(ids(got)) != fmt.Sprint(tc.want) {
				t.Errorf("%s: %v, want %v", tc.name, ids(got), tc.want)
			}
		}
		if got, err := s.AuditRecords(t.Context(), "nobody", audit.Query{Limit: 10}); err != nil || len(got) != 0 {
			t.Errorf("an account without records: %v, %v", ids(got), err)
		}
	})
	t.Run("AuditRetention", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		acme := fill(t, s)
		// An append 3 minutes after acme's fourth record, keeping 3
		// minutes, drops acme's first three and no other account's.
		late := rec("acme", 6, "servicenow", audit.ActionWebhookCreate)
		late.Time = acme[3].Time.Add(3 * time.Minute)
		late.ID = audit.IDFloor(late.Time) + "ffffffff"
		if err := s.AppendAudit(t.Context(), late, 3*time.Minute+time.Nanosecond); err != nil {
			t.Fatal(err)
		}
		got, err := s.AuditRecords(t.Context(), "acme", audit.Query{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{late.ID, acme[5].ID, acme[4].ID, acme[3].ID}; fmt.Sprint(ids(got)) != fmt.Sprint(want) {
			t.Errorf("after a trimming append: %v, want %v", ids(got), want)
		}
		if other, _ := s.AuditRecords(t.Context(), "acme2", audit.Query{Limit: 100}); len(other) != 6 {
			t.Errorf("acme2 lost records to acme's append: %d left", len(other))
		}
		// TrimAudit trims every account.
		n, err := s.TrimAudit(t.Context(), acme[5].Time)
		if err != nil {
			t.Fatal(err)
		}
		if n != 2+5+5 {
			t.Errorf("TrimAudit dropped %d records, want 12", n)
		}
		for account, want := range map[string]int{"acme": 2, "acme2": 1, "acm": 1} {
			if got, _ := s.AuditRecords(t.Context(), account, audit.Query{Limit: 100}); len(got) != want {
				t.Errorf("%s after TrimAudit: %d records, want %d", account, len(got), want)
			}
		}
	})
}
