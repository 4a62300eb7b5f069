package inject

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/credproxy/internal/routes"
)

func cred(t *testing.T, s string) creddb.Credential {
	t.Helper()
	c, err := creddb.DecodeCredential([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSelect(t *testing.T) {
	def := routes.Route{AuthHeader: "Authorization", AuthPrefix: "Bearer "}
	custom := routes.Route{AuthHeader: "PRIVATE-TOKEN", AuthPrefix: ""}
	dyn := routes.Route{AuthHeader: "dynamic", AuthPrefix: "Bearer "}
	for _, c := range []struct {
		data      string
		r         routes.Route
		hdr, val  string
		beta      string
		oauth, ok bool
	}{
		{`{"type":"oauth","access_token":"A"}`, custom, "Authorization", "Bearer A", DefaultBeta, true, true},
		{`{"type":"oauth","access_token":"A","beta_header":"b-2"}`, dyn, "Authorization", "Bearer A", "b-2", true, true},
		{`{"type":"oauth","access_token":"A","beta_header":""}`, def, "Authorization", "Bearer A", "", true, true},
		{`{"type":"oauth","access_token":""}`, def, "", "", "", false, false},
		{`{"type":"oauth","token":"T"}`, def, "", "", "", false, false},
		{`{"access_token":"L"}`, custom, "Authorization", "Bearer L", DefaultBeta, true, true},
		{`{"type":"","access_token":"L"}`, custom, "Authorization", "Bearer L", DefaultBeta, true, true},
		{`{"type":null,"access_token":"L"}`, custom, "Authorization", "Bearer L", DefaultBeta, true, true},
		{`{"type":"api_key","key":"K"}`, def, "Authorization", "Bearer K", "", false, true},
		{`{"type":"api_key","key":"K"}`, dyn, "X-Api-Key", "K", "", false, true},
		{`{"type":"api_key","key":"K","access_token":"ignored"}`, custom, "Private-Token", "K", "", false, true},
		{`{"type":"pat","token":"T","key":"K"}`, custom, "Private-Token", "T", "", false, true},
		{`{"type":"pat","token":"","key":"K"}`, def, "Authorization", "Bearer K", "", false, true},
		{`{"type":"other","key":""}`, def, "", "", "", false, false},
		{`{"type":5,"access_token":"A"}`, def, "", "", "", false, false},
		{`{"type":5,"token":"T"}`, def, "Authorization", "Bearer T", "", false, true},
		{`{"type":"pat","token":7}`, def, "", "", "", false, false},
	} {
		in, err := Select(cred(t, c.data), c.r)
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v", c.data, err)
			continue
		}
		if !c.ok {
			continue
		}
		if in.Header != c.hdr || in.Value != c.val || in.Beta != c.beta || in.OAuth != c.oauth {
			t.Errorf("%s on %s: %+v", c.data, c.r.AuthHeader, in)
		}
	}
}

func TestApply(t *testing.T) {
	for _, c := range []struct {
		in        http.Header
		inj       Injection
		wantAuth  string
		wantBeta  []string
		otherKeys []string
	}{
		{http.Header{}, Injection{Header: "Authorization", Value: "Bearer S", Beta: "f1", OAuth: true}, "Bearer S", []string{"f1"}, nil},
		{http.Header{"anthropic-beta": {"x"}, "Anthropic-Beta": {"y"}}, Injection{Header: "Authorization", Value: "Bearer S", Beta: "f1", OAuth: true}, "Bearer S", []string{"y,x,f1"}, nil},
		{http.Header{"ANTHROPIC-BETA": {"a,f1"}}, Injection{Header: "Authorization", Value: "Bearer S", Beta: "f1", OAuth: true}, "Bearer S", []string{"a,f1"}, nil},
		{http.Header{"Anthropic-Beta": {"keep"}}, Injection{Header: "Authorization", Value: "K", OAuth: false, Beta: "ignored"}, "K", []string{"keep"}, nil},
		{http.Header{"authorization": {"old"}, "Authorization": {"old2"}}, Injection{Header: "Authorization", Value: "new"}, "new", nil, nil},
	} {
		h := c.in.Clone()
		c.inj.Apply(h)
		var auths, betas []string
		for k, vs := range h {
			if strings.EqualFold(k, "Authorization") {
				auths = append(auths, vs...)
			}
			if strings.EqualFold(k, "Anthropic-Beta") {
				betas = append(betas, vs...)
			}
		}
		if len(auths) != 1 || auths[0] != c.wantAuth {
			t.Errorf("%v: auth %q", c.in, auths)
		}
		if strings.Join(betas, "|") != strings.Join(c.wantBeta, "|") {
			t.Errorf("%v: beta %q, want %q", c.in, betas, c.wantBeta)
		}
	}
}

func TestValid(t *testing.T) {
	if (Injection{Value: "a\r\nX: y"}).Valid() || (Injection{Value: "ok", Beta: "a\nb"}).Valid() || !(Injection{Value: "ok", Beta: "a,b"}).Valid() {
		t.Error("Valid")
	}
}

func FuzzSelect(f *testing.F) {
	f.Add(`{"type":"oauth","access_token":"A"}`, "dynamic", "Bearer ")
	f.Add(`{"token":"T"}`, "X-H", "")
	f.Add(`{"key":"00"}`, "", "00")
	f.Add(`{"key":"k"}`, "Host", "")
	f.Fuzz(func(t *testing.T, data, header, prefix string) {
		var m map[string]any
		if json.Unmarshal([]byte(data), &m) != nil || m == nil {
			return
		}
		in, err := Select(creddb.Credential(m), routes.Route{AuthHeader: header, AuthPrefix: prefix})
		if err != nil {
			return
		}
		if in.Value == "" || in.Header == "" {
			t.Fatalf("empty injection %+v", in)
		}
		h := http.Header{}
		in.Apply(h)
		if len(h.Values("Anthropic-Beta")) > 1 {
			t.Fatal("two anthropic-beta headers")
		}
	})
}
