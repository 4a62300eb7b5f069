package podman

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrNoSuchContainer is Inspect's error when podman knows no container of
// that name.
var ErrNoSuchContainer = errors.New("no such container")

// Container is what the launcher's failure cleanup and stop need from
// `podman container inspect`.
type Container struct {
	ID      string
	Created time.Time
	// CreateCommand is podman's own argv of the run that created the
	// container (argv[0] included); empty when podman did not record it.
	CreateCommand []string
	Annotations   map[string]string
	// Status is the lowercased .State.Status ("created", "running", …).
	Status string
	// Running is .State.Running.
	Running bool
	// Pid is .State.Pid: the container's init process, 0 when none runs.
	Pid int
	// Labels are the container's labels (Config.Labels).
	Labels map[string]string
}

// isEmptyJSONArray reports whether out is exactly a JSON array with no
// elements (whitespace around it allowed).
func isEmptyJSONArray(out []byte) bool {
	var list []json.RawMessage
	return json.Unmarshal(out, &list) == nil && list != nil && len(list) == 0
}

// Inspect asks podman about one container. The error is ErrNoSuchContainer
// when it does not exist (the name is free), ErrNotFound for a missing
// podman, or another error when podman failed or answered nonsense.
// `container inspect` (not plain inspect): an image or volume of the same
// name must never be taken for the container.
func (p Podman) Inspect(ctx context.Context, name string) (Container, error) {
	res, err := p.Exec(ctx, "container", "inspect", "--", name)
	if err != nil {
		if errors.Is(err, ErrNotFound) || ctx.Err() != nil {
			return Container{}, err
		}
		// Podman prints the (empty) JSON array of what it found and fails
		// for a name it does not know; its error text is not read.
		if res.Code > 0 && isEmptyJSONArray(res.Stdout) {
			return Container{}, fmt.Errorf("%s: %w", name, ErrNoSuchContainer)
		}
		return Container{}, fmt.Errorf("podman container inspect %s: %s", name, ErrorText(res, err, "podman container inspect"))
	}
	c, err := ParseInspect(res.Stdout)
	if err != nil {
		return Container{}, fmt.Errorf("podman container inspect %s: %w", name, err)
	}
	return c, nil
}

// ParseInspect reads the JSON array `podman container inspect NAME` prints
// for one container.
func ParseInspect(out []byte) (Container, error) {
	var list []struct {
		ID      string    `json:"Id"`
		Created time.Time `json:"Created"`
		State   struct {
			Status  string `json:"Status"`
			Running bool   `json:"Running"`
			Pid     int    `json:"Pid"`
		} `json:"State"`
		Config struct {
			CreateCommand []string          `json:"CreateCommand"`
			Annotations   map[string]string `json:"Annotations"`
			Labels        map[string]string `json:"Labels"`
		} `json:"Config"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return Container{}, fmt.Errorf("unreadable inspect output: %w", err)
	}
	if len(list) != 1 {
		return Container{}, fmt.Errorf("inspect output describes %d containers, want 1", len(list))
	}
	c := list[0]
	if c.ID == "" {
		return Container{}, errors.New("inspect output has no container id")
	}
	return Container{
		ID:            c.ID,
		Created:       c.Created,
		CreateCommand: c.Config.CreateCommand,
		Annotations:   c.Config.Annotations,
		Status:        strings.ToLower(c.State.Status),
		Running:       c.State.Running,
		Pid:           c.State.Pid,
		Labels:        c.Config.Labels,
	}, nil
}

// ForceRemove is `podman rm -f -t 0 NAME`: the container is killed at once,
// not after its stop timeout. It runs even when ctx has already ended (a
// container we must remove is never left behind because the caller gave
// up), bounded by StopTimeout.
func (p Podman) ForceRemove(ctx context.Context, name string) (Result, error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), StopTimeout)
	defer cancel()
	return p.Exec(rctx, ForceRemoveArgs(name)...)
}

// ForceRemoveArgs are ForceRemove's podman arguments, also quoted in error
// messages as the command an operator can run by hand.
func ForceRemoveArgs(name string) []string { return []string{"rm", "-f", "-t", "0", name} }
