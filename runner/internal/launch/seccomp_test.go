package launch

import (
	"strings"
	"testing"
)

func TestArgsSeccompProfile(t *testing.T) {
	for _, c := range []struct {
		name string
		p    Params
		want string
	}{
		{"restricted", Params{Name: "c", Image: "i", SeccompProfile: "/etc/terok/sandbox/seccomp.json"},
			"run -d --security-opt no-new-privileges --security-opt seccomp=/etc/terok/sandbox/seccomp.json --name c -w /workspace i"},
		{"unrestricted keeps the profile", Params{Name: "c", Image: "i", Unrestricted: true, SeccompProfile: "/p.json"},
			"run -d --security-opt seccomp=/p.json --name c -w /workspace i"},
		{"rootless", Params{Name: "c", Image: "i", Rootless: true, SeccompProfile: "/p.json", FirewallArgs: []string{"--network", "none"}},
			"run -d --userns=keep-id:uid=1000,gid=1000 --security-opt no-new-privileges --security-opt seccomp=/p.json --network none --name c -w /workspace i"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := strings.Join(Args(c.p), " "); got != c.want {
				t.Fatalf("Args:\n%s\nwant\n%s", got, c.want)
			}
		})
	}
}

func TestValidateRefusesSeccompOverride(t *testing.T) {
	for _, c := range []struct {
		extra []string
		bad   bool
	}{
		{[]string{"--security-opt", "seccomp=unconfined"}, true},
		{[]string{"--security-opt=seccomp=/tmp/mine.json"}, true},
		{[]string{"--security-opt", "seccomp:unconfined"}, true},
		{[]string{"--privileged"}, true},
		{[]string{"--privileged=true"}, true},
		{[]string{"--privileged=false"}, false},
		{[]string{"--security-opt", "label=type:container_t"}, false},
		{[]string{"--cap-drop", "ALL"}, false},
		{nil, false},
	} {
		err := Params{Name: "c", Image: "i", ExtraArgs: c.extra}.Validate()
		if (err != nil) != c.bad {
			t.Errorf("extra %q: %v (want refused=%v)", c.extra, err, c.bad)
		}
		if err != nil && !strings.Contains(err.Error(), "seccomp") {
			t.Errorf("extra %q: error does not say why: %v", c.extra, err)
		}
	}
}
