package launch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
)

// MaxSpecBytes bounds a run spec file.
const MaxSpecBytes = 1 << 20

// FileSpec is a run specification read from JSON (the field names of
// docs/runner.md, `run`). Env comes from a JSON object and is sorted by name so the
// command line is deterministic.
type FileSpec struct {
	ContainerName string   `json:"container_name"`
	Image         string   `json:"image"`
	Env           []EnvVar `json:"-"`
	Volumes       []string `json:"volumes"`
	Command       []string `json:"command"`
	TaskDir       string   `json:"task_dir"`
	GPUEnabled    bool     `json:"gpu_enabled"`
	ExtraArgs     []string `json:"extra_args"`
	Unrestricted  bool     `json:"unrestricted"`
	// Project and Task, when set, label the container (docs/runner.md,
	// Labels).
	Project string `json:"project"`
	Task    string `json:"task"`
}

// ParseSpecJSON reads one JSON object. Unknown fields, wrong types,
// duplicate or invalid env names, non-string env values, trailing data and
// oversized input are errors that say what to fix.
func ParseSpecJSON(data []byte) (FileSpec, error) {
	var fs FileSpec
	if len(data) > MaxSpecBytes {
		return fs, fmt.Errorf("run spec is %d bytes, more than the limit of %d", len(data), MaxSpecBytes)
	}
	var raw struct {
		FileSpec
		Env json.RawMessage `json:"env"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return fs, fmt.Errorf("run spec is not a valid JSON object with the fields container_name, image, env, volumes, command, task_dir, gpu_enabled, extra_args, unrestricted: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fs, errors.New("run spec: unexpected data after the JSON object")
	}
	fs = raw.FileSpec
	env, err := parseEnvObject(raw.Env)
	if err != nil {
		return FileSpec{}, fmt.Errorf("run spec: env: %w", err)
	}
	fs.Env = env
	return fs, nil
}

// parseEnvObject reads {"NAME": "value", …} (null or absent: empty),
// rejecting duplicate names and non-string values, sorted by name.
func parseEnvObject(data json.RawMessage) ([]EnvVar, error) {
	if len(bytes.TrimSpace(data)) == 0 || bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New(`must be a JSON object {"NAME": "value", ...}`)
	}
	seen := map[string]bool{}
	var env []EnvVar
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, _ := tok.(string)
		if err := ValidEnvName(name); err != nil {
			return nil, err
		}
		if seen[name] {
			return nil, fmt.Errorf("variable %q appears twice", name)
		}
		seen[name] = true
		tok, err = dec.Token()
		if err != nil {
			return nil, err
		}
		value, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("value of %q must be a string", name)
		}
		env = append(env, EnvVar{Name: name, Value: value})
	}
	sort.Slice(env, func(i, j int) bool { return env[i].Name < env[j].Name })
	return env, nil
}
