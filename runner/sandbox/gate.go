package sandbox

import (
	"context"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/daemons"
)

// GateServerStatus is what `gate status` reports (docs/gate.md, Operating it): Mode is "systemd", "daemon" or
// "none".
type GateServerStatus struct {
	Mode    string `json:"mode"`
	Running bool   `json:"running"`
	Port    int    `json:"port"`
}

// gate is the public gate lifecycle (runner/daemons) of this facade.
func (s *Sandbox) gate() *daemons.Gate {
	return daemons.NewGate(s.cfg, daemons.Options{Env: s.env, Log: s.log})
}

// EnsureGate checks that the gate can serve a new task
// (docs/gate.md, Operating it): running, and in systemd mode with current units for this
// configuration's base path. The error says what to run. The gate is never
// started implicitly.
func (s *Sandbox) EnsureGate(ctx context.Context) error { return s.gate().Ensure(ctx) }

// GateStatus reports how the gate runs (docs/gate.md, Operating it).
func (s *Sandbox) GateStatus(ctx context.Context) GateServerStatus {
	st := s.gate().Status(ctx)
	return GateServerStatus{Mode: string(st.Mode), Running: st.Running, Port: st.Port}
}

// EnsureGate is Sandbox.EnsureGate for cfg.
func EnsureGate(ctx context.Context, cfg config.Config) error {
	return New(cfg, Options{}).EnsureGate(ctx)
}

// GateStatus is Sandbox.GateStatus for cfg.
func GateStatus(ctx context.Context, cfg config.Config) GateServerStatus {
	return New(cfg, Options{}).GateStatus(ctx)
}
