// Package quota holds a phantom token's optional quota (docs/credential-proxy.md,
// Token quotas): at most so many forwarded requests and/or so many response
// body bytes, and the usage counted against them. It parses the command-line
// forms (ParseCount, ParseSize) and checks a stored row (Check).
package quota

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// Limits is what a token may use; 0 means no limit of that kind. The zero
// Limits is no quota at all.
type Limits struct {
	// MaxRequests is the number of requests the proxy forwards.
	MaxRequests int64 `json:"max_requests,omitempty"`
	// MaxResponseBytes is the response body bytes the proxy streams back;
	// the request that crosses it completes, later ones are refused.
	MaxResponseBytes int64 `json:"max_response_bytes,omitempty"`
}

// Set reports whether any limit is set.
func (l Limits) Set() bool { return l.MaxRequests != 0 || l.MaxResponseBytes != 0 }

// Validate refuses negative limits (0 is "no limit of that kind").
func (l Limits) Validate() error {
	if l.MaxRequests < 0 {
		return fmt.Errorf("max_requests %d is negative", l.MaxRequests)
	}
	if l.MaxResponseBytes < 0 {
		return fmt.Errorf("max_response_bytes %d is negative", l.MaxResponseBytes)
	}
	return nil
}

// State is a token's quota row: its limits and the usage the proxy last
// flushed (docs/formats.md, Credentials database).
type State struct {
	Limits
	// UsedRequests and UsedBytes are the stored usage.
	UsedRequests int64 `json:"used_requests"`
	UsedBytes    int64 `json:"used_response_bytes"`
	// UpdatedAt is when the usage was last written, Unix seconds (0: never).
	UpdatedAt int64 `json:"updated_at,omitempty"`
}

// ErrMalformed is wrapped by every Check error.
var ErrMalformed = errors.New("malformed quota")

// Check validates a stored row whose columns arrive as database values
// (int64, or anything else another tool may have written): each limit
// NULL (nil) or a positive integer, at least one of them set, each usage a
// non-negative integer. updatedAt that is not an integer reads as 0.
func Check(maxRequests, maxBytes, usedRequests, usedBytes, updatedAt any) (State, error) {
	var s State
	var err error
	if s.MaxRequests, err = limit("max_requests", maxRequests); err != nil {
		return State{}, err
	}
	if s.MaxResponseBytes, err = limit("max_response_bytes", maxBytes); err != nil {
		return State{}, err
	}
	if !s.Set() {
		return State{}, fmt.Errorf("%w: neither max_requests nor max_response_bytes is set", ErrMalformed)
	}
	if s.UsedRequests, err = used("used_requests", usedRequests); err != nil {
		return State{}, err
	}
	if s.UsedBytes, err = used("used_bytes", usedBytes); err != nil {
		return State{}, err
	}
	s.UpdatedAt, _ = updatedAt.(int64)
	return s, nil
}

func limit(name string, v any) (int64, error) {
	if v == nil {
		return 0, nil
	}
	n, ok := v.(int64)
	if !ok || n < 1 {
		return 0, fmt.Errorf("%w: %s is %s, want NULL or a positive integer", ErrMalformed, name, show(v))
	}
	return n, nil
}

func used(name string, v any) (int64, error) {
	n, ok := v.(int64)
	if !ok || n < 0 {
		return 0, fmt.Errorf("%w: %s is %s, want a non-negative integer", ErrMalformed, name, show(v))
	}
	return n, nil
}

// show renders a column value for an error, short.
func show(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case int64:
		return strconv.FormatInt(x, 10)
	case []byte:
		v = string(x)
	}
	s := fmt.Sprintf("%q", fmt.Sprint(v))
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return s
}

// CountExample and SizeExample are appended to parse errors.
const (
	CountExample = "e.g. --max-requests 1000"
	SizeExample  = "e.g. --max-response-bytes 50MB, 512KiB or 1048576"
)

// ParseCount reads a request count: a positive decimal integer that fits
// in 63 bits, digits only.
func ParseCount(s string) (int64, error) {
	n, err := digits(s)
	if err != nil {
		return 0, fmt.Errorf("%q: %v (%s)", s, err, CountExample)
	}
	return n, nil
}

// units are the size suffixes, matched case-insensitively: SI (powers of
// 1000) and IEC (powers of 1024).
var units = map[string]uint64{
	"b":  1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

// ParseSize reads a byte size: a positive decimal integer, optionally
// followed (without a space) by one of B, KB, MB, GB, TB (powers of 1000)
// or KiB, MiB, GiB, TiB (powers of 1024), in any letter case. The product
// must fit in 63 bits. No fractions, signs, spaces or other units.
func ParseSize(s string) (int64, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	num, unit := s[:i], strings.ToLower(s[i:])
	if num == "" {
		return 0, fmt.Errorf("%q: not a positive whole number of bytes (%s)", s, SizeExample)
	}
	mult := uint64(1)
	if unit != "" {
		m, ok := units[unit]
		if !ok {
			return 0, fmt.Errorf("%q: unknown unit %q (whole numbers only), want B, KB, MB, GB, TB, KiB, MiB, GiB or TiB (%s)", s, s[i:], SizeExample)
		}
		mult = m
	}
	n, err := digits(num)
	if err != nil {
		return 0, fmt.Errorf("%q: %v (%s)", s, err, SizeExample)
	}
	hi, lo := bits.Mul64(uint64(n), mult)
	if hi != 0 || lo > math.MaxInt64 {
		return 0, fmt.Errorf("%q: too large, at most %d bytes (%s)", s, int64(math.MaxInt64), SizeExample)
	}
	return int64(lo), nil
}

// digits parses a positive decimal integer of digits only.
func digits(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("not a positive whole number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a positive whole number")
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("too large, at most %d", int64(math.MaxInt64))
	}
	if n == 0 {
		return 0, errors.New("must be at least 1 (leave the flag out for no limit)")
	}
	return n, nil
}

// FormatSize renders n bytes for people: the exact count, and beside it
// the largest IEC unit it reaches with one decimal ("52428800 (50.0 MiB)").
func FormatSize(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 3; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%d (%.1f %ciB)", n, float64(n)/float64(div), "KMGT"[exp])
}
