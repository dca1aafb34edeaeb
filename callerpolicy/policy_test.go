package callerpolicy_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/callerpolicy"
)

var vendors = []string{"servicenow", "confluence"}

// example is the policy of docs/security.md's worked example.
const example = `
rules:
  - name: support-desk
    callers: {roles: [support]}
    vendors: [servicenow]
    methods: [GET, POST, PATCH]
    paths: [/api/now/table/incident, /api/now/attachment]
  - name: reporting
    callers: {subs: [svc-reporting]}
    methods: [GET]
  - name: wiki-users
    callers: {any: true}
    vendors: [confluence]
    connections: [own_user]
  - name: sync-service
    callers: {roles: [act-for-users]}
    connections: [any_user]
`

func TestPolicyChecks(t *testing.T) {
	p, err := callerpolicy.Parse([]byte(example), vendors)
	if err != nil {
		t.Fatal(err)
	}
	type caller struct {
		sub   string
		roles []string
	}
	support := caller{"ann", []string{"support"}}
	reporting := caller{"svc-reporting", nil}
	nobody := caller{"joe", nil}
	syncer := caller{"svc-sync", []string{"act-for-users"}}
	sn, cf := "servicenow", "confluence"
	for _, tc := range []struct {
		name   string
		who    caller
		call   callerpolicy.Call
		reason string // "" means allowed
	}{
		{"support reads incidents", support, callerpolicy.Call{Vendor: sn, Method: "GET", Path: "/api/now/table/incident"}, ""},
		{"support reads one incident", support, callerpolicy.Call{Vendor: sn, Method: "GET", Path: "/api/now/table/incident/abc"}, ""},
		{"GET allows HEAD", support, callerpolicy.Call{Vendor: sn, Method: "HEAD", Path: "/api/now/table/incident"}, ""},
		{"prefix is per segment", support, callerpolicy.Call{Vendor: sn, Method: "GET", Path: "/api/now/table/incident_x"}, "path"},
		{"prefix is not a suffix match", support, callerpolicy.Call{Vendor: sn, Method: "GET", Path: "/x/api/now/table/incident"}, "path"},
		{"encoded path is decoded", support, callerpolicy.Call{Vendor: sn, Method: "GET", Path: "/api/now/table/%69ncident/1"}, ""},
		{"support cannot delete", support, callerpolicy.Call{Vendor: sn, Method: "DELETE", Path: "/api/now/table/incident/abc"}, "method"},
		{"support cannot read users", support, callerpolicy.Call{Vendor: sn, Method: "GET", Path: "/api/now/table/sys_user"}, "path"},
		{"support has no confluence app rule", support, callerpolicy.Call{Vendor: cf, Method: "GET", Path: "/wiki/api/v2/pages"}, "connection"},
		{"support own confluence user", support, callerpolicy.Call{Vendor: cf, User: "ann", Method: "PUT", Path: "/wiki/api/v2/pages/1"}, ""},
		{"support cannot act for others", support, callerpolicy.Call{Vendor: sn, User: "bob", Method: "GET", Path: "/api/now/table/incident"}, "connection"},
		{"reporting reads anything", reporting, callerpolicy.Call{Vendor: cf, Method: "GET", Path: "/wiki/api/v2/spaces"}, ""},
		{"reporting is read-only", reporting, callerpolicy.Call{Vendor: sn, Method: "POST", Path: "/api/now/table/incident"}, "method"},
		{"unknown caller on servicenow", nobody, callerpolicy.Call{Vendor: sn, Method: "GET", Path: "/"}, "caller"},
		{"unknown caller own confluence", nobody, callerpolicy.Call{Vendor: cf, User: "joe", Method: "GET", Path: "/"}, ""},
		{"unknown caller not another's confluence", nobody, callerpolicy.Call{Vendor: cf, User: "ann", Method: "GET", Path: "/"}, "connection"},
		{"act-for-users acts for others", syncer, callerpolicy.Call{Vendor: sn, User: "bob", Method: "DELETE", Path: "/x"}, ""},
		{"any_user includes own_user", syncer, callerpolicy.Call{Vendor: sn, User: "svc-sync", Method: "GET", Path: "/x"}, ""},
		{"any_user is not app", syncer, callerpolicy.Call{Vendor: sn, Method: "GET", Path: "/x"}, "connection"},
		{"unknown vendor", support, callerpolicy.Call{Vendor: "jira", Method: "GET", Path: "/"}, "caller"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := p.Check(tc.who.sub, tc.who.roles, tc.call)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var d *callerpolicy.Denied
			if !errors.As(err, &d) {
				t.Fatalf("allowed, want refusal for %s", tc.reason)
			}
			if d.Reason != tc.reason {
				t.Errorf("reason %q (%v), want %q", d.Reason, err, tc.reason)
			}
		})
	}
}

