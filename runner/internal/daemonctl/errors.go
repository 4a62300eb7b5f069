package daemonctl

import "fmt"

// Message is an operator-facing error: capitalised full sentences that end
// in what to run. Its text is the whole message, printed as is; every
// daemon's lifecycle reports its failures a caller acts on with it.
type Message string

func (m Message) Error() string { return string(m) }

// Messagef formats a Message.
func Messagef(format string, a ...any) error { return Message(fmt.Sprintf(format, a...)) }

// The errors of a unit operation where systemd user services are
// unavailable: ErrNoSystemd for install, ErrNoSystemdUninstall for
// uninstall.
var (
	ErrNoSystemd          = Message("systemd user services are not available on this host.")
	ErrNoSystemdUninstall = Message("systemd user services are not available. Nothing to uninstall.")
)
