package systemd

import _ "embed"

// Credential proxy unit templates (docs/credential-proxy.md, Operating it). Placeholders:
// UNIT_VERSION, SOCKET_PATH, DB_PATH, ROUTES_PATH, PORT, SSH_AGENT_PORT,
// SSH_KEYS_FILE, ALLOW_STATIC_MARKER (true or false: proxy_static_marker),
// CREDENTIALS_DIR and AUDIT_DIR (the directories the hardened service may
// write), AUDIT_FILE (its --audit-file: a path or off), BIN.
// The order of the socket's two ListenStream= lines is the proxy's
// descriptor order for units older than v8 (3 = Unix, 4 = TCP); v8 names
// both (FileDescriptorName=credential-proxy, told apart by network) and is
// Type=notify. Bump ProxyUnitVersion whenever a template changes (6:
// hardening; 7: the shared keyring; 8: FileDescriptorName= and Type=notify;
// 9: --audit-file and the writable audit directory).
const (
	ProxyUnitVersion = 10
	ProxySocketName  = "terok-credential-proxy.socket"
	ProxyServiceName = "terok-credential-proxy.service"
	ProxyStampPrefix = "# terok-credential-proxy-version:"
)

//go:embed terok-credential-proxy.socket
var ProxySocket string

//go:embed terok-credential-proxy.service
var ProxyService string
