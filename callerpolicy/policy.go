// Package callerpolicy decides which proxied vendor calls a caller of an
// account may make: which vendors, whether the app-level connection, its own
// user-level connection or any user's, which methods and which path prefixes.
//
// A policy is a list of allow rules; a call is allowed when at least one rule
// matches the caller, the vendor, the kind of connection, the method and the
// path. There are no deny rules, so no ordering or precedence to get wrong: a
// rule can only widen what a caller may do, and a call no rule names is
// refused. Rules are compiled once, at start-up, into the form Check reads on
// every proxied request without allocating.
//
// Acting for another user (X-Broker-User naming a user other than the
// caller's own sub) needs an explicit grant: a rule with connection
// any_user must name its callers by role or sub, never "any caller".
package callerpolicy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Connection kinds a rule may grant, as written in a policy file.
const (
	// App is the account's app-level connection (no X-Broker-User).
	App = "app"
	// OwnUser is the caller's own user-level connection (X-Broker-User equal
	// to the caller's sub).
	OwnUser = "own_user"
	// AnyUser is any user's connection of the account: acting for others.
	AnyUser = "any_user"
)

// DefaultActForUsersRole is the role the default policy asks of a caller that
// acts for another user.
const DefaultActForUsersRole = "act-for-users"

// File is a policy file (BROKER_PROXY_POLICY_FILE), in YAML.
type File struct {
	Rules []Rule `yaml:"rules"`
}

// Rule is one allow rule. An empty Vendors, Methods or Paths means all of
// them; an empty Connections means app and own_user.
type Rule struct {
	// Name appears in logs and errors; required and unique.
	Name    string  `yaml:"name"`
	Callers Callers `yaml:"callers"`
	// Vendors the rule applies to, by proxy path segment (servicenow,
	// confluence).
	Vendors []string `yaml:"vendors"`
	// Connections: app, own_user, any_user (any_user includes own_user).
	Connections []string `yaml:"connections"`
	// Methods, upper case. GET also allows HEAD.
	Methods []string `yaml:"methods"`
	// Paths are prefixes of the path below the vendor's base URL, matched
	// segment by segment on the decoded path: /api/now/table/incident allows
	// /api/now/table/incident and /api/now/table/incident/123, never
	// /api/now/table/incident_x.
	Paths []string `yaml:"paths"`
}

// Callers says whom a rule applies to: everybody (Any), or whoever has one
// of Roles or one of Subs.
type Callers struct {
	Any   bool     `yaml:"any"`
	Roles []string `yaml:"roles"`
	Subs  []string `yaml:"subs"`
}

// Call is one proxied call to be checked.
type Call struct {
	Vendor string
	// User is X-Broker-User; "" for the app-level connection.
	User   string
	Method string
	// Path is the escaped path below the vendor's base URL, already checked
	// by the proxy's path rules (no dot segments, no encoded slashes).
	Path string
}

// Denied is the error of a refused call. Its message says which part of the
// call no rule allows, for the caller to read; it holds no secret.
type Denied struct {
	// Reason is one of caller, connection, method, path: the first part of
	// the call that no rule for the caller and vendor allowed.
	Reason string
	msg    string
}

func (d *Denied) Error() string { return d.msg }

type kind uint8

const (
	kindApp kind = 1 << iota
	kindOwnUser
	kindAnyUser
)

var kindNames = map[string]kind{App: kindApp, OwnUser: kindOwnUser, AnyUser: kindAnyUser | kindOwnUser}

// methods a rule may name. TRACE and CONNECT are refused by the proxy before
// any policy, so naming them is an error rather than a silent no-op.
var methods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions}

// Policy is a compiled policy. The zero value refuses everything; build one
// with Compile, Load or Default.
type Policy struct {
	byVendor map[string][]*rule
}

type rule struct {
	name      string
	anyCaller bool
	roles     []string
	subs      map[string]struct{}
	kinds     kind
	methods   []string // nil: all
	prefixes  []prefix // nil: all
}

