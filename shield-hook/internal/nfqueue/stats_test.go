package nfqueue

import "testing"

func TestParseStats(t *testing.T) {
	table := []byte("  7  12345     3 2   128     9    2       41  1\n" +
		"100 4242 64 2 128 18446744073709551615 0 9 1\n" +
		"garbage line\n" +
		"101 1 0 2 128 x 0 0 1\n")
	for _, tt := range []struct {
		num  uint16
		want uint64
		ok   bool
	}{
		{7, 11, true},
		{100, 18446744073709551615, true},
		{101, 0, false},
		{5, 0, false},
	} {
		if got, ok := ParseStats(table, tt.num); got != tt.want || ok != tt.ok {
			t.Errorf("queue %d: %d %v, want %d %v", tt.num, got, ok, tt.want, tt.ok)
		}
	}
}

// FuzzParseStats: any table parses without a panic.
func FuzzParseStats(f *testing.F) {
	f.Add([]byte("100 4242 64 2 128 5 1 9 1\n"), uint16(100))
	f.Fuzz(func(t *testing.T, b []byte, num uint16) {
		ParseStats(b, num)
	})
}
