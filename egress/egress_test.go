package egress_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/egress"
	"github.com/tokenbroker/tokenbroker/egress/egresstest"
)

func TestPublic(t *testing.T) {
	for _, tc := range []struct {
		ip     string
		public bool
	}{
		{"127.0.0.1", false}, {"127.9.9.9", false}, {"::1", false},
		{"10.1.2.3", false}, {"172.16.0.1", false}, {"192.168.1.1", false}, {"fd12::1", false},
		{"169.254.169.254", false}, {"fd00:ec2::254", false}, {"fe80::1", false},
		{"100.100.100.200", false}, {"0.0.0.0", false}, {"::", false}, {"255.255.255.255", false},
		{"224.0.0.1", false}, {"ff02::1", false},
		{"::ffff:127.0.0.1", false}, {"::ffff:169.254.169.254", false},
		{"64:ff9b::7f00:1", false}, {"64:ff9b::a9fe:a9fe", false}, {"2002:7f00:1::", false},
		{"64:ff9b::808:808", true}, // NAT64 of 8.8.8.8: how IPv6-only clusters reach IPv4 vendors
		{"8.8.8.8", true}, {"149.96.0.1", true}, {"2606:4700::1111", true},
	} {
		if got := egress.Public(netip.MustParseAddr(tc.ip)); got != tc.public {
			t.Errorf("Public(%s) = %v, want %v", tc.ip, got, tc.public)
		}
	}
}

// TestDNSRebindingRefusedAtDial: an allowlisted name that resolves to
// loopback is refused after resolution, and nothing reaches the listener.
func TestDNSRebindingRefusedAtDial(t *testing.T) {
	targetAddr, accepted := egresstest.Target(t)
	_, port, _ := net.SplitHostPort(targetAddr)
	target := net.JoinHostPort("acme.service-now.com", port)
	res := egresstest.Resolver(t, netip.MustParseAddr("127.0.0.1"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	d := egress.New(egress.Options{Resolver: res, Timeout: time.Second, Exempt: []string{}})
	if c, err := d.DialContext(ctx, "tcp", target); !errors.Is(err, egress.ErrRefused) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial of a name rebound to 127.0.0.1: want ErrRefused, got %v", err)
	}
	if c, err := d.DialContext(ctx, "tcp", targetAddr); !errors.Is(err, egress.ErrRefused) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial of 127.0.0.1 itself: want ErrRefused, got %v", err)
	}
	if n := accepted(); n != 0 {
		t.Fatalf("listener accepted %d connections", n)
	}

	// With insecure vendor URLs allowed (tests, simulator) the same dial works.
	open := egress.New(egress.Options{AllowPrivate: true, Resolver: res, Timeout: time.Second, Exempt: []string{}})
	c, err := open.DialContext(ctx, "tcp", target)
	if err != nil {
		t.Fatalf("AllowPrivate dial: %v", err)
	}
	c.Close()

	// An egress proxy on a private address is dialled: it does its own checks.
	viaProxy := egress.New(egress.Options{Resolver: res, Timeout: time.Second, Exempt: []string{targetAddr}})
	c, err = viaProxy.DialContext(ctx, "tcp", targetAddr)
	if err != nil {
		t.Fatalf("exempt proxy dial: %v", err)
	}
	c.Close()
}

func TestProxiesFromEnvironment(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://user:pw@proxy.corp:3128")
	t.Setenv("HTTP_PROXY", "proxy2.corp")
	t.Setenv("https_proxy", "")
	t.Setenv("http_proxy", "")
	got := egress.ProxiesFromEnvironment()
	want := []string{"proxy.corp:3128", "proxy2.corp:80"}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %v, want %v", got, want)
	}
}
