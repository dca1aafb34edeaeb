package main

import (
	"maps"
	"math"
	"strings"
	"testing"
)

// dumpHead is the start of a callgrind dump as callgrind_control -d writes
// it (valgrind 3.19), its totals: line at the end.
const dumpHead = `# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 3431
cmd:  ./pb bare -addr 127.0.0.1:18102
part: 1

desc: Trigger: dump

positions: line
events: Ir
`

func TestCallgrindEvents(t *testing.T) {
	cacheHead := strings.Replace(dumpHead, "events: Ir", "events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw", 1)
	for _, tc := range []struct {
		name, dump string
		want       map[string]int64
		wantErr    bool
	}{
		{"summary", dumpHead + "summary: 3783189\n\nob=(3) /usr/lib/ld.so\nfn=(1) f\n564 9\n\ntotals: 3783189\n", map[string]int64{"Ir": 3783189}, false},
		{"summary first", dumpHead + "summary: 12\n\nfn=(1) f\n1 12\ntotals: 99\n", map[string]int64{"Ir": 12}, false},
		{"totals only", dumpHead + "fn=(1) f\n1 7\n\ntotals: 7\n", map[string]int64{"Ir": 7}, false},
		{"cache simulation", cacheHead + "summary: 9 8 7 6 5 4 3 2 1\n",
			map[string]int64{"Ir": 9, "Dr": 8, "Dw": 7, "I1mr": 6, "D1mr": 5, "D1mw": 4, "ILmr": 3, "DLmr": 2, "DLmw": 1}, false},
		{"Ir not first", strings.Replace(dumpHead, "events: Ir", "events: Dr Ir", 1) + "summary: 5 6\n", map[string]int64{"Dr": 5, "Ir": 6}, false},
		{"neither", dumpHead + "fn=(1) f\n1 7\n", nil, true},
		{"no Ir", strings.Replace(dumpHead, "events: Ir", "events: Dr", 1) + "summary: 5\n", nil, true},
		{"a count short", cacheHead + "summary: 9 8 7\n", nil, true},
		{"not a number", dumpHead + "summary: lots\n", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := callgrindEvents(strings.NewReader(tc.dump))
			if (err != nil) != tc.wantErr || !maps.Equal(got, tc.want) {
				t.Fatalf("callgrindEvents = %v, %v; want %v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestFuncName(t *testing.T) {
	for entry, want := range map[string]string{
		"/go/src/net/textproto/reader.go:net/textproto.readMIMEHeader [/tmp/pb]": "net/textproto.readMIMEHeader",
		"/go/src/runtime/select.go:runtime.selectgo'2 [/tmp/pb]":                 "runtime.selectgo",
		// Lines of code inlined into a function carry the inlined file, and
		// no object.
		"/go/src/runtime/chan.go:runtime.selectgo'12":                           "runtime.selectgo",
		"/go/src/net/http/server.go:net/http.(*conn).serve [/tmp/instr-exp/pb]": "net/http.(*conn).serve",
		// A generic's shape in brackets is part of its name.
		"/go/src/slices/sort.go:slices.Sort[go.shape.[]int] [/bin/broker]":            "slices.Sort[go.shape.[]int]",
		"/go/src/sync/atomic/type.go:sync/atomic.(*Pointer[go.shape.struct {}]).Load": "sync/atomic.(*Pointer[go.shape.struct {}]).Load",
		"/go/src/p/p.go:p.F[go.shape.struct { A [2]int }]":                            "p.F[go.shape.struct { A [2]int }]",
		"???:indexbytebody [/tmp/pb]":                                                 "indexbytebody",
		"???:0x000000000040a1b2":                                                      "0x000000000040a1b2",
		"./elf/dl-tls.c:_dl_allocate_tls_init [/usr/lib/ld-linux-x86-64.so.2]":        "_dl_allocate_tls_init",
		"???:f'x": "f'x",
	} {
		if got := funcName(entry); got != want {
			t.Errorf("funcName(%q) = %q, want %q", entry, got, want)
		}
	}
}

// annotated is callgrind_annotate --tree=none --threshold=100 --auto=no
// output, shortened.
const annotated = `--------------------------------------------------------------------------------
Profile data file 'bare.callgrind' (creator: callgrind-3.19.0)
--------------------------------------------------------------------------------
Events recorded:  Ir
Thresholds:       100
Auto-annotation:  off

--------------------------------------------------------------------------------
Ir                 
--------------------------------------------------------------------------------
3,783,189 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                file:function
--------------------------------------------------------------------------------
244,600 ( 6.47%)  /go/src/net/textproto/reader.go:net/textproto.CanonicalMIMEHeaderKey [/tmp/pb]
 54,894 ( 1.45%)  /go/src/runtime/select.go:runtime.selectgo [/tmp/pb]
 26,593 ( 0.70%)  /go/src/runtime/select.go:runtime.selectgo'2 [/tmp/pb]
  1,905 ( 0.05%)  /go/src/runtime/runtime2.go:runtime.selectgo'2
      7 ( 0.00%)  ???:indexbytebody [/tmp/pb]
`

func TestSelfCosts(t *testing.T) {
	got, err := selfCosts(strings.NewReader(annotated))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{
		"net/textproto.CanonicalMIMEHeaderKey": 244600,
		"runtime.selectgo":                     54894 + 26593 + 1905,
		"indexbytebody":                        7,
	}
	if len(got) != len(want) {
		t.Errorf("selfCosts = %v, want %v", got, want)
	}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("selfCosts[%q] = %d, want %d", name, got[name], v)
		}
	}
	// The program total above the table is not a function.
	if _, ok := got["PROGRAM TOTALS"]; ok {
		t.Error("PROGRAM TOTALS counted as a function")
	}
	if _, err := selfCosts(strings.NewReader("3,783,189 (100.0%)  PROGRAM TOTALS\n")); err == nil {
		t.Error("output without a file:function table: no error")
	}
}

func TestCostDiff(t *testing.T) {
	broker := map[string]int64{"sha256": 600, "readMIMEHeader": 700, "selectgo": 500, "log": 300}
	bare := map[string]int64{"readMIMEHeader": 300, "selectgo": 500, "ReverseProxy.ServeHTTP": 200}
	// 100 broker requests, 50 bare ones: per request the broker's
	// readMIMEHeader is 7 and the bare's 6.
	top, total := costDiff(broker, bare, 100, 50, 3)
	want := []fnDiff{
		{name: "sha256", a: 6, b: 0, diff: 6},
		{name: "log", a: 3, b: 0, diff: 3},
		{name: "readMIMEHeader", a: 7, b: 6, diff: 1},
	}
	if len(top) != len(want) {
		t.Fatalf("costDiff = %+v, want %+v", top, want)
	}
	for i := range want {
		if top[i] != want[i] {
			t.Errorf("costDiff[%d] = %+v, want %+v", i, top[i], want[i])
		}
	}
	// 2100/100 - 1000/50: the functions left out (selectgo -5, the bare's
	// own ServeHTTP -4) are in it.
	if math.Abs(total-1) > 1e-9 {
		t.Errorf("total difference = %v, want 1", total)
	}
	all, _ := costDiff(broker, bare, 100, 50, 100)
	if len(all) != 5 || all[4].name != "selectgo" || all[4].diff != -5 || all[3].name != "ReverseProxy.ServeHTTP" || all[3].diff != -4 {
		t.Errorf("costDiff with room for all = %+v, want every function of both, least last", all)
	}
}
