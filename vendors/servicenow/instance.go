package servicenow

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/tokenbroker/tokenbroker/broker"
)

// maxInstanceURL bounds what ParseInstance reads; a real instance URL is short.
const maxInstanceURL = 2048

// hostPattern is one AllowedHosts entry: an exact host or "*.<domain>", and
// a port: "" (the scheme's default port only), "*" (any) or a number.
type hostPattern struct {
	host     string // exact host, or the domain after "*." when wildcard
	wildcard bool
	port     string
}

func parseHostPattern(raw string, allowInsecure bool) (hostPattern, error) {
	s := strings.ToLower(strings.TrimSpace(raw))
	if s == "" {
		return hostPattern{}, errors.New("empty host pattern")
	}
	host, port, err := splitHostPort(s)
	if err != nil {
		return hostPattern{}, err
	}
	p := hostPattern{host: host, port: port}
	if port != "" && port != "*" {
		if p.port, err = normalisePort(port); err != nil {
			return hostPattern{}, err
		}
	}
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		// "*.com" would allow any host of a TLD: demand a registrable domain.
		if !strings.Contains(rest, ".") {
			return hostPattern{}, fmt.Errorf("wildcard %q must name a domain of two labels or more", raw)
		}
		p.host, p.wildcard = rest, true
	}
	if strings.Contains(p.host, "*") {
		return hostPattern{}, fmt.Errorf("%q: a wildcard may only be the whole first label", raw)
	}
	h, err := normaliseHost(p.host)
	if err != nil {
		return hostPattern{}, err
	}
	p.host = h
	if !allowInsecure {
		if _, isIP := parseIP(h); isIP {
			return hostPattern{}, fmt.Errorf("%q is an IP address, which only AllowInsecure permits", raw)
		}
		if isLocalName(h) {
			return hostPattern{}, fmt.Errorf("%q is a local host name, which only AllowInsecure permits", raw)
		}
	}
	return p, nil
}

// match reports whether host (normalised, no port) and port (normalised:
// empty for the scheme's default) fit the pattern.
func (p hostPattern) match(host, port, scheme string) bool {
	switch p.port {
	case "*":
	case "":
		if port != "" {
			return false
		}
	default:
		if effectivePort(port, scheme) != p.port {
			return false
		}
	}
	if p.wildcard {
		// At least one whole label before the domain: "service-now.com" itself
		// and "evilservice-now.com" do not match "*.service-now.com".
		return strings.HasSuffix(host, "."+p.host)
	}
	return host == p.host
}

func (p hostPattern) String() string {
	h := p.host
	if p.wildcard {
		h = "*." + h
	}
	if p.port != "" {
		return h + ":" + p.port
	}
	return h
}

// ParseInstance validates the instance URL an admin named. Only
// scheme://host[:port] is accepted: anything more (userinfo, path, query,
// fragment) is either a mistake or an attempt to make the broker talk to a
// host the allowlist did not mean.
func (v *Vendor) ParseInstance(raw string) (broker.Instance, error) {
	inst, err := v.parseInstance(raw)
	if err != nil {
		return broker.Instance{}, fmt.Errorf("%w: %w", broker.ErrInvalidInstance, err)
	}
	return inst, nil
}

