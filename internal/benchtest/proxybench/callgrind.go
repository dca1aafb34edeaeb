package main

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// callgrindEvents reads a callgrind dump's event counts by name (Ir, and
// with --cache-sim=yes I1mr, D1mr, D1mw, ILmr, DLmr, DLmw and the rest):
// its summary: line, or its totals: line when it has none. Ir, the
// instruction count, must be among them.
func callgrindEvents(r io.Reader) (map[string]int64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var names []string
	var summary, totals string
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "events: "); ok {
			names = strings.Fields(v)
		}
		if v, ok := strings.CutPrefix(line, "summary: "); ok && summary == "" {
			summary = v
		}
		if v, ok := strings.CutPrefix(line, "totals: "); ok {
			totals = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !slices.Contains(names, "Ir") {
		return nil, fmt.Errorf("callgrind dump counts %q, not Ir", names)
	}
	counts := cmp.Or(summary, totals)
	if counts == "" {
		return nil, fmt.Errorf("callgrind dump has no summary: or totals: line")
	}
	f := strings.Fields(counts)
	if len(f) != len(names) {
		return nil, fmt.Errorf("callgrind dump: %d counts for %d events", len(f), len(names))
	}
	ev := make(map[string]int64, len(names))
	for i, name := range names {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("callgrind dump: %s: %w", name, err)
		}
		ev[name] = n
	}
	return ev, nil
}

// selfCosts reads the per-function self cost (Ir) that
// `callgrind_annotate --tree=none` prints, one line a function:
//
//	244,600 ( 6.47%)  /usr/lib/go/src/net/textproto/reader.go:net/textproto.CanonicalMIMEHeaderKey [/tmp/pb]
//
// under a file:function header. Names are normalised (funcName), and the
// lines that normalise alike (a function's recursion levels, the files of
// code inlined into it) are summed.
func selfCosts(r io.Reader) (map[string]int64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	costs := map[string]int64{}
	inTable := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasSuffix(strings.TrimSpace(line), "file:function") {
			inTable = true
			continue
		}
		if !inTable {
			continue
		}
		count, rest, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.ReplaceAll(count, ",", ""), 10, 64)
		if err != nil {
			continue // a rule or a blank line
		}
		// Past the percentage in parentheses.
		_, name, ok := strings.Cut(rest, ")")
		if !ok {
			return nil, fmt.Errorf("callgrind_annotate: unexpected line %q", line)
		}
		costs[funcName(strings.TrimSpace(name))] += n
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !inTable {
		return nil, fmt.Errorf("callgrind_annotate: no file:function table")
	}
	return costs, nil
}

// funcName is a callgrind_annotate entry's function: without the source
// file before the first colon, the object file in brackets after it (an
// absolute path, so that a generic's [go.shape…] stays), and the 'N that
// marks a recursion level.
func funcName(entry string) string {
	if i := strings.LastIndex(entry, " ["); i >= 0 && strings.HasPrefix(entry[i+2:], "/") && strings.HasSuffix(entry, "]") {
		entry = entry[:i]
	}
	if _, fn, ok := strings.Cut(entry, ":"); ok {
		entry = fn
	}
	if i := strings.LastIndexByte(entry, '\''); i >= 0 && i+1 < len(entry) {
		if _, err := strconv.Atoi(entry[i+1:]); err == nil {
			entry = entry[:i]
		}
	}
	return entry
}

// fnDiff is one function's self cost per request in two programs, a and
// b, and a's cost less b's.
type fnDiff struct {
	name       string
	a, b, diff float64
}

// costDiff lists the top functions by how much more they cost per request
// in a (over na requests) than in b (over nb requests), most first, and
// the whole difference, of which the listed ones are a part.
func costDiff(a, b map[string]int64, na, nb, top int) ([]fnDiff, float64) {
	var all []fnDiff
	var sumA, sumB int64
	for name, v := range a {
		sumA += v
		all = append(all, fnDiff{name: name, a: float64(v) / float64(na), b: float64(b[name]) / float64(nb)})
	}
	for name, v := range b {
		sumB += v
		if _, ok := a[name]; !ok {
			all = append(all, fnDiff{name: name, b: float64(v) / float64(nb)})
		}
	}
	for i := range all {
		all[i].diff = all[i].a - all[i].b
	}
	slices.SortFunc(all, func(x, y fnDiff) int {
		return cmp.Or(cmp.Compare(y.diff, x.diff), strings.Compare(x.name, y.name))
	})
	return all[:min(top, len(all))], float64(sumA)/float64(na) - float64(sumB)/float64(nb)
}
