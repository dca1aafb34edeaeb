package proxy

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestVendorLinksPointPastTheBroker: ServiceNow's Link pagination, and
// Location and Content-Location answers, carried absolute URLs of the vendor
// that a client followed straight to the vendor, with the caller's JWT.
func TestVendorLinksPointPastTheBroker(t *testing.T) {
	var hdr http.Header // what the vendor answers with; set per case
	vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
		for k, v := range hdr {
			w.Header()[k] = v
		}
		w.WriteHeader(http.StatusCreated)
	})
	h := newHarness(t, vendor, func(o *Options) {
		o.PublicURL, _ = url.Parse("https://broker.example.com/tb/")
	})
	sn := vendor.URL                            // servicenow's base: the vendor's root
	cf := vendor.URL + "/ex/confluence/cloud-1" // confluence's base
	up := strings.ToUpper(strings.TrimPrefix(vendor.URL, "http://"))
	tests := []struct {
		name, vendor, host string
		in, want           http.Header
	}{
		{name: "servicenow Link pagination", vendor: "servicenow",
			in: http.Header{"Link": {`<` + sn + `/api/now/table/incident?sysparm_limit=2&sysparm_offset=0>;rel="first",<` +
				sn + `/api/now/table/incident?sysparm_limit=2&sysparm_offset=2>;rel="next",<` +
				sn + `/api/now/table/incident?sysparm_limit=2&sysparm_offset=8>;rel="last"`}},
			want: http.Header{"Link": {`<{B}/proxy/servicenow/api/now/table/incident?sysparm_limit=2&sysparm_offset=0>;rel="first",` +
				`<{B}/proxy/servicenow/api/now/table/incident?sysparm_limit=2&sysparm_offset=2>;rel="next",` +
				`<{B}/proxy/servicenow/api/now/table/incident?sysparm_limit=2&sysparm_offset=8>;rel="last"`}}},
		{name: "Location and Content-Location", vendor: "servicenow",
			in: http.Header{"Location": {sn + "/api/now/table/incident/abc"}, "Content-Location": {sn + "/api/now/attachment/x/file"}},
			want: http.Header{"Location": {"{B}/proxy/servicenow/api/now/table/incident/abc"},
				"Content-Location": {"{B}/proxy/servicenow/api/now/attachment/x/file"}}},
		{name: "scheme and host compare without case", vendor: "servicenow",
			in:   http.Header{"Location": {"HTTP://" + up + "/api/now/table/incident/abc"}},
			want: http.Header{"Location": {"{B}/proxy/servicenow/api/now/table/incident/abc"}}},
		{name: "the base itself and a query on it", vendor: "servicenow",
			in:   http.Header{"Location": {sn}, "Content-Location": {sn + "?a=b"}},
			want: http.Header{"Location": {"{B}/proxy/servicenow"}, "Content-Location": {"{B}/proxy/servicenow?a=b"}}},
		{name: "other hosts and look-alikes pass", vendor: "servicenow",
			in: http.Header{"Location": {"https://other.example.com/api/now/table/incident/abc"},
				"Content-Location": {sn + "0/x"},
				"Link":             {`<https://api.media.atlassian.com/file/1>;rel="download", <` + sn + `.evil.example/a>;rel="x"`}},
			want: http.Header{"Location": {"https://other.example.com/api/now/table/incident/abc"},
				"Content-Location": {sn + "0/x"},
				"Link":             {`<https://api.media.atlassian.com/file/1>;rel="download", <` + sn + `.evil.example/a>;rel="x"`}}},
		{name: "confluence: only its base path is rewritten", vendor: "confluence",
			in: http.Header{"Link": {`<` + cf + `/wiki/api/v2/pages?cursor=abc>; rel="next", <` + vendor.URL + `/ex/confluence/cloud-10/wiki>; rel="other", ` +
				`<` + vendor.URL + `/me>; rel="me", </wiki/api/v2/pages?cursor=abc>; rel="next"`},
				"Location": {vendor.URL + "/ex/confluence/cloud-2/wiki/api/v2/pages/1"}},
			want: http.Header{"Link": {`<{B}/proxy/confluence/wiki/api/v2/pages?cursor=abc>; rel="next", <` + vendor.URL + `/ex/confluence/cloud-10/wiki>; rel="other", ` +
				`<` + vendor.URL + `/me>; rel="me", </wiki/api/v2/pages?cursor=abc>; rel="next"`},
				"Location": {vendor.URL + "/ex/confluence/cloud-2/wiki/api/v2/pages/1"}}},
		{name: "a caller that came by the public host gets BROKER_PUBLIC_URL", vendor: "servicenow", host: "BROKER.example.com",
			in:   http.Header{"Location": {sn + "/api/now/table/incident/abc"}},
			want: http.Header{"Location": {"https://broker.example.com/tb/proxy/servicenow/api/now/table/incident/abc"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr = tt.in
			req, _ := http.NewRequest(http.MethodPost, h.server.URL+"/proxy/"+tt.vendor+"/api/x", strings.NewReader("{}"))
			req.Header.Set("Authorization", "Bearer acct:"+account)
			if tt.host != "" {
				req.Host = tt.host
			}
			res, err := h.server.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			_, _ = io.Copy(io.Discard, res.Body)
			for k, want := range tt.want {
				for i := range want {
					want[i] = strings.ReplaceAll(want[i], "{B}", h.server.URL)
				}
				if got := res.Header[k]; strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("%s:\n got %q\nwant %q", k, got, want)
				}
			}
		})
	}
}

