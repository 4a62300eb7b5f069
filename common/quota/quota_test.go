package quota

import (
	"errors"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"1", 1}, {"1048576", 1 << 20}, {"10B", 10}, {"50MB", 50e6}, {"50mb", 50e6}, {"512KiB", 512 << 10},
		{"1kib", 1024}, {"2GiB", 2 << 30}, {"3TB", 3e12}, {"1TiB", 1 << 40}, {"007", 7},
		{"9223372036854775807", math.MaxInt64}, {"8388607TiB", 8388607 << 40},
	} {
		got, err := ParseSize(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"", "not a positive whole number"},
		{"0", "at least 1"},
		{"0MB", "at least 1"},
		{"-5", "not a positive whole number"},
		{"+5", "not a positive whole number"},
		{"10XB", `unknown unit "XB"`},
		{"1.5GB", "unknown unit"},
		{"10 MB", "unknown unit"},
		{"MB", "not a positive whole number"},
		{"9223372036854775808", "too large"},
		{"8388608TiB", "too large"},
		{"99999999999999999999GB", "too large"},
		{"1e6", "unknown unit"},
	} {
		_, err := ParseSize(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "e.g.") {
			t.Errorf("ParseSize(%q) error %v, want %q with an example", c.in, err, c.want)
		}
	}
}

func TestParseCount(t *testing.T) {
	if n, err := ParseCount("1000"); err != nil || n != 1000 {
		t.Errorf("ParseCount(1000) = %d, %v", n, err)
	}
	for _, in := range []string{"", "0", "-1", "1k", "1.0", " 1", "9223372036854775808"} {
		if _, err := ParseCount(in); err == nil || !strings.Contains(err.Error(), CountExample) {
			t.Errorf("ParseCount(%q) error %v, want one with the example", in, err)
		}
	}
}

func TestCheck(t *testing.T) {
	s, err := Check(int64(10), nil, int64(3), int64(0), int64(1700000000))
	if err != nil || s.MaxRequests != 10 || s.MaxResponseBytes != 0 || s.UsedRequests != 3 || s.UpdatedAt != 1700000000 {
		t.Fatalf("Check = %+v, %v", s, err)
	}
	for _, c := range []struct {
		name string
		cols [5]any
	}{
		{"no limit", [5]any{nil, nil, int64(0), int64(0), nil}},
		{"zero limit", [5]any{int64(0), nil, int64(0), int64(0), nil}},
		{"negative limit", [5]any{nil, int64(-1), int64(0), int64(0), nil}},
		{"text limit", [5]any{[]byte("10"), nil, int64(0), int64(0), nil}},
		{"real limit", [5]any{float64(10), nil, int64(0), int64(0), nil}},
		{"negative usage", [5]any{int64(1), nil, int64(-1), int64(0), nil}},
		{"null usage", [5]any{int64(1), nil, int64(0), nil, nil}},
	} {
		if _, err := Check(c.cols[0], c.cols[1], c.cols[2], c.cols[3], c.cols[4]); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Check error %v, want ErrMalformed", c.name, err)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for in, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1024 (1.0 KiB)", 52428800: "52428800 (50.0 MiB)", 3 << 40: "3298534883328 (3.0 TiB)"} {
		if got := FormatSize(in); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", in, got, want)
		}
	}
}

// sizeRef is the documented grammar, written independently: digits, then
// an optional unit from the list, case-insensitive; the value is computed
// with big integers and must be 1..MaxInt64.
var sizeRef = regexp.MustCompile(`^([0-9]+)((?i:b|kb|mb|gb|tb|kib|mib|gib|tib))?$`)

func refSize(s string) (int64, bool) {
	m := sizeRef.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	n, _ := new(big.Int).SetString(m[1], 10)
	mult := map[string]int64{"": 1, "b": 1, "kb": 1000, "mb": 1000000, "gb": 1000000000, "tb": 1000000000000,
		"kib": 1024, "mib": 1024 * 1024, "gib": 1024 * 1024 * 1024, "tib": 1024 * 1024 * 1024 * 1024}[strings.ToLower(m[2])]
	n.Mul(n, big.NewInt(mult))
	if n.Sign() <= 0 || !n.IsInt64() {
		return 0, false
	}
	return n.Int64(), true
}

// FuzzParseSize: ParseSize agrees with the reference on every input, and
// every refusal carries an example.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1", "50MB", "512KiB", "10XB", "0", "-1", "9223372036854775807", "8388608TiB", "1.5GB", "", "Gib"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseSize(s)
		want, ok := refSize(s)
		if ok != (err == nil) || (ok && got != want) {
			t.Fatalf("ParseSize(%q) = %d, %v; reference %d, %v", s, got, err, want, ok)
		}
		if err != nil && !strings.Contains(err.Error(), SizeExample) {
			t.Fatalf("ParseSize(%q) error without the example: %v", s, err)
		}
	})
}

// FuzzParseCount: ParseCount accepts exactly the digit strings whose value
// is 1..MaxInt64 (strconv as the reference), with the example on refusal.
func FuzzParseCount(f *testing.F) {
	for _, s := range []string{"1", "1000", "0", "-1", "+1", "1k", "9223372036854775807", "9223372036854775808", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseCount(s)
		want, perr := strconv.ParseInt(s, 10, 64)
		ok := perr == nil && want > 0 && regexp.MustCompile(`^[0-9]+$`).MatchString(s)
		if ok != (err == nil) || (ok && got != want) {
			t.Fatalf("ParseCount(%q) = %d, %v; reference %d, %v", s, got, err, want, ok)
		}
		if err != nil && !strings.Contains(err.Error(), CountExample) {
			t.Fatalf("ParseCount(%q) error without the example: %v", s, err)
		}
	})
}