type prefix struct {
	exact string // "/api/now/table/incident"
	below string // "/api/now/table/incident/"
}

// Default is the policy without a file: every caller of an account may use
// its app-level connection and its own user-level connection with any method
// and path; acting for another user needs actForRole ("" grants it to
// nobody).
func Default(vendors []string, actForRole string) *Policy {
	f := File{Rules: []Rule{{Name: "default", Callers: Callers{Any: true}, Connections: []string{App, OwnUser}}}}
	if actForRole != "" {
		f.Rules = append(f.Rules, Rule{Name: "act-for-users", Callers: Callers{Roles: []string{actForRole}},
			Connections: []string{AnyUser}})
	}
	p, err := Compile(f, vendors)
	if err != nil {
		panic("callerpolicy: the default policy does not compile: " + err.Error())
	}
	return p
}

// Load reads and compiles the policy file at path.
func Load(path string, vendors []string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(b, vendors)
}

// Parse decodes a policy file strictly (unknown keys are errors) and
// compiles it.
func Parse(b []byte, vendors []string) (*Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f File
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the policy file is empty: it needs at least one rule")
		}
		return nil, err
	}
	return Compile(f, vendors)
}

// Compile validates f against the vendors the broker serves and compiles it.
// Errors name the rule and the field.
func Compile(f File, vendors []string) (*Policy, error) {
	if len(f.Rules) == 0 {
		return nil, errors.New("the policy has no rules: every call would be refused")
	}
	p := &Policy{byVendor: make(map[string][]*rule, len(vendors))}
	seen := map[string]bool{}
	for i, rs := range f.Rules {
		r, err := compileRule(rs, vendors)
		where := fmt.Sprintf("rule %d", i+1)
		if rs.Name != "" {
			where += fmt.Sprintf(" (%s)", rs.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if seen[r.name] {
			return nil, fmt.Errorf("%s: name is used by another rule", where)
		}
		seen[r.name] = true
		applies := rs.Vendors
		if len(applies) == 0 {
			applies = vendors
		}
		for _, v := range applies {
			p.byVendor[v] = append(p.byVendor[v], r)
		}
	}
	return p, nil
}

func compileRule(rs Rule, vendors []string) (*rule, error) {
	if rs.Name == "" {
		return nil, errors.New("name is required")
	}
	r := &rule{name: rs.Name}
	c := rs.Callers
	switch {
	case c.Any && (len(c.Roles) > 0 || len(c.Subs) > 0):
		return nil, errors.New("callers: any cannot be combined with roles or subs")
	case !c.Any && len(c.Roles) == 0 && len(c.Subs) == 0:
		return nil, errors.New("callers: name roles or subs, or set any: true")
	}
	r.anyCaller = c.Any
	for _, role := range c.Roles {
		if role == "" {
			return nil, errors.New("callers.roles: empty role")
		}
	}
	r.roles = slices.Clone(c.Roles)
	if len(c.Subs) > 0 {
		r.subs = make(map[string]struct{}, len(c.Subs))
		for _, s := range c.Subs {
			if s == "" {
				return nil, errors.New("callers.subs: empty sub")
			}
			r.subs[s] = struct{}{}
		}
	}
	for _, v := range rs.Vendors {
		if !slices.Contains(vendors, v) {
			return nil, fmt.Errorf("vendors: unknown vendor %q (known: %s)", v, strings.Join(vendors, ", "))
		}
	}
	conns := rs.Connections
	if len(conns) == 0 {
		conns = []string{App, OwnUser}
	}
	for _, cn := range conns {
		k, ok := kindNames[cn]
		if !ok {
			return nil, fmt.Errorf("connections: unknown kind %q (app, own_user or any_user)", cn)
		}
		if k&kindAnyUser != 0 && r.anyCaller {
			return nil, errors.New("connections: any_user (acting for other users) needs callers named by roles or subs, not any")
		}
		r.kinds |= k
	}
	for _, m := range rs.Methods {
		if !slices.Contains(methods, m) {
			return nil, fmt.Errorf("methods: %q is not one of %s", m, strings.Join(methods, ", "))
		}
		r.methods = append(r.methods, m)
		if m == http.MethodGet && !slices.Contains(rs.Methods, http.MethodHead) {
			r.methods = append(r.methods, http.MethodHead)
		}
	}
	for _, raw := range rs.Paths {
		pf, err := compilePrefix(raw)
		if err != nil {
			return nil, fmt.Errorf("paths: %q: %w", raw, err)
		}
		r.prefixes = append(r.prefixes, pf)
	}
	return r, nil
}

func compilePrefix(raw string) (prefix, error) {
	if !strings.HasPrefix(raw, "/") {
		return prefix{}, errors.New("must start with /")
	}
	if strings.ContainsAny(raw, "%?#\\") {
		return prefix{}, errors.New("write the decoded path, without %, ?, # or \\")
	}
	for seg := range strings.SplitSeq(strings.Trim(raw, "/"), "/") {
		if seg == "." || seg == ".." {
			return prefix{}, errors.New("no . or .. segments")
		}
	}
	exact := strings.TrimRight(raw, "/")
	if exact == "" {
		return prefix{exact: "/", below: "/"}, nil
	}
	return prefix{exact: exact, below: exact + "/"}, nil
}

// Check reports whether the caller (sub, roles) may make call: nil, or a
// *Denied. It does not allocate when the call is allowed.
func (p *Policy) Check(sub string, roles []string, call Call) error {
	var k kind
	switch call.User {
	case "":
		k = kindApp
	case sub:
		k = kindOwnUser
	default:
		k = kindAnyUser
	}
	path := call.Path
	if strings.IndexByte(path, '%') >= 0 {
		// The proxy refused encoded slashes and dot segments already, so the
		// decoded path has the same segments as the escaped one.
		if d, err := url.PathUnescape(path); err == nil {
			path = d
		}
	}
	// How far the best rule got, for the message of a refusal.
	reached := 0
	for _, r := range p.byVendor[call.Vendor] {
		if !r.matchCaller(sub, roles) {
			continue
		}
		reached = max(reached, 1)
		if r.kinds&k == 0 {
			continue
		}
		reached = max(reached, 2)
		if r.methods != nil && !slices.Contains(r.methods, call.Method) {
			continue
		}
		reached = max(reached, 3)
		if r.prefixes != nil && !r.matchPath(path) {
			continue
		}
		return nil
	}
	return denial(reached, k, call)
}

func (r *rule) matchCaller(sub string, roles []string) bool {
	if r.anyCaller {
		return true
	}
	if _, ok := r.subs[sub]; ok {
		return true
	}
	for _, want := range r.roles {
		if slices.Contains(roles, want) {
			return true
		}
	}
	return false
}

func (r *rule) matchPath(path string) bool {
	for _, pf := range r.prefixes {
		if pf.exact == "/" || path == pf.exact || strings.HasPrefix(path, pf.below) {
			return true
		}
	}
	return false
}

func denial(reached int, k kind, call Call) *Denied {
	switch reached {
	case 0:
		return &Denied{Reason: "caller", msg: "the proxy policy has no rule for this caller on " + call.Vendor}
	case 1:
		what := "the app-level connection"
		switch k {
		case kindOwnUser:
			what = "its own user-level connection"
		case kindAnyUser:
			what = "another user's connection (acting for another user needs an explicit role)"
		}
		return &Denied{Reason: "connection", msg: "the proxy policy does not let this caller use " + what + " of " + call.Vendor}
	case 2:
		return &Denied{Reason: "method", msg: "the proxy policy does not let this caller send " + call.Method + " to " + call.Vendor}
	default:
		return &Denied{Reason: "path", msg: "the proxy policy does not let this caller " + call.Method + " this path of " + call.Vendor}
	}
}
