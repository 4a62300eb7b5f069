// Package pktline decodes the length header of a git pkt-line (docs/gate.md,
// Push commands: "pkt-line lengths are 4 hex digits"). The gate's readers of
// untrusted request and response bodies (gitop, pushcmd, server) share it.
package pktline

// Len decodes h, a pkt-line length header (four lower- or upper-case hex
// digits), as a number. ok is false when a byte of h is not a hex digit.
// The caller checks the range (0000 flush, 0001 delim, 0002 response-end,
// 0004 and up a line) and that h has four bytes.
func Len(h []byte) (n int, ok bool) {
	for _, c := range h {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int(d)
	}
	return n, true
}
