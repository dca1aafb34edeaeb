// Package egress decides, at dial time, which addresses vendor calls may
// reach. Instance hosts are checked by name when an admin names them, but a
// name is only as good as its DNS answer: a host under an allowlisted
// pattern that resolves (or is re-pointed, "DNS rebinding") to 127.0.0.1, a
// cluster address or the cloud metadata service would otherwise receive a
// bearer token or a client secret. The check therefore runs on the address
// actually dialled, in net.Dialer.Control, after resolution, for every
// vendor call: token, identity, revoke and proxy.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/http/httpproxy"
)

// ErrRefused is wrapped by every dial the policy refuses.
var ErrRefused = errors.New("egress refused")

// blocked are the ranges no vendor lives in, beyond what netip's
// predicates (loopback, private, link-local, multicast, unspecified) cover.
var blocked = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),  // carrier-grade NAT; Alibaba's metadata at 100.100.100.200
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, and the broadcast address
	netip.MustParsePrefix("fec0::/10"),      // deprecated site-local
	netip.MustParsePrefix("100::/64"),       // discard-only
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
}

// Translated IPv6 ranges that embed an IPv4 address: the embedded address
// is what is reached, so it is checked instead. NAT64 (64:ff9b::/96) is how
// an IPv6-only cluster reaches IPv4 vendors, so it cannot simply be refused.
var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// Public reports whether ip is an address a vendor may have: not loopback,
// private, link-local (metadata services: 169.254.169.254, fd00:ec2::254),
// shared, reserved or multicast.
func Public(ip netip.Addr) bool {
	ip = ip.Unmap()
	if ip.Is6() {
		b := ip.As16()
		switch {
		case nat64.Contains(ip):
			return Public(netip.AddrFrom4([4]byte(b[12:16])))
		case sixToFour.Contains(ip):
			return Public(netip.AddrFrom4([4]byte(b[2:6])))
		}
	}
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() ||
		ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	for _, p := range blocked {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// control is a net.Dialer.Control that refuses every address Public
// refuses. It runs once per address tried, after DNS resolution, so a
// name that resolves to both a public and a private address only ever
// reaches the public one.
func control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse dialled address: %v", ErrRefused, err)
	}
	if !Public(ap.Addr()) {
		return fmt.Errorf("%w: %s is not a public address (BROKER_ALLOW_INSECURE_VENDOR_URLS permits it)", ErrRefused, ap.Addr())
	}
	return nil
}

// Options configure a Dialer.
type Options struct {
	// AllowPrivate turns the check off (BROKER_ALLOW_INSECURE_VENDOR_URLS:
	// tests, the simulator, demos).
	AllowPrivate bool
	// Timeout and KeepAlive are the net.Dialer's.
	Timeout, KeepAlive time.Duration
	// Resolver resolves vendor names; nil is the system's. Tests pass one
	// that answers like a rebinding DNS server.
	Resolver *net.Resolver
	// Exempt are host:port addresses dialled without the check: the egress
	// proxies from HTTPS_PROXY/HTTP_PROXY, which usually sit on a private
	// network. Through a proxy the proxy resolves the vendor's name and its
	// own egress rules apply. Nil means ProxiesFromEnvironment().
	Exempt []string
}

// Dialer dials vendors.
type Dialer struct {
	checked, plain *net.Dialer
	exempt         map[string]bool
}

// New returns a Dialer for o.
func New(o Options) *Dialer {
	if o.Exempt == nil {
		o.Exempt = ProxiesFromEnvironment()
	}
	plain := &net.Dialer{Timeout: o.Timeout, KeepAlive: o.KeepAlive, Resolver: o.Resolver}
	checked := *plain
	if !o.AllowPrivate {
		checked.Control = control
	}
	d := &Dialer{checked: &checked, plain: plain, exempt: map[string]bool{}}
	for _, e := range o.Exempt {
		d.exempt[strings.ToLower(e)] = true
	}
	return d
}

// DialContext is the http.Transport's DialContext.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if d.exempt[strings.ToLower(addr)] {
		return d.plain.DialContext(ctx, network, addr)
	}
	return d.checked.DialContext(ctx, network, addr)
}

// ProxiesFromEnvironment lists the host:port of the HTTPS_PROXY and
// HTTP_PROXY settings (and their lower-case forms), as Go's transports read
// them.
func ProxiesFromEnvironment() []string {
	cfg := httpproxy.FromEnvironment()
	var out []string
	for _, raw := range []string{cfg.HTTPSProxy, cfg.HTTPProxy} {
		if raw == "" {
			continue
		}
		if !strings.Contains(raw, "://") {
			raw = "http://" + raw // as net/http reads a bare host:port
		}
		u, err := url.Parse(raw)
		if err != nil || u.Hostname() == "" {
			continue
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"https": "443", "socks5": "1080", "socks5h": "1080"}[u.Scheme]
		}
		if port == "" {
			port = "80"
		}
		out = append(out, net.JoinHostPort(u.Hostname(), port))
	}
	return out
}
