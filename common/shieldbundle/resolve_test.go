package shieldbundle

import (
	"strings"
	"testing"
	"time"
)

func TestResolveRequest(t *testing.T) {
	for _, tc := range []struct {
		in    string
		id    string
		force bool
		err   bool
	}{
		{"0123456789abcdef\n", "0123456789abcdef", false, false},
		{"0123456789abcdef force\n", "0123456789abcdef", true, false},
		{"0123456789abcdef", "", false, true},
		{"0123456789abcdef force\nextra\n", "", false, true},
		{"0123456789ABCDEF\n", "", false, true},
		{"0123\n", "", false, true},
		{"0123456789abcdef now\n", "", false, true},
		{"0123456789abcdef force \n", "", false, true},
		{"\n", "", false, true},
	} {
		r, err := ParseResolveRequest([]byte(tc.in))
		if (err != nil) != tc.err || (err == nil && (r.ID != tc.id || r.Force != tc.force)) {
			t.Errorf("%q: %+v %v", tc.in, r, err)
		}
	}
	if _, err := (ResolveRequest{ID: "x"}).Format(); err == nil {
		t.Error("bad id formatted")
	}
}

func FuzzParseResolveRequest(f *testing.F) {
	for _, s := range []string{"0123456789abcdef\n", "0123456789abcdef force\n", "zz\n", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseResolveRequest(data)
		if err != nil {
			return
		}
		out, err := r.Format()
		if err != nil || out != string(data) {
			t.Fatalf("accepted %q renders as %q (%v)", data, out, err)
		}
	})
}

func TestResolveResultAndFeatures(t *testing.T) {
	res := ResolveResult{ID: "0123456789abcdef", Time: time.Unix(1, 0).UTC(), Names: []ResolvedName{{Name: "a.example", Addresses: []string{"198.51.100.1"}, Rcode: "NOERROR"}}}
	b, err := res.Marshal()
	if err != nil || !strings.HasSuffix(string(b), "}\n") {
		t.Fatalf("%s %v", b, err)
	}
	back, err := ParseResolveResult(b)
	if err != nil || back.ID != res.ID || back.Names[0].Addresses[0] != "198.51.100.1" {
		t.Fatalf("%+v %v", back, err)
	}
	for _, bad := range []string{"", "{}", `{"id":"../x"}`, "[1]"} {
		if _, err := ParseResolveResult([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	f := FormatFeatures(42, FeatureResolve)
	if f != "42 resolve\n" || !HasFeature([]byte(f), 42, FeatureResolve) || HasFeature([]byte(f), 43, FeatureResolve) ||
		HasFeature([]byte("42\n"), 42, FeatureResolve) || HasFeature(nil, 42, FeatureResolve) || HasFeature([]byte(f), 42, "other") {
		t.Fatal("features")
	}
}
