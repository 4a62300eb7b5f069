package pushcmd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

const (
	z  = "0000000000000000000000000000000000000000"
	a1 = "1111111111111111111111111111111111111111"
	b2 = "2222222222222222222222222222222222222222"
	s3 = "3333333333333333333333333333333333333333333333333333333333333333"
)

func pkt(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }

func TestRead(t *testing.T) {
	pack := "PACK\x00\x00\x00\x02rest-of-the-pack"
	for _, tc := range []struct {
		name    string
		in      string
		want    []Command
		caps    []string
		shallow int
		err     string
	}{
		{name: "one update", in: pkt(a1+" "+b2+" refs/heads/main\x00report-status side-band-64k agent=git/2.47\n") + "0000" + pack,
			want: []Command{{a1, b2, "refs/heads/main"}}, caps: []string{"report-status", "side-band-64k", "agent=git/2.47"}},
		{name: "create delete no newline", in: pkt(z+" "+a1+" refs/heads/new\x00report-status") + pkt(b2+" "+z+" refs/tags/v1") + "0000",
			want: []Command{{z, a1, "refs/heads/new"}, {b2, z, "refs/tags/v1"}}, caps: []string{"report-status"}},
		{name: "shallow first", in: pkt("shallow "+a1+"\n") + pkt(z+" "+b2+" refs/heads/x\x00\n") + "0000" + pack,
			want: []Command{{z, b2, "refs/heads/x"}}, shallow: 1},
		{name: "sha256", in: pkt(strings.Repeat("0", 64)+" "+s3+" refs/heads/x\x00object-format=sha256\n") + "0000",
			want: []Command{{strings.Repeat("0", 64), s3, "refs/heads/x"}}, caps: []string{"object-format=sha256"}},
		{name: "empty", in: "", err: "ended at byte 0"},
		{name: "flush only", in: "0000" + pack},
		{name: "shallow only", in: pkt("shallow "+a1+"\n") + "0000", err: "without a ref update"},
		{name: "truncated header", in: "00", err: "ended at byte 0"},
		{name: "truncated line", in: pkt(a1 + " " + b2 + " refs/heads/main\n")[:30], err: "ended at byte 4"},
		{name: "no flush", in: pkt(a1 + " " + b2 + " refs/heads/main\n"), err: "ended at byte"},
		{name: "bad length hex", in: "00zz" + a1, err: "bad pkt-line length"},
		{name: "oversized pkt", in: "fff5" + strings.Repeat("x", 10), err: "out of range"},
		{name: "delim", in: "0001", err: "out of range"},
		{name: "bad hex", in: pkt("zz11111111111111111111111111111111111111 "+b2+" refs/heads/main\n") + "0000", err: "bad object id"},
		{name: "upper hex", in: pkt(strings.ToUpper("abababababababababababababababababababab")+" "+b2+" refs/heads/main\n") + "0000", err: "bad object id"},
		{name: "mixed lengths", in: pkt(a1+" "+s3+" refs/heads/main\n") + "0000", err: "bad object id"},
		{name: "both zero", in: pkt(z+" "+z+" refs/heads/main\n") + "0000", err: "both the zero id"},
		{name: "two fields", in: pkt(a1+" "+b2+"\n") + "0000", err: "not \"old new ref\""},
		{name: "not refs/", in: pkt(a1+" "+b2+" HEAD\n") + "0000", err: "does not start with refs/"},
		{name: "dotdot ref", in: pkt(a1+" "+b2+" refs/heads/../x\n") + "0000", err: "contains .."},
		{name: "space in ref", in: pkt(a1+" "+b2+" refs/heads/a b\n") + "0000", err: "forbidden character"},
		{name: "lock ref", in: pkt(a1+" "+b2+" refs/heads/a.lock\n") + "0000", err: ".lock"},
		{name: "twice", in: pkt(a1+" "+b2+" refs/heads/a\n") + pkt(b2+" "+a1+" refs/heads/a\n") + "0000", err: "twice"},
		{name: "caps twice", in: pkt(a1+" "+b2+" refs/heads/a\x00x\n") + pkt(b2+" "+a1+" refs/heads/b\x00y\n") + "0000", err: "capabilities after"},
		{name: "shallow after command", in: pkt(a1+" "+b2+" refs/heads/a\n") + pkt("shallow "+a1+"\n") + "0000", err: "shallow line after"},
		{name: "push cert", in: pkt("push-cert\x00report-status\n") + "0000", err: "push-cert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd := strings.NewReader(tc.in)
			req, err := Read(rd, Limits{})
			if tc.err != "" {
				var pe *Error
				if err == nil || !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want *Error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(req.Commands, tc.want) || len(req.Shallow) != tc.shallow {
				t.Fatalf("commands %+v shallow %v, want %+v", req.Commands, req.Shallow, tc.want)
			}
			if tc.caps != nil && !reflect.DeepEqual(req.Caps, tc.caps) {
				t.Fatalf("caps %q, want %q", req.Caps, tc.caps)
			}
			rest, _ := io.ReadAll(rd)
			if string(req.Raw)+string(rest) != tc.in {
				t.Fatalf("Raw + rest != input: the parser consumed past the flush")
			}
			if !strings.HasSuffix(string(req.Raw), "0000") {
				t.Fatalf("Raw %q does not end with the flush", req.Raw)
			}
		})
	}
}

