package launch

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestTiming(t *testing.T) {
	for _, tt := range []struct {
		name   string
		out    bool
		phases []string
		lines  int
	}{
		{"off: nothing recorded", false, []string{"a", "b"}, 0},
		{"on: one line per phase", true, []string{"pre-start", "podman run -d", "verify"}, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			ctx := context.Background()
			if tt.out {
				ctx = WithTiming(ctx, NewTiming(&buf))
			} else {
				ctx = WithTiming(ctx, NewTiming(nil))
			}
			for _, p := range tt.phases {
				Mark(ctx, p)
			}
			got := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if tt.lines == 0 {
				if buf.Len() != 0 || TimingFrom(ctx) != nil {
					t.Fatalf("timing off wrote %q", buf.String())
				}
				return
			}
			if len(got) != tt.lines {
				t.Fatalf("lines %q", got)
			}
			for i, p := range tt.phases {
				if !strings.HasPrefix(got[i], "timing: "+p+" ") || !strings.Contains(got[i], " ms") || !strings.Contains(got[i], " cpu ") {
					t.Fatalf("line %d %q", i, got[i])
				}
			}
		})
	}
}
