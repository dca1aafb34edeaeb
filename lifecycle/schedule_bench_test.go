package lifecycle

import (
	"github.com/tokenbroker/tokenbroker/broker"

	"fmt"
	"testing"
	"time"
)

// BenchmarkSchedule reschedules one connection among n already scheduled
// and pops what is due, the refresher's work per refresh. The cost should
// grow with log n (a heap), not n: compare ns/op across the sizes.
//
//	go test ./broker -run '^$' -bench Schedule
func BenchmarkSchedule(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			s := newSchedule()
			base := time.Unix(1_900_000_000, 0)
			keys := make([]broker.Key, n)
			for i := range keys {
				keys[i] = broker.Key{Account: fmt.Sprintf("a%d", i%1000), Vendor: "servicenow", UserID: fmt.Sprint(i)}
				s.schedule(keys[i], base.Add(time.Duration(i)*time.Second))
			}
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				// The earliest connection is refreshed and goes to the back.
				k := keys[i%n]
				due, _ := s.popDue(base.Add(time.Duration(i) * time.Second))
				if len(due) == 0 {
					b.Fatalf("nothing due at step %d", i)
				}
				s.schedule(k, base.Add(time.Duration(n+i)*time.Second))
				i++
			}
		})
	}
}