func TestReadLimits(t *testing.T) {
	var in strings.Builder
	for i := 0; i < 11; i++ {
		in.WriteString(pkt(fmt.Sprintf("%s %s refs/heads/b%d\n", a1, b2, i)))
	}
	in.WriteString("0000")
	if _, err := Read(strings.NewReader(in.String()), Limits{MaxCommands: 10}); err == nil || !strings.Contains(err.Error(), "more than 10 ref updates") {
		t.Fatalf("11 commands with limit 10: %v", err)
	}
	if _, err := Read(strings.NewReader(in.String()), Limits{MaxCommands: 11}); err != nil {
		t.Fatalf("11 commands with limit 11: %v", err)
	}
	if _, err := Read(strings.NewReader(in.String()), Limits{MaxBytes: 300}); err == nil || !strings.Contains(err.Error(), "longer than 300 bytes") {
		t.Fatalf("byte limit: %v", err)
	}
	sh := strings.Repeat(pkt("shallow "+a1+"\n"), 3) + pkt(z+" "+a1+" refs/heads/x\n") + "0000"
	if _, err := Read(strings.NewReader(sh), Limits{MaxShallow: 2}); err == nil || !strings.Contains(err.Error(), "shallow lines") {
		t.Fatalf("shallow limit: %v", err)
	}
}

