package systemd

import _ "embed"

// Gate unit templates (gate-server.md §10). Placeholders: UNIT_VERSION,
// PORT, TEROK_GATE_BIN, GATE_BASE_PATH, TOKEN_FILE. Bump GateUnitVersion
// whenever a template changes so installations are reported as outdated.
const (
	GateUnitVersion = 6
	GateSocketName  = "terok-gate.socket"
	GateServiceName = "terok-gate@.service"
	GateStampPrefix = "# terok-gate-version:"
)

//go:embed terok-gate.socket
var GateSocket string

//go:embed terok-gate@.service
var GateService string
