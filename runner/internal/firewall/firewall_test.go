package firewall

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"terok.dev/sandbox/runner/internal/podmaninfo"
)

func TestFailClosedAlwaysRefuses(t *testing.T) {
	args, err := FailClosed{Reason: "shield not built", ConfigFile: "/x/config.toml"}.PreStart(context.Background(), Launch{Container: "c", TaskDir: "/t"})
	if err == nil || args != nil {
		t.Fatalf("FailClosed returned %v, %v", args, err)
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("error does not wrap ErrUnavailable: %v", err)
	}
	for _, want := range []string{"shield not built", "shield_bypass = true in /x/config.toml", "--shield-bypass", "unfiltered egress"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestBypassArgs(t *testing.T) {
	slirp := []string{"--network", "slirp4netns:allow_host_loopback=true", "--add-host", "host.containers.internal:10.0.2.2"}
	pasta := []string{"--network", "pasta:--map-host-loopback,169.254.1.2", "--add-host", "host.containers.internal:169.254.1.2"}
	cases := []struct {
		name    string
		root    bool
		info    podmaninfo.Info
		want    []string
		queried bool
	}{
		{"root uses slirp4netns without asking podman", true, podmaninfo.Info{RootlessNetworkCmd: "pasta"}, slirp, false},
		{"rootless slirp4netns", false, podmaninfo.Info{RootlessNetworkCmd: "slirp4netns"}, slirp, true},
		{"rootless pasta", false, podmaninfo.Info{RootlessNetworkCmd: "pasta"}, pasta, true},
		{"rootless unknown cmd, slirp executable", false, podmaninfo.Info{SlirpExecutable: "/usr/bin/slirp4netns"}, slirp, true},
		{"rootless nothing reported", false, podmaninfo.Info{}, pasta, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			queried := false
			b := Bypass{Out: &out, Root: c.root, Info: func(context.Context) podmaninfo.Info { queried = true; return c.info }}
			got, err := b.PreStart(context.Background(), Launch{Container: "c", TaskDir: "/t"})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("args %q, want %q", got, c.want)
			}
			if queried != c.queried {
				t.Fatalf("queried podman = %v, want %v", queried, c.queried)
			}
			if out.String() != "\n"+Warning+"\n\n" {
				t.Fatalf("warning %q", out.String())
			}
		})
	}
}