func TestDefaultPolicy(t *testing.T) {
	p := callerpolicy.Default(vendors, callerpolicy.DefaultActForUsersRole)
	call := callerpolicy.Call{Vendor: "servicenow", Method: "DELETE", Path: "/api/now/table/incident/1"}
	if err := p.Check("svc", nil, call); err != nil {
		t.Errorf("app-level call refused by default: %v", err)
	}
	call.User = "svc"
	if err := p.Check("svc", nil, call); err != nil {
		t.Errorf("own user-level call refused by default: %v", err)
	}
	call.User = "bob"
	if err := p.Check("svc", []string{"admin"}, call); err == nil {
		t.Error("acting for another user without the role was allowed")
	}
	if err := p.Check("svc", []string{callerpolicy.DefaultActForUsersRole}, call); err != nil {
		t.Errorf("acting for another user with the role refused: %v", err)
	}
	if err := callerpolicy.Default(vendors, "").Check("svc", []string{callerpolicy.DefaultActForUsersRole}, call); err == nil {
		t.Error("with no act-for role, acting for another user was allowed")
	}
}

func TestPolicyFileErrors(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{``, "empty"},
		{`rules: []`, "no rules"},
		{`rules: [{callers: {any: true}}]`, "name is required"},
		{`rules: [{name: a, callers: {}}]`, "callers"},
		{`rules: [{name: a, callers: {any: true, roles: [x]}}]`, "cannot be combined"},
		{`rules: [{name: a, callers: {any: true}, connections: [any_user]}]`, "any_user"},
		{`rules: [{name: a, callers: {roles: [x]}, connections: [everyone]}]`, "unknown kind"},
		{`rules: [{name: a, callers: {roles: [x]}, vendors: [jira]}]`, "unknown vendor"},
		{`rules: [{name: a, callers: {roles: [x]}, methods: [get]}]`, "methods"},
		{`rules: [{name: a, callers: {roles: [x]}, methods: [TRACE]}]`, "methods"},
		{`rules: [{name: a, callers: {roles: [x]}, paths: [api]}]`, "start with /"},
		{`rules: [{name: a, callers: {roles: [x]}, paths: [/api/../x]}]`, ". or .."},
		{`rules: [{name: a, callers: {roles: [x]}, paths: [/api%2fx]}]`, "decoded"},
		{`rules: [{name: a, callers: {roles: [x]}}, {name: a, callers: {roles: [y]}}]`, "another rule"},
		{`rules: [{name: a, callers: {roles: [x]}, method: [GET]}]`, "not found"},
	} {
		_, err := callerpolicy.Parse([]byte(tc.file), vendors)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.file, err, tc.want)
		}
	}
}

func TestCheckDoesNotAllocateWhenAllowed(t *testing.T) {
	p, err := callerpolicy.Parse([]byte(example), vendors)
	if err != nil {
		t.Fatal(err)
	}
	roles := []string{"support"}
	call := callerpolicy.Call{Vendor: "servicenow", Method: "GET", Path: "/api/now/table/incident/abc"}
	if n := testing.AllocsPerRun(100, func() {
		if p.Check("ann", roles, call) != nil {
			t.Fatal("refused")
		}
	}); n != 0 {
		t.Errorf("Check allocates %v objects per allowed call", n)
	}
}

func BenchmarkCheck(b *testing.B) {
	p := callerpolicy.Default(vendors, callerpolicy.DefaultActForUsersRole)
	call := callerpolicy.Call{Vendor: "servicenow", Method: "GET", Path: "/api/now/table/incident"}
	for b.Loop() {
		_ = p.Check("svc", nil, call)
	}
}
