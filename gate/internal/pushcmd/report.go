package pushcmd

import (
	"bytes"
	"strings"

	"terok.dev/sandbox/gate/internal/pktline"
)

// Sideband reports whether the client asked for side-band framing of the
// answer (side-band-64k or side-band).
func (r *Request) Sideband() (bool, int) {
	switch {
	case r.HasCap("side-band-64k"):
		return true, MaxPktLen - 5
	case r.HasCap("side-band"):
		return true, 1000 - 5
	}
	return false, 0
}

// Refusal is the whole receive-pack answer that refuses every command of
// r without touching the repository: msg on the progress band (git prints
// it as "remote: msg"), then a report-status with "unpack ok" and "ng REF
// REASON" for each command (reasons[ref], or other for the refs that were
// not at fault: the push is refused as a whole). A client that asked for
// no report gets only the message.
func Refusal(r *Request, msg string, reasons map[string]string, other string) []byte {
	var report bytes.Buffer
	if r.HasCap("report-status") || r.HasCap("report-status-v2") {
		writePkt(&report, "unpack ok\n")
		for _, c := range r.Commands {
			why := reasons[c.Ref]
			if why == "" {
				why = other
			}
			writePkt(&report, "ng "+c.Ref+" "+oneLine(why)+"\n")
		}
		report.WriteString("0000")
	}
	sb, max := r.Sideband()
	if !sb {
		return report.Bytes()
	}
	var out bytes.Buffer
	for _, l := range strings.Split(strings.TrimRight(msg, "\n"), "\n") {
		band(&out, 2, []byte(oneLine(l)+"\n"), max)
	}
	if report.Len() > 0 {
		band(&out, 1, report.Bytes(), max)
	}
	out.WriteString("0000")
	return out.Bytes()
}

func band(out *bytes.Buffer, ch byte, data []byte, max int) {
	for len(data) > 0 {
		n := min(len(data), max)
		writePkt(out, string([]byte{ch})+string(data[:n]))
		data = data[n:]
	}
}

func oneLine(s string) string {
	return strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return ' '
		}
		return c
	}, s)
}

// Report is what git receive-pack answered: whether it unpacked the pack,
// and per ref "" (updated) or the reason it gave for "ng".
type Report struct {
	Unpack string // "ok" or git's error
	Refs   map[string]string
}

// ParseReport reads the report-status out of a receive-pack answer (the
// first bytes of it; side-band framed when sideband). ok is false when no
// complete report was found (the answer was cut short, or the client asked
// for none). The input is git's output relayed to an untrusted client, so
// it is parsed defensively too.
func ParseReport(b []byte, sideband bool) (Report, bool) {
	if sideband {
		var demux bytes.Buffer
		for len(b) >= 4 {
			n, ok := pktline.Len(b[:4])
			if !ok {
				return Report{}, false
			}
			if n == 0 {
				break
			}
			if n < 5 || n > len(b) {
				return Report{}, false
			}
			if b[4] == 1 {
				demux.Write(b[5:n])
			}
			b = b[n:]
		}
		b = demux.Bytes()
	}
	rep := Report{Refs: map[string]string{}}
	seenUnpack := false
	for len(b) >= 4 {
		n, ok := pktline.Len(b[:4])
		if !ok {
			return Report{}, false
		}
		if n == 0 {
			return rep, seenUnpack
		}
		if n < 5 || n > len(b) {
			return Report{}, false
		}
		line := strings.TrimSuffix(string(b[4:n]), "\n")
		b = b[n:]
		switch {
		case strings.HasPrefix(line, "unpack "):
			rep.Unpack, seenUnpack = strings.TrimPrefix(line, "unpack "), true
		case strings.HasPrefix(line, "ok "):
			rep.Refs[strings.TrimPrefix(line, "ok ")] = ""
		case strings.HasPrefix(line, "ng "):
			ref, why, _ := strings.Cut(strings.TrimPrefix(line, "ng "), " ")
			if why == "" {
				why = "refused"
			}
			rep.Refs[ref] = why
		}
		// "option" lines of report-status-v2 refine an "ok" line; the
		// audit record names the ref as pushed.
	}
	return Report{}, false
}
