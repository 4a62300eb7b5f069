package podmaninfo

import "testing"

func TestParseVersion(t *testing.T) {
	tests := map[string]Version{
		"5.6.0-rc1": {5, 6, 0}, "4.3.1": {4, 3, 1}, "5": {5, 0, 0}, "": {0, 0, 0},
		"v5.1": {0, 0, 0}, "5.x.3": {5, 0, 0}, "10.20.30.40": {10, 20, 30}, "4.9-dev": {4, 9, 0},
	}
	for in, want := range tests {
		if got := ParseVersion(in); got != want {
			t.Errorf("ParseVersion(%q) = %v, want %v", in, got, want)
		}
	}
	if !(Version{4, 3, 1}).Less(Version{5, 0, 0}) || (Version{5, 0, 0}).Less(Version{5, 0, 0}) {
		t.Error("Less wrong")
	}
}

func TestNetworkMode(t *testing.T) {
	tests := []struct {
		json string
		want string
	}{
		{`{"version":{"Version":"5.0.0"},"host":{"rootlessNetworkCmd":"pasta","slirp4netns":{"executable":"/usr/bin/slirp4netns"}}}`, Pasta},
		{`{"host":{"rootlessNetworkCmd":"slirp4netns"}}`, Slirp4netns},
		{`{"host":{"slirp4netns":{"executable":"/usr/bin/slirp4netns"}}}`, Slirp4netns},
		{`{"host":{"rootlessNetworkCmd":"other"}}`, Pasta},
		{`not json`, Pasta},
	}
	for _, tc := range tests {
		if got := Parse([]byte(tc.json)).NetworkMode(); got != tc.want {
			t.Errorf("%s: mode %s, want %s", tc.json, got, tc.want)
		}
	}
	i := Parse([]byte(`{"version":{"Version":"4.3.1"}}`))
	if !i.OK || i.Version != (Version{4, 3, 1}) {
		t.Errorf("Parse = %+v", i)
	}
	if Parse([]byte(`[]`)).OK {
		t.Error("invalid info reported OK")
	}
}

func TestHostLoopbackArgs(t *testing.T) {
	s := HostLoopbackArgs(Slirp4netns)
	if len(s) != 4 || s[1] != "slirp4netns:allow_host_loopback=true" || s[3] != "host.containers.internal:10.0.2.2" {
		t.Errorf("slirp args %q", s)
	}
	p := HostLoopbackArgs(Pasta)
	if len(p) != 4 || p[1] != "pasta:--map-host-loopback,169.254.1.2" || p[3] != "host.containers.internal:169.254.1.2" {
		t.Errorf("pasta args %q", p)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"version":{"Version":"4.3.1"},"host":{"rootlessNetworkCmd":"pasta"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		i := Parse(data)
		if m := i.NetworkMode(); m != Pasta && m != Slirp4netns {
			t.Fatalf("mode %q", m)
		}
	})
}
