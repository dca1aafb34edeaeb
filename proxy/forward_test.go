package proxy

import (
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker"
)

// FuzzOutboundHeaders: whatever headers a caller sends, the request to the
// vendor carries exactly the connection's token as Authorization, none of the
// caller's credentials, broker controls or cluster headers, no hop-by-hop
// header (TE only as "trailers"), nothing its Connection header names, and
// the caller's own header map is left as it came.
func FuzzOutboundHeaders(f *testing.F) {
	f.Add("X-Custom", "v", "Authorization", "Bearer caller", "X-Custom")
	f.Add("Cookie", "a=b", "X_Broker_User", "u", "keep-alive, X-Other")
	f.Add("Te", "trailers, gzip", "Proxy-Authorization", "Basic x", "Te")
	f.Add("Keep-Alive", "5", "Transfer-Encoding", "chunked", "close")
	f.Add("X-Forwarded-For", "10.0.0.1", "User-Agent", "svc/1", "User-Agent, Authorization")
	p := &Proxy{bearers: newBearerCache()}
	target, _ := url.Parse("https://acme.service-now.com/api/now/table/incident")
	f.Fuzz(func(t *testing.T, name1, value1, name2, value2, connection string) {
		in, _ := http.NewRequest(http.MethodGet, "http://broker/proxy/servicenow/api/now/table/incident", nil)
		in.Header = http.Header{}
		for _, nv := range [][2]string{{name1, value1}, {name2, value2}, {"Connection", connection}} {
			if !validFieldName(nv[0]) {
				continue
			}
			k := textproto.CanonicalMIMEHeaderKey(nv[0])
			in.Header[k] = append(in.Header[k], nv[1])
		}
		before := in.Header.Clone()
		x := &exchange{p: p, access: broker.Access{Token: "vendor-token"}, target: target}
		out := p.outbound(x, in)

		if got := out.Header["Authorization"]; len(got) != 1 || got[0] != "Bearer vendor-token" {
			t.Errorf("Authorization = %q", got)
		}
		if out.URL != target || out.Host != target.Host {
			t.Errorf("target %v, host %q", out.URL, out.Host)
		}
		listed := map[string]bool{}
		for _, v := range in.Header["Connection"] {
			for _, n := range strings.Split(v, ",") {
				listed[textproto.CanonicalMIMEHeaderKey(textproto.TrimString(n))] = true
			}
		}
		for k, vv := range out.Header {
			switch {
			case k == "Authorization" || k == "User-Agent":
			case k == "Te":
				if !slices.Equal(vv, []string{"trailers"}) {
					t.Errorf("Te = %q, want only trailers", vv)
				}
			case dropRequestHeader(k), hopByHop(k):
				t.Errorf("vendor gets %s: %q", k, vv)
			case listed[k]:
				t.Errorf("vendor gets %s, which the caller's Connection header names", k)
			}
		}
		if _, ok := out.Header["User-Agent"]; !ok {
			t.Errorf("no User-Agent: the Transport would send Go's")
		}
		if !headersEqual(in.Header, before) {
			t.Errorf("the caller's headers changed: %v, were %v", in.Header, before)
		}
	})
}

func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func headersEqual(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}
