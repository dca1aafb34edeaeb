package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"
)

// bufSize is the copy buffer size, io.Copy's default: large enough that a
// 64 MiB stream is ~2k reads and writes, small enough that a thousand
// concurrent streams hold 32 MiB.
const bufSize = 32 << 10

// bufferPool is the forwarding core's copy-buffer pool, also used for small
// request bodies kept for a retry. It stores array pointers so that Put does
// not allocate a slice header per call.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { return new([bufSize]byte) }}}
}

func (b *bufferPool) Get() []byte { return b.p.Get().(*[bufSize]byte)[:] }

func (b *bufferPool) Put(buf []byte) {
	if cap(buf) != bufSize {
		return
	}
	b.p.Put((*[bufSize]byte)(buf[:bufSize]))
}

// newTransport is the one Transport of the proxy. The idle-pool figures come
// from transport_measure_test.go (2 CPUs, TLS vendor on loopback). dial,
// when set, replaces the dialer's DialContext (the egress check wraps a
// dialer with these same timeouts).
func newTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	dialer := &net.Dialer{
		// Vendors are SaaS endpoints on the internet: a connect takes tens of ms.
		// 5 s leaves room for two lost SYNs (retransmits at 1 s and 3 s) and
		// still answers 504 long before a caller's own timeout would fire.
		Timeout: 5 * time.Second,
		// Keep-alive probes notice a silently dropped idle connection (NAT,
		// cloud load balancer) before a request is put on it.
		KeepAlive: 30 * time.Second,
	}
	if dial == nil {
		dial = dialer.DialContext
	}
	return &http.Transport{
		// Egress proxies are common where a broker runs (corporate clusters);
		// operators expect HTTPS_PROXY and NO_PROXY to be honoured.
		Proxy:       http.ProxyFromEnvironment,
		DialContext: dial,
		// api.atlassian.com speaks HTTP/2: one connection then carries every
		// Confluence tenant's traffic. A custom DialContext disables HTTP/2
		// unless asked for.
		ForceAttemptHTTP2: true,
		TLSClientConfig:   &tls.Config{MinVersion: tls.VersionTLS12},
		// A full handshake to a far vendor is 2 RTTs plus certificate checks
		// (~100-300 ms); 5 s is a dead or overloaded peer.
		TLSHandshakeTimeout: 5 * time.Second,
		// ServiceNow's default "REST Table API request timeout" transaction
		// quota (docs: "Default quota rules"; admin-configurable) cancels Table,
		// Aggregate, Import Set and Attachment API transactions after 60 s.
		// Waiting a little longer
		// lets the vendor's own answer reach the caller instead of our 504;
		// anything slower is a hung vendor.
		ResponseHeaderTimeout: 75 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Below the 60 s idle timeout common on cloud load balancers, so the
		// broker closes an idle connection before the peer does; otherwise a
		// request could be sent on a connection that is being closed, which
		// cannot be retried when its body is streamed.
		IdleConnTimeout: 50 * time.Second,
		// Go's default of 2 idle connections per host is the bottleneck for a
		// broker over HTTP/1.1 (ServiceNow instances): every caller beyond the
		// second opens a new TLS connection per request. Measured with 64
		// concurrent callers and a 20 ms vendor, on 2 CPUs:
		//   idle/host   2:  952 handshakes/s, 1216 req/s, 1.6 ms CPU/req
		//   idle/host  16:  402 handshakes/s, 1190 req/s, 0.8 ms CPU/req
		//   idle/host  32:   62 handshakes/s, 2690 req/s, 0.20 ms CPU/req
		//   idle/host  64:   warm-up only,    2667 req/s, 0.18 ms CPU/req
		// The pool must cover the concurrency per host, which is rate × latency:
		// vendor rate limits keep one host to a few hundred requests/s at
		// 100-300 ms, i.e. tens of connections, so 64 holds the steady state
		// with room for bursts (at 128 callers it still reached 3128 req/s).
		// HTTP/2 hosts (api.atlassian.com) multiplex and do not use this pool.
		// The total bounds idle memory (tens of KiB per TLS connection) across
		// a handful of vendor hosts.
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		// Content-Encoding stays end to end: the caller asked for (or not)
		// compression, and transparent gunzipping would cost this 2-CPU
		// process CPU and drop Content-Length from vendor answers.
		DisableCompression: true,
		// Vendor headers are small (Link, rate-limit headers); Go's 10 MiB
		// default only makes a misbehaving vendor more expensive.
		MaxResponseHeaderBytes: 1 << 20,
	}
}
