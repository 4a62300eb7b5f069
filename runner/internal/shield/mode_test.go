package shield

import (
	"context"
	"slices"
	"strings"
	"testing"

	"terok.dev/sandbox/common/shieldbundle"
)

// The mode and the launch's project/task reach the bundle (shield.mode)
// and the hook (annotations); a mode the hook cannot apply refuses the
// launch before anything is written.
func TestPreStartModeAndIDs(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name          string
		mode          string
		project, task string
		wantErr       string
		wantMode      string
		wantAnn       []string
		noAnn         []string
	}{
		{"default is enforce", "", "", "", "", shieldbundle.ModeEnforce,
			[]string{shieldbundle.AnnMode + "=enforce", shieldbundle.AnnInteractive + "=false"},
			[]string{shieldbundle.AnnProject + "=", shieldbundle.AnnTask + "="}},
		{"enforce with ids", "enforce", "demo", "t1", "", shieldbundle.ModeEnforce,
			[]string{shieldbundle.AnnProject + "=demo", shieldbundle.AnnTask + "=t1"}, nil},
		{"unknown mode", "permissive", "", "", "unknown shield mode 'permissive'", "", nil, nil},
		{"interactive not yet", "interactive", "", "", "not yet available", "", nil, nil},
		{"bad project id", "", "../x", "", "project", "", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newPrestartEnv(t, true)
			s := e.shield(1000, infoSlirp, true)
			s.cfg.Mode, s.cfg.Project, s.cfg.Task = tt.mode, tt.project, tt.task
			args, err := s.PreStart(ctx, "c1", nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if _, serr := shieldbundle.ReadMode(e.stateDir); serr == nil && exists(e.stateDir+"/"+shieldbundle.FileRuleset) {
					t.Fatal("refused launch wrote a ruleset")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := shieldbundle.ReadMode(e.stateDir)
			if err != nil || got != tt.wantMode {
				t.Fatalf("shield.mode = %q, %v; want %q", got, err, tt.wantMode)
			}
			for _, a := range tt.wantAnn {
				if !slices.Contains(args, a) {
					t.Errorf("annotation %q missing from %q", a, args)
				}
			}
			for _, a := range tt.noAnn {
				for _, arg := range args {
					if strings.HasPrefix(arg, a) {
						t.Errorf("empty annotation %q passed", arg)
					}
				}
			}
		})
	}
}
