package launch

import (
	"strings"
	"testing"
)

// TestValidateRefusesHardeningUndo: every form of an extra argument that
// undoes part of the hardening is refused with the argument in the error;
// look-alikes that do not are accepted.
func TestValidateRefusesHardeningUndo(t *testing.T) {
	cases := []struct {
		name  string
		extra []string
		want  string // "" = accepted; else a part of the error
	}{
		{"cap-add NET_ADMIN", []string{"--cap-add", "NET_ADMIN"}, `"--cap-add NET_ADMIN": capability NET_ADMIN`},
		{"cap-add= net_raw lower case", []string{"--cap-add=net_raw"}, "capability NET_RAW"},
		{"cap-add CAP_ prefix", []string{"--cap-add=CAP_SYS_ADMIN"}, "capability SYS_ADMIN"},
		{"cap-add all", []string{"--cap-add", "all"}, "capability ALL"},
		{"cap-add comma list", []string{"--cap-add", "CHOWN, Net_Admin"}, "capability NET_ADMIN"},
		{"cap-add sys_module", []string{"--cap-add=SYS_MODULE"}, "capability SYS_MODULE"},
		{"cap-add harmless", []string{"--cap-add", "CHOWN,FOWNER", "--cap-add=SETUID"}, ""},
		{"cap-drop ALL", []string{"--cap-drop", "ALL"}, ""},
		{"network", []string{"--network", "host"}, "chooses the network"},
		{"network=", []string{"--network=slirp4netns"}, "chooses the network"},
		{"net", []string{"--net=host"}, "chooses the network"},
		{"network-alias is another flag", []string{"--network-alias", "x"}, ""},
		{"userns", []string{"--userns", "host"}, "user namespace"},
		{"userns=", []string{"--userns=keep-id"}, "user namespace"},
		{"pid host", []string{"--pid=host"}, "host namespace"},
		{"pid HOST", []string{"--pid", "HOST"}, "host namespace"},
		{"pid ns path", []string{"--pid=ns:/proc/1/ns/pid"}, "host namespace"},
		{"pid private", []string{"--pid=private"}, ""},
		{"ipc host", []string{"--ipc", "host"}, "host namespace"},
		{"uts host", []string{"--uts=host"}, "host namespace"},
		{"seccomp", []string{"--security-opt", "seccomp=unconfined"}, "seccomp profile"},
		{"seccomp colon", []string{"--security-opt=seccomp:/tmp/p.json"}, "seccomp profile"},
		{"apparmor unconfined", []string{"--security-opt", "apparmor=unconfined"}, "AppArmor"},
		{"apparmor colon", []string{"--security-opt", "apparmor:Unconfined"}, "AppArmor"},
		{"apparmor profile", []string{"--security-opt", "apparmor=my-profile"}, ""},
		{"label disable", []string{"--security-opt", "label=disable"}, "SELinux"},
		{"label colon", []string{"--security-opt=label:disable"}, "SELinux"},
		{"label type", []string{"--security-opt", "label=type:container_t"}, ""},
		{"no-new-privileges false", []string{"--security-opt", "no-new-privileges=false"}, "setuid"},
		{"no-new-privileges colon", []string{"--security-opt", "no-new-privileges:false"}, "setuid"},
		{"no-new-privileges true", []string{"--security-opt", "no-new-privileges=true"}, ""},
		{"no-new-privileges bare", []string{"--security-opt", "no-new-privileges"}, ""},
		{"unmask", []string{"--security-opt", "unmask=ALL"}, "masks"},
		{"mask", []string{"--security-opt", "mask=/proc/foo"}, ""},
		{"privileged", []string{"--privileged"}, "--privileged"},
		{"privileged=true", []string{"--privileged=true"}, "--privileged"},
		{"privileged=false", []string{"--privileged=false"}, ""},
		{"device vsock", []string{"--device", "/dev/vsock"}, "vsock"},
		{"device vsock mapped", []string{"--device=/dev/vsock:/dev/x:rwm"}, "vsock"},
		{"device vsock unclean", []string{"--device", "/dev//./vsock"}, "vsock"},
		{"device vhost-vsock", []string{"--device", "/dev/vhost-vsock"}, "vsock"},
		{"device fuse", []string{"--device", "/dev/fuse"}, ""},
		{"annotation shield", []string{"--annotation", "terok.shield.profiles=dev"}, "terok.shield.* annotations"},
		{"annotation= shield case", []string{"--annotation=Terok.Shield.state_dir=/tmp"}, "terok.shield.* annotations"},
		{"annotation other", []string{"--annotation", "io.example=1"}, ""},
		{"later refusal after harmless", []string{"--cap-add", "CHOWN", "--tmpfs", "/run", "--network", "none"}, "chooses the network"},
		{"flag at the end without value", []string{"--cap-add"}, ""},
		{"value that looks like a flag is judged", []string{"-e", "--privileged"}, "--privileged"},
		{"none", nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Params{Name: "c", Image: "i", ExtraArgs: c.extra}.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("extra %q refused: %v", c.extra, err)
			case c.want != "" && err == nil:
				t.Fatalf("extra %q accepted, want refusal with %q", c.extra, c.want)
			case c.want != "" && !strings.Contains(err.Error(), c.want):
				t.Fatalf("extra %q: error %q lacks %q", c.extra, err, c.want)
			case err != nil && !strings.Contains(err.Error(), "remove it"):
				t.Fatalf("error names no fix: %v", err)
			}
		})
	}
}

// FuzzValidateExtraArgs: whatever the extra arguments (one per line),
// Validate does not panic, and an accepted list holds none of the refused
// flags in its plainest spelling.
func FuzzValidateExtraArgs(f *testing.F) {
	for _, s := range []string{"--cap-add\nNET_ADMIN", "--cap-add=chown", "-itv\n/:/h", "--mount\ntype=bind,src=/", "--security-opt\nlabel:disable",
		"--device=/dev/vsock:/dev/x", "-e\n--privileged", "--annotation\nterok.shield.x=1", "--pid\nhost", "-v"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		extra := strings.Split(in, "\n")
		err := Params{Name: "c", Image: "i", ExtraArgs: extra, ShieldStateDir: "/nonexistent-terok-fuzz/task/shield"}.Validate()
		if err != nil {
			return
		}
		for i, a := range extra {
			switch {
			case a == "--privileged", a == "--network", strings.HasPrefix(a, "--network="), strings.HasPrefix(a, "--net="), a == "--net",
				a == "--userns", strings.HasPrefix(a, "--userns="), a == "--cap-add=ALL", a == "--cap-add=NET_ADMIN",
				a == "--security-opt=seccomp=unconfined", strings.HasPrefix(a, "--annotation=terok.shield."):
				t.Fatalf("accepted %q (element %d of %q)", a, i, extra)
			}
		}
	})
}
