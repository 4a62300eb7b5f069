// Package testaddrs generates allowlists for the hook's tests and
// benchmarks (one generator, so the equivalence tests and the benchmarks
// measure the same shape). Only test code imports it.
package testaddrs

import "fmt"

// Allowlist returns n distinct addresses: 3/4 IPv4 single addresses from
// the benchmarking range 198.18.0.0/15, 1/4 IPv6 from 2001:db8::/32. They
// are only set elements: no traffic is ever sent to them.
func Allowlist(n int) []string {
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		if i%4 == 3 {
			out = append(out, fmt.Sprintf("2001:db8:%x::%x", i/256, i%256+1))
		} else {
			out = append(out, fmt.Sprintf("198.%d.%d.%d", 18+i/65536, (i/256)%256, i%256))
		}
	}
	return out
}
