package shield

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/ruleset"
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
		{"learn", "learn", "", "", "", shieldbundle.ModeLearn,
			[]string{shieldbundle.AnnMode + "=learn", shieldbundle.AnnInteractive + "=false"}, nil},
		{"interactive", "interactive", "", "", "", shieldbundle.ModeInteractive,
			[]string{shieldbundle.AnnMode + "=interactive", shieldbundle.AnnInteractive + "=true"}, nil},
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
			// ruleset.nft is the table of the mode, and only that one.
			rs := readState(t, e.stateDir, shieldbundle.FileRuleset)
			learnErrs, hookErrs := ruleset.VerifyLearn(rs), ruleset.VerifyHook(rs, false)
			if tt.wantMode == shieldbundle.ModeLearn && (len(learnErrs) != 0 || len(hookErrs) == 0) {
				t.Fatalf("learn bundle: learn errs %v, enforcing errs %v", learnErrs, hookErrs)
			}
			if tt.wantMode == shieldbundle.ModeEnforce && (len(hookErrs) != 0 || len(learnErrs) == 0) {
				t.Fatalf("enforce bundle: enforcing errs %v, learn errs %v", hookErrs, learnErrs)
			}
			if tt.wantMode == shieldbundle.ModeInteractive {
				// The queue rules, and only in an interactive table: the
				// enforce checks refuse them.
				if errs := ruleset.VerifyHook(rs, true); len(errs) != 0 || len(hookErrs) == 0 || len(learnErrs) == 0 {
					t.Fatalf("interactive bundle: interactive errs %v, enforcing errs %v, learn errs %v", errs, hookErrs, learnErrs)
				}
				if !strings.Contains(rs, "counter "+ruleset.QueueStmt+"\n") || strings.Contains(rs, "bypass") {
					t.Fatalf("interactive ruleset without the queue rules, or with bypass:\n%s", rs)
				}
				// shield up re-applies the interactive table.
				live, err := s.buildLive(e.stateDir, "10.0.2.3", false, false)
				if err != nil || len(ruleset.VerifyHook(live, true)) != 0 {
					t.Fatalf("live ruleset of an interactive bundle: %v %v", err, ruleset.VerifyHook(live, true))
				}
			}
			if tt.wantMode == shieldbundle.ModeLearn {
				if !strings.Contains(readState(t, e.stateDir, shieldbundle.FileAudit), `"action":"mode","detail":"learn"`) {
					t.Error("learn launch not audited")
				}
				// shield up re-applies the learn table, not the enforcing one.
				live, err := s.buildLive(e.stateDir, "10.0.2.3", false, false)
				if err != nil || len(ruleset.VerifyLearn(live)) != 0 {
					t.Fatalf("live ruleset of a learn bundle: %v %v", err, ruleset.VerifyLearn(live))
				}
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

// shield_decide_timeout: a value the resolver would refuse refuses the
// launch before anything is written; outside interactive mode no
// decide.timeout is left in the bundle (a stale one is removed).
func TestPreStartDecideTimeout(t *testing.T) {
	ctx := context.Background()
	e := newPrestartEnv(t, true)
	s := e.shield(1000, infoSlirp, true)
	s.cfg.DecideTimeout = "10ms"
	if _, err := s.PreStart(ctx, "c1", nil); err == nil || !strings.Contains(err.Error(), "decision timeout") {
		t.Fatalf("PreStart with decide timeout 10ms: err = %v", err)
	}
	if exists(filepath.Join(e.stateDir, shieldbundle.FileRuleset)) {
		t.Fatal("refused launch wrote a ruleset")
	}
	if err := os.MkdirAll(e.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(e.stateDir, shieldbundle.FileDecideTimeout)
	if err := os.WriteFile(stale, []byte("5s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.cfg.DecideTimeout = "2s"
	if _, err := s.PreStart(ctx, "c1", nil); err != nil {
		t.Fatal(err)
	}
	if exists(stale) {
		t.Fatal("an enforce launch left decide.timeout in the bundle")
	}
	// An interactive launch writes it, for the resolver to read.
	s.cfg.Mode = shieldbundle.ModeInteractive
	if _, err := s.PreStart(ctx, "c1", nil); err != nil {
		t.Fatal(err)
	}
	if d, err := shieldbundle.ReadDecideTimeout(e.stateDir); err != nil || d != 2*time.Second {
		t.Fatalf("decide.timeout of an interactive launch: %v %v, want 2s", d, err)
	}
	// Not configured: the resolver's default, no file.
	s.cfg.DecideTimeout = ""
	if _, err := s.PreStart(ctx, "c1", nil); err != nil {
		t.Fatal(err)
	}
	if exists(stale) {
		t.Fatal("decide.timeout left without shield_decide_timeout")
	}
}
