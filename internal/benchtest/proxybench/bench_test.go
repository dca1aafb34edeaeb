package main

import (
	"testing"
	"time"
)

func TestEveryTargetGetsTheCallersRequestByDefault(t *testing.T) {
	s := &servers{bare: 1, broker: 2}
	for _, tg := range goTargets(options{}, s, "jwt") {
		if tg.auth != "Bearer jwt" {
			t.Errorf("%s gets %q, want the caller's JWT", tg.name, tg.auth)
		}
	}
	if got := floorAuth(options{staticFloor: true}, "jwt"); got != "Bearer static-token" {
		t.Errorf("-same-request=false: the floor gets %q", got)
	}
}

func TestMedianTakesEachFigureOnItsOwn(t *testing.T) {
	m := median([]wrkResult{
		{rps: 3, p99: 1 * time.Millisecond, user: 30e-6, sys: 1e-6, errors: 1},
		{rps: 1, p99: 3 * time.Millisecond, user: 10e-6, sys: 3e-6},
		{rps: 2, p99: 2 * time.Millisecond, user: 20e-6, sys: 2e-6, errors: 2},
	})
	if m.rps != 2 || m.p99 != 2*time.Millisecond || m.user != 20e-6 || m.sys != 2e-6 || m.errors != 3 {
		t.Errorf("median = %+v", m)
	}
}
