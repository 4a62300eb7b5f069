package audit

import (
	"bufio"
	"fmt"
	"os"
)

// ReadFile reads every record of one audit file. A line that does not parse
// is skipped and reported to warn as "file:line: error"; warn may be nil.
func ReadFile(path string, warn func(msg string)) ([]Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("audit read: %w", err)
	}
	defer func() { _ = f.Close() }()
	var out []Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for ln := 1; sc.Scan(); ln++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		r, err := ParseLine(sc.Bytes())
		if err != nil {
			if warn != nil {
				warn(fmt.Sprintf("%s:%d: %v", path, ln, err))
			}
			continue
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("audit read %s: %w", path, err)
	}
	return out, nil
}