// TestLinkRewritingCostsNothingWithoutLinks: the proxy path must not pay for
// rewriting on answers that carry no link header.
func TestLinkRewritingCostsNothingWithoutLinks(t *testing.T) {
	p := &Proxy{}
	base, _ := url.Parse("https://acme.service-now.com")
	in, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:8080/proxy/servicenow/api/now/table/incident", nil)
	x := &exchange{in: in, mount: "/proxy/servicenow"}
	x.access.Base = base
	h := http.Header{"Content-Type": {"application/json"}, "X-Total-Count": {"3"}}
	if n := testing.AllocsPerRun(100, func() { p.rewriteLinks(h, x) }); n != 0 {
		t.Errorf("answer without links: %v allocations, want 0", n)
	}
	h["Link"] = []string{`<https://other.example.com/a>;rel="next"`}
	before := h["Link"][0]
	p.rewriteLinks(h, x)
	if h["Link"][0] != before {
		t.Errorf("a link to another host changed: %q", h["Link"][0])
	}
}

// FuzzLinkRewrite: a URL is rewritten only when it parses to the base's host
// with a path under the base's path, and the rewrite keeps everything after
// the base byte for byte.
func FuzzLinkRewrite(f *testing.F) {
	for _, s := range []string{"https://api.example.com/ex/confluence/c1/wiki?x", "https://api.example.com/ex/confluence/c10",
		"HTTPS://API.example.com/ex/confluence/c1#f", "https://api.example.com.evil/ex/confluence/c1/", "https://api.example.com@evil/ex/confluence/c1",
		"https://api.example.com:443/ex/confluence/c1/", "/ex/confluence/c1/wiki"} {
		f.Add(s)
	}
	base, _ := url.Parse("https://api.example.com/ex/confluence/c1")
	t := &linkTarget{broker: "http://b/proxy/confluence", scheme: base.Scheme, host: base.Host, path: base.EscapedPath()}
	f.Fuzz(func(tb *testing.T, in string) {
		out, ok := t.rewrite(in)
		if !ok {
			return
		}
		rest := in[len(in)-(len(out)-len(t.broker)):]
		if out != t.broker+rest {
			tb.Fatalf("rewrite(%q) = %q: not the broker followed by the rest", in, out)
		}
		u, err := url.Parse(in)
		if err != nil {
			return // the vendor's garbage, forwarded as garbage under the broker
		}
		if !strings.EqualFold(u.Host, base.Host) || u.User != nil ||
			(u.EscapedPath() != base.Path && !strings.HasPrefix(u.EscapedPath(), base.Path+"/")) {
			tb.Fatalf("rewrote %q (host %q, path %q), which is not under %s", in, u.Host, u.EscapedPath(), base)
		}
	})
}
