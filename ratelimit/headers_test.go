package ratelimit

import (
	"net/http"
	"testing"
	"time"
)

var now = time.Date(2026, 12, 2, 13, 0, 0, 0, time.UTC)

func TestRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"5", 5 * time.Second, true},
		{" 5 ", 5 * time.Second, true},
		{"0", 0, true},
		{"1.5", 1500 * time.Millisecond, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{"Wednesday, 02-Dec-26 13:01:00 GMT", time.Minute, true}, // RFC 850
		{"Wed Dec  2 13:02:00 2026", 2 * time.Minute, true},      // ANSI C
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},   // past: go on
		{"99999999999999999999999", 1<<63 - 1, true},             // saturates; callers clamp
		// hostile or malformed
		{"", 0, false},
		{"-5", 0, false},
		{"-0.5", 0, false},
		{"+5", 0, false},
		{"5s", 0, false},
		{"1e9", 0, false},
		{"0x10", 0, false},
		{"NaN", 0, false},
		{"Inf", 0, false},
		{"5, 10", 0, false},
		{"tomorrow", 0, false},
		{"1_000", 0, false},
		{string(make([]byte, 100)), 0, false},
	} {
		got, ok := RetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("RetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestParse(t *testing.T) {
	o := ParseOptions{MaxWait: 5 * time.Minute, Headerless: KindInstance}
	for _, tc := range []struct {
		name    string
		status  int
		h       http.Header
		limited bool
		wait    time.Duration
		reason  Reason
		kind    Kind
	}{
		{"ok answer", 200, hdr("Retry-After", "5"), false, 0, 0, 0},
		{"servicenow rule", 429, hdr("Retry-After", "5", "X-RateLimit-Limit", "100", "X-RateLimit-Reset", "1796216400", "X-RateLimit-Rule", "r1"),
			true, 5 * time.Second, ReasonRetryAfter, KindConnection},
		{"huge retry-after clamped", 429, hdr("Retry-After", "86400000"), true, 5 * time.Minute, ReasonRetryAfter, KindConnection},
		{"overflowing retry-after clamped", 429, hdr("Retry-After", "999999999999999999999999999"), true, 5 * time.Minute, ReasonRetryAfter, KindConnection},
		{"far date clamped", 429, hdr("Retry-After", now.AddDate(10, 0, 0).Format(http.TimeFormat)), true, 5 * time.Minute, ReasonRetryAfter, KindConnection},
		{"negative is a backoff", 429, hdr("Retry-After", "-30"), true, 0, ReasonBackoff, KindConnection},
		{"malformed is a backoff", 429, hdr("Retry-After", "soon"), true, 0, ReasonBackoff, KindConnection},
		{"zero is a backoff", 429, hdr("Retry-After", "0"), true, 0, ReasonBackoff, KindConnection},
		{"servicenow semaphore: no headers", 429, hdr("Content-Type", "application/json"), true, 0, ReasonBackoff, KindInstance},
		{"reset epoch, nothing remaining", 429, hdr("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "1796216460"),
			true, time.Unix(1796216460, 0).Sub(now), ReasonReset, KindConnection},
		{"reset ISO 8601 (Atlassian)", 429, hdr("X-RateLimit-Reset", now.Add(40*time.Second).Format(time.RFC3339)),
			true, 40 * time.Second, ReasonReset, KindConnection},
		{"reset with requests remaining is no window", 429, hdr("X-RateLimit-Remaining", "7", "X-RateLimit-Reset", "30"),
			true, 0, ReasonBackoff, KindConnection},
		{"reset in the past is a backoff", 429, hdr("X-RateLimit-Reset", "1000000000"), true, 0, ReasonBackoff, KindConnection},
		{"atlassian tenant quota", 429, hdr("Beta-RateLimit", `"tenant-app-quota";r=0;t=2107`, "X-Beta-RateLimit-Reason", "confluence-quota-tenant-based"),
			true, 5 * time.Minute, ReasonQuota, KindInstance},
		{"atlassian global pool", 429, hdr("Retry-After", "12", "RateLimit", `"global-app-quota";r=0;t=60`, "RateLimit-Reason", "confluence-quota-global-based"),
			true, 12 * time.Second, ReasonRetryAfter, KindApp},
		{"atlassian burst is the connection's", 429, hdr("Retry-After", "2", "RateLimit-Reason", "confluence-burst-based"),
			true, 2 * time.Second, ReasonRetryAfter, KindConnection},
		{"quota item with garbage", 429, hdr("Beta-RateLimit", `"global-app-quota";r=zero;t=-1, ;;;`), true, 0, ReasonBackoff, KindConnection},
		{"503 with retry-after", 503, hdr("Retry-After", "3"), true, 3 * time.Second, ReasonRetryAfter, KindConnection},
		{"503 without is not a limit", 503, hdr(), false, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Parse(tc.status, tc.h, now, o)
			if s.Limited != tc.limited || s.Wait != tc.wait || s.Reason != tc.reason || s.Kind != tc.kind {
				t.Errorf("Parse = limited %v wait %v reason %v kind %v; want %v %v %v %v",
					s.Limited, s.Wait, s.Reason, s.Kind, tc.limited, tc.wait, tc.reason, tc.kind)
			}
		})
	}
}

func TestParsePool(t *testing.T) {
	h := hdr("Beta-RateLimit-Policy", `"global-app-quota";q=65000;w=3600, "tenant-app-quota";q=100100;w=3600`,
		"Beta-RateLimit", `"global-app-quota";r=6500;t=1200, "tenant-app-quota";r=17842;t=2107`)
	s := Parse(200, h, now, ParseOptions{})
	if s.Limited || !s.Pool.Known || s.Pool.Remaining != 6500 || s.Pool.Limit != 65000 {
		t.Fatalf("Parse = %+v; want the global pool 6500 of 65000, not limited", s)
	}
	// Without its policy, the pool's size is unknown: no ratio.
	s = Parse(200, hdr("Beta-RateLimit", `"global-app-quota";r=0;t=1200`), now, ParseOptions{})
	if s.Pool.Known {
		t.Fatalf("pool without a policy: %+v", s.Pool)
	}
}