func (v *Vendor) parseInstance(raw string) (broker.Instance, error) {
	raw = strings.TrimSpace(raw)
	switch {
	case raw == "":
		return broker.Instance{}, errors.New("instance URL is empty")
	case len(raw) > maxInstanceURL:
		return broker.Instance{}, errors.New("instance URL is too long")
	case strings.ContainsAny(raw, "?#"):
		// Checked on the raw text: url.Parse drops a bare trailing "?" or "#".
		return broker.Instance{}, errors.New("instance URL must not have a query or fragment")
	case strings.Contains(raw, `\`):
		return broker.Instance{}, errors.New("instance URL must not contain a backslash")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the raw input, which may hold a password in its
		// userinfo: report only the reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return broker.Instance{}, fmt.Errorf("instance URL is malformed: %w", err)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !v.allowInsecure {
			return broker.Instance{}, errors.New("instance URL must use https")
		}
	case "":
		return broker.Instance{}, errors.New("instance URL must start with https://")
	default:
		return broker.Instance{}, fmt.Errorf("instance URL scheme %q is not https", u.Scheme)
	}
	switch {
	case u.Opaque != "" || u.Host == "":
		return broker.Instance{}, errors.New("instance URL has no host")
	case u.User != nil:
		return broker.Instance{}, errors.New("instance URL must not contain user information (user@host)")
	case u.Path != "" && u.Path != "/":
		return broker.Instance{}, errors.New("instance URL must not have a path: use https://<instance host>")
	}
	host, err := normaliseHost(u.Hostname())
	if err != nil {
		return broker.Instance{}, err
	}
	port := ""
	if p := u.Port(); p != "" {
		if port, err = normalisePort(p); err != nil {
			return broker.Instance{}, err
		}
		if port == effectivePort("", u.Scheme) {
			port = ""
		}
	}
	if !v.allowInsecure {
		if _, isIP := parseIP(host); isIP {
			return broker.Instance{}, fmt.Errorf("instance host %s is an IP address; use the instance's host name", host)
		}
		if isLocalName(host) {
			return broker.Instance{}, fmt.Errorf("instance host %s is a local name", host)
		}
	}
	allowed := false
	for _, p := range v.allowedHosts {
		if p.match(host, port, u.Scheme) {
			allowed = true
			break
		}
	}
	hostPort := joinHostPort(host, port)
	if !allowed {
		return broker.Instance{}, fmt.Errorf("instance host %s is not in the allowed hosts (%s)", hostPort, v.allowedList())
	}
	return broker.Instance{BaseURL: u.Scheme + "://" + hostPort, Host: hostPort}, nil
}

func (v *Vendor) allowedList() string {
	s := make([]string, len(v.allowedHosts))
	for i, p := range v.allowedHosts {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// splitHostPort splits "host", "host:port", "[v6]" and "[v6]:port"; a bare
// IPv6 address is refused because its colons would be read as a port.
func splitHostPort(s string) (host, port string, err error) {
	if strings.HasPrefix(s, "[") {
		if strings.HasSuffix(s, "]") {
			return s[1 : len(s)-1], "", nil
		}
		return net.SplitHostPort(s)
	}
	switch strings.Count(s, ":") {
	case 0:
		return s, "", nil
	case 1:
		return net.SplitHostPort(s)
	}
	return "", "", fmt.Errorf("%q: write an IPv6 address in brackets", s)
}

// normaliseHost lower-cases host, drops one trailing dot (the same host for
// DNS, a different string for the allowlist) and checks that what remains is
// an IP address or a DNS name.
func normaliseHost(host string) (string, error) {
	h := strings.ToLower(host)
	if a, isIP := parseIP(h); isIP {
		if a.Zone() != "" {
			return "", errors.New("instance host must not carry an IPv6 zone")
		}
		return a.String(), nil
	}
	h = strings.TrimSuffix(h, ".")
	if err := checkDNSName(h); err != nil {
		return "", err
	}
	return h, nil
}

func parseIP(h string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(h)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// checkDNSName accepts LDH names only. A last label that reads as a number
// ("2130706433", "127.1", "0x7f") is refused: some resolvers treat such names
// as IPv4 addresses, which would slip a loopback address past the IP checks.
func checkDNSName(h string) error {
	if h == "" {
		return errors.New("instance host is empty")
	}
	if len(h) > 253 {
		return errors.New("instance host is too long")
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("instance host %q has an empty or over-long label", h)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("instance host %q has a label that starts or ends with '-'", h)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return fmt.Errorf("instance host %q may hold only letters, digits, '-' and '.' (use the punycode form of an international name)", h)
			}
		}
	}
	if looksNumeric(labels[len(labels)-1]) {
		return fmt.Errorf("instance host %q reads as a number, not a name", h)
	}
	return nil
}

func looksNumeric(label string) bool {
	if rest, ok := strings.CutPrefix(label, "0x"); ok {
		_, err := strconv.ParseUint("0"+rest, 16, 64)
		return err == nil || errors.Is(err, strconv.ErrRange)
	}
	for i := 0; i < len(label); i++ {
		if label[i] < '0' || label[i] > '9' {
			return false
		}
	}
	return true
}

// isLocalName reports names that always mean this machine (RFC 6761) or that
// a resolver completes with its search domains, i.e. hosts on the internal
// network.
func isLocalName(h string) bool {
	return h == "localhost" || strings.HasSuffix(h, ".localhost") || !strings.Contains(h, ".")
}

func normalisePort(p string) (string, error) {
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("port %q is not a number from 1 to 65535", p)
	}
	return strconv.Itoa(n), nil
}

func effectivePort(port, scheme string) string {
	if port != "" {
		return port
	}
	if scheme == "http" {
		return "80"
	}
	return "443"
}

func joinHostPort(host, port string) string {
	if port == "" {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return net.JoinHostPort(host, port)
}
