package hook

import (
	"slices"
	"strings"
	"testing"

	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/shield-hook/internal/resolver"
)

// resolverEnv passes the container's name and, when the annotations carry
// valid ones, its project and task; an invalid id is dropped, an inherited
// value never stands in.
func TestResolverEnvIDs(t *testing.T) {
	t.Setenv(resolver.EnvProject, "inherited")
	tests := []struct {
		name string
		ann  map[string]string
		want []string
		not  []string
	}{
		{"ids", map[string]string{shieldbundle.AnnName: "c1", shieldbundle.AnnProject: "demo", shieldbundle.AnnTask: "t1"},
			[]string{resolver.EnvContainer + "=c1", resolver.EnvProject + "=demo", resolver.EnvTask + "=t1"}, nil},
		{"none", map[string]string{shieldbundle.AnnName: "c1"},
			[]string{resolver.EnvContainer + "=c1"}, []string{resolver.EnvProject + "=", resolver.EnvTask + "="}},
		{"invalid dropped", map[string]string{shieldbundle.AnnName: "c1", shieldbundle.AnnProject: "../x", shieldbundle.AnnTask: "a b"},
			nil, []string{resolver.EnvProject + "=", resolver.EnvTask + "="}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := resolverEnv(tt.ann)
			for _, w := range tt.want {
				if !slices.Contains(env, w) {
					t.Errorf("%q missing", w)
				}
			}
			for _, n := range tt.not {
				for _, kv := range env {
					if strings.HasPrefix(kv, n) {
						t.Errorf("%q passed", kv)
					}
				}
			}
		})
	}
}
