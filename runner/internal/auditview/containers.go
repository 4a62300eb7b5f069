package auditview

import (
	"context"
	"path/filepath"
	"sort"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/internal/launch"
	"terok.dev/sandbox/runner/internal/podman"
)

// Container is one of a task's containers and its task directory.
type Container struct {
	Name    string
	TaskDir string
}

// TaskContainers finds the containers labelled with the task (and the
// project, when given; docs/runner.md, Labels), running or not, and their
// task directories: the parent of the shield state-dir annotation, else the
// default <state_dir>/tasks/<name>.
func TaskContainers(ctx context.Context, p podman.Podman, cfg config.Config, task, project string) ([]Container, error) {
	filters := []string{"label=" + launch.LabelTask + "=" + task}
	if project != "" {
		filters = append(filters, "label="+launch.LabelProject+"="+project)
	}
	entries, err := p.List(ctx, filters...)
	if err != nil {
		return nil, err
	}
	var out []Container
	for _, e := range entries {
		// A second guard behind podman's filter.
		if e.Labels[launch.LabelTask] != task || (project != "" && e.Labels[launch.LabelProject] != project) {
			continue
		}
		c := Container{Name: e.Name(), TaskDir: filepath.Join(cfg.StateDir, "tasks", e.Name())}
		if in, err := p.Inspect(ctx, e.Name()); err == nil {
			if sd := in.Annotations[launch.AnnStateDir]; filepath.IsAbs(sd) && filepath.Base(sd) == "shield" {
				c.TaskDir = filepath.Dir(filepath.Clean(sd))
			}
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
