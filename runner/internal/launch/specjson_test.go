package launch

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseSpecJSON(t *testing.T) {
	full := `{"container_name":"p-1","image":"img:1","env":{"ZED":"z","API_KEY":"k","MID":""},
		"volumes":["/a:/b:ro,z"],"command":["sh","-c","x"],"task_dir":"/t","gpu_enabled":true,
		"extra_args":["--stop-timeout=1"],"unrestricted":true}`
	got, err := ParseSpecJSON([]byte(full))
	if err != nil {
		t.Fatal(err)
	}
	want := FileSpec{ContainerName: "p-1", Image: "img:1",
		Env:     []EnvVar{{"API_KEY", "k"}, {"MID", ""}, {"ZED", "z"}},
		Volumes: []string{"/a:/b:ro,z"}, Command: []string{"sh", "-c", "x"}, TaskDir: "/t",
		GPUEnabled: true, ExtraArgs: []string{"--stop-timeout=1"}, Unrestricted: true}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if s, err := ParseSpecJSON([]byte(`{"image":"i","env":null}`)); err != nil || s.Env != nil || s.Unrestricted {
		t.Fatalf("minimal: %+v %v", s, err)
	}

	bad := []struct{ name, in, want string }{
		{"not json", `{"image":`, "not a valid JSON object"},
		{"array", `[]`, "not a valid JSON object"},
		{"unknown field", `{"imagee":"x"}`, `unknown field "imagee"`},
		{"wrong type", `{"volumes":"a:b"}`, "cannot unmarshal"},
		{"bool as string", `{"unrestricted":"true"}`, "cannot unmarshal"},
		{"trailing data", `{"image":"i"} {}`, "unexpected data"},
		{"env list", `{"env":["A=1"]}`, "must be a JSON object"},
		{"env number", `{"env":{"A":1}}`, `value of "A" must be a string`},
		{"env duplicate", `{"env":{"A":"1","A":"2"}}`, `"A" appears twice`},
		{"env empty name", `{"env":{"":"1"}}`, "name is empty"},
		{"env name with =", `{"env":{"A=B":"1"}}`, "contains '='"},
		{"too big", `{"image":"` + strings.Repeat("x", MaxSpecBytes) + `"}`, "more than the limit"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseSpecJSON([]byte(c.in))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
		})
	}
}

func FuzzParseSpecJSON(f *testing.F) {
	f.Add([]byte(`{"container_name":"c","image":"i","env":{"B":"2","A":"1"},"volumes":[],"command":[],"task_dir":"/t"}`))
	f.Add([]byte(`{"env":{"A":"1","A":"2"}}`))
	f.Add([]byte(`{"env":{"A":{}}}`))
	f.Add([]byte(`{} []`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSpecJSON(data)
		if err != nil {
			return
		}
		for i, e := range s.Env {
			if ValidEnvName(e.Name) != nil {
				t.Fatalf("invalid name accepted: %q", e.Name)
			}
			if i > 0 && s.Env[i-1].Name >= e.Name {
				t.Fatalf("env not strictly sorted: %q", s.Env)
			}
		}
		p := Params{Name: s.ContainerName, Image: s.Image, Env: s.Env, Volumes: s.Volumes, Command: s.Command, ExtraArgs: s.ExtraArgs}
		if p.Validate() == nil {
			_ = CommandLine("podman", Args(p))
		}
	})
}