// A transport error from the body reader (the gate's size or idle limit)
// is passed through, not turned into a format error.
func TestReadTransportError(t *testing.T) {
	boom := errors.New("body too large")
	_, err := Read(io.MultiReader(strings.NewReader("00"), errReader{boom}), Limits{})
	var pe *Error
	if !errors.Is(err, boom) || errors.As(err, &pe) {
		t.Fatalf("err = %v, want the transport error", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestEncodeRoundTrip(t *testing.T) {
	in := pkt("shallow "+a1+"\n") + pkt(z+" "+a1+" refs/heads/new\x00report-status side-band-64k\n") + pkt(b2+" "+z+" refs/heads/old\n") + "0000"
	req, err := Read(strings.NewReader(in), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(req.Encode(req.Caps)); got != in {
		t.Fatalf("Encode(Caps) = %q, want %q", got, in)
	}
	out := req.Encode(append(req.Caps, "atomic"))
	again, err := Read(bytes.NewReader(out), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !again.HasCap("atomic") || !reflect.DeepEqual(again.Commands, req.Commands) || !reflect.DeepEqual(again.Shallow, req.Shallow) {
		t.Fatalf("re-encoded %+v", again)
	}
}

func TestRefusalReport(t *testing.T) {
	for _, caps := range []string{"report-status side-band-64k", "report-status side-band", "report-status-v2", "report-status"} {
		in := pkt(a1+" "+b2+" refs/heads/main\x00"+caps+"\n") + pkt(z+" "+a1+" refs/heads/ok\n") + "0000"
		req, err := Read(strings.NewReader(in), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		out := Refusal(req, "refs/heads/main is protected\nsecond line", map[string]string{"refs/heads/main": "protected-ref\x01x"}, "push refused")
		sb, _ := req.Sideband()
		rep, ok := ParseReport(out, sb)
		if !ok || rep.Unpack != "ok" || rep.Refs["refs/heads/main"] != "protected-ref x" || rep.Refs["refs/heads/ok"] != "push refused" {
			t.Fatalf("%s: report %+v ok=%v from %q", caps, rep, ok, out)
		}
		if sb && !bytes.Contains(out, []byte("\x02refs/heads/main is protected\n")) {
			t.Fatalf("%s: no progress-band message in %q", caps, out)
		}
	}
}

func TestParseReport(t *testing.T) {
	plain := pkt("unpack ok\n") + pkt("ok refs/heads/a\n") + pkt("ng refs/heads/b non-fast-forward\n") + pkt("ng refs/heads/c\n") + "0000"
	rep, ok := ParseReport([]byte(plain), false)
	if !ok || rep.Unpack != "ok" || rep.Refs["refs/heads/a"] != "" || rep.Refs["refs/heads/b"] != "non-fast-forward" || rep.Refs["refs/heads/c"] != "refused" {
		t.Fatalf("plain: %+v %v", rep, ok)
	}
	// Side-band: the report may be split over several band-1 packets
	// with progress (band 2) in between.
	framed := pkt("\x02remote says hi\n") + pkt("\x01"+plain[:20]) + pkt("\x02more\n") + pkt("\x01"+plain[20:]) + "0000"
	if rep, ok := ParseReport([]byte(framed), true); !ok || rep.Refs["refs/heads/b"] != "non-fast-forward" {
		t.Fatalf("framed: %+v %v", rep, ok)
	}
	for _, in := range []string{"", "00", pkt("unpack ok\n"), "zzzz", pkt("ok refs/heads/a\n") + "0000", plain[:len(plain)-6]} {
		if _, ok := ParseReport([]byte(in), false); ok {
			t.Errorf("ParseReport(%q) ok", in)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(pkt(a1+" "+b2+" refs/heads/main\x00report-status side-band-64k\n") + "0000PACK"))
	f.Add([]byte(pkt("shallow "+a1+"\n") + pkt(z+" "+b2+" refs/heads/x\n") + "0000"))
	f.Add([]byte("0000"))
	f.Add([]byte("fff5xxxx"))
	f.Fuzz(func(t *testing.T, in []byte) {
		rd := bytes.NewReader(in)
		req, err := Read(rd, Limits{MaxCommands: 64, MaxBytes: 64 << 10})
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("non-format error %v from an in-memory reader", err)
			}
			return
		}
		rest, _ := io.ReadAll(rd)
		if !bytes.Equal(append(append([]byte(nil), req.Raw...), rest...), in) {
			t.Fatal("Raw + rest is not the input")
		}
		for _, c := range req.Commands {
			if CheckRefName(c.Ref) != nil || !isHexID(c.Old) || !isHexID(c.New) {
				t.Fatalf("accepted bad command %+v", c)
			}
		}
		again, err := Read(bytes.NewReader(req.Encode(req.Caps)), Limits{MaxCommands: 64, MaxBytes: 128 << 10})
		if err != nil || !reflect.DeepEqual(again.Commands, req.Commands) {
			t.Fatalf("re-encoded list does not parse the same: %v", err)
		}
		sb, _ := req.Sideband()
		rep, ok := ParseReport(Refusal(req, "m", nil, "refused"), sb)
		if req.HasCap("report-status") && (!ok || len(rep.Refs) != len(req.Commands)) {
			t.Fatalf("refusal report %+v %v", rep, ok)
		}
	})
}

func FuzzParseReport(f *testing.F) {
	f.Add([]byte(pkt("unpack ok\n")+pkt("ng refs/heads/b x\n")+"0000"), false)
	f.Add([]byte(pkt("\x01"+pkt("unpack ok\n")+"0000")+"0000"), true)
	f.Fuzz(func(t *testing.T, in []byte, sb bool) {
		rep, ok := ParseReport(in, sb)
		if ok && rep.Refs == nil {
			t.Fatal("ok report without a ref map")
		}
	})
}
