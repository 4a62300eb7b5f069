package cli

import (
	"reflect"
	"testing"

	"terok.dev/sandbox/common/config"
)

func TestReorderArgs(t *testing.T) {
	app := newApp(Deps{Env: config.Env{Home: t.TempDir()}})
	cases := []struct {
		name     string
		in, want []string
	}{
		{"flags after the name move in front", []string{"p", "logs", "c", "--until-ready", "--timeout", "5"},
			[]string{"p", "logs", "--until-ready", "--timeout", "5", "c"}},
		{"global flag with value, = form", []string{"p", "--config", "f.toml", "wait", "c", "--timeout=3"},
			[]string{"p", "--config", "f.toml", "wait", "--timeout=3", "c"}},
		{"positionals keep their order", []string{"p", "stop", "a", "--json", "b"}, []string{"p", "stop", "--json", "a", "b"}},
		{"value that looks like a flag stays with its flag", []string{"p", "wait", "c", "--timeout", "-1"}, []string{"p", "wait", "--timeout", "-1", "c"}},
		{"-- ends reordering", []string{"p", "logs", "c", "--", "--json"}, []string{"p", "logs", "c", "--", "--json"}},
		{"flags before -- still move", []string{"p", "logs", "c", "--json", "--", "x"}, []string{"p", "logs", "--json", "c", "--", "x"}},
		{"unknown flag moves alone", []string{"p", "state", "c", "--bogus", "v"}, []string{"p", "state", "--bogus", "c", "v"}},
		{"help after the name", []string{"p", "state", "c", "-h"}, []string{"p", "state", "-h", "c"}},
		{"run keeps its command verbatim", []string{"p", "run", "--name", "x", "--image", "i", "sh", "-c", "echo --json"},
			[]string{"p", "run", "--name", "x", "--image", "i", "sh", "-c", "echo --json"}},
		{"nested leaf (the motivating case)", []string{"p", "gate", "sync", "demo", "--upstream", "https://example.invalid/x.git"},
			[]string{"p", "gate", "sync", "--upstream", "https://example.invalid/x.git", "demo"}},
		{"group without subcommand", []string{"p", "gate"}, []string{"p", "gate"}},
		{"unknown command untouched", []string{"p", "nope", "a", "--x"}, []string{"p", "nope", "a", "--x"}},
		{"program only", []string{"p"}, []string{"p"}},
		{"lone dash is positional", []string{"p", "state", "-", "--json"}, []string{"p", "state", "--json", "-"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := append([]string(nil), c.in...)
			if got := reorderArgs(app, c.in); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got  %q\nwant %q", got, c.want)
			}
			if !reflect.DeepEqual(in, c.in) {
				t.Fatal("input modified")
			}
		})
	}
}

func TestFlagsAfterPositionalsThroughRun(t *testing.T) {
	fakePodmanOnPath(t, "")
	code, out, errOut := runAs(t, 0, "wait", "c1", "--json", "--timeout", "5")
	if code != 3 || out != "{\n  \"exit_code\": 3,\n  \"name\": \"c1\",\n  \"timed_out\": false\n}\n" {
		t.Fatalf("%d %q %q", code, out, errOut)
	}
	if code, _, errOut := runAs(t, 0, "state", "c1", "--no-such-flag"); code != ExitUsage {
		t.Fatalf("unknown trailing flag: %d %q", code, errOut)
	}
}
