package taskend

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/common/filelock"
	"terok.dev/sandbox/common/names"
)

// Reasons a daemon finds a bound token dead without an end record
// (docs/security-model.md, Tokens that die with their task).
const (
	// ReasonLeaseExpired: no start was claimed within StartLease of the
	// binding (the runner never began, or was killed before it did).
	ReasonLeaseExpired = "lease-expired"
	// ReasonStartFailed: the runner that claimed the start ended before a
	// container took over (killed mid-start, or the start failed).
	ReasonStartFailed = "start-failed"
	// ReasonProcessGone: the container's init process ended and nobody
	// recorded the end (conmon killed with it, a launch without the hook).
	ReasonProcessGone = "process-gone"
)

// Phases of a start record.
const (
	PhaseStarting = "starting" // PID is the runner starting the container
	PhaseRunning  = "running"  // PID is the container's init process
)

// StartSuffix ends every start record's name (<container>.start): readers
// that predate start records skip it (not a .json name).
const StartSuffix = ".start"

// StartLease is how long a bound token works before any start of its
// container is claimed: the gap between `token create --container` and
// `run`. Once a runner claims the start, its process (then the
// container's) holds the token alive instead.
const StartLease = 30 * time.Second

// Start is the process holding a container's bound tokens alive: the
// runner while it starts the container, then the container's init.
type Start struct {
	Container string    `json:"container"`
	Started   time.Time `json:"started"`
	Phase     string    `json:"phase"`
	PID       int       `json:"pid"`
	// PIDStart is field 22 of /proc/PID/stat (clock ticks after boot)
	// when the writer could read it: a recycled PID does not match.
	PIDStart uint64 `json:"pid_start,omitempty"`
	// PIDNS is the writer's PID namespace (readlink /proc/self/ns/pid):
	// a reader in another one cannot check the PID.
	PIDNS string `json:"pidns,omitempty"`
	ID    string `json:"id,omitempty"`
}

// ParseStart reads one start record strictly (docs/formats.md, Task ends).
func ParseStart(data []byte) (Start, error) {
	if len(data) > maxRecord {
		return Start{}, fmt.Errorf("start record of %d bytes, over %d", len(data), maxRecord)
	}
	var s Start
	if err := json.Unmarshal(data, &s); err != nil {
		return Start{}, fmt.Errorf("start record: %w", err)
	}
	if err := names.ValidateContainerName(s.Container); err != nil {
		return Start{}, fmt.Errorf("start record: %w", err)
	}
	if s.Started.IsZero() {
		return Start{}, errors.New("start record: started is required")
	}
	if s.Phase != PhaseStarting && s.Phase != PhaseRunning {
		return Start{}, fmt.Errorf("start record: phase %q is not %s or %s", s.Phase, PhaseStarting, PhaseRunning)
	}
	if s.PID <= 0 {
		return Start{}, fmt.Errorf("start record: pid %d", s.PID)
	}
	return s, nil
}

// ProcStart is field 22 of /proc/PID/stat (0 when unreadable).
func ProcStart(pid int) uint64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// are counted after its closing parenthesis.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 { // field 3 is f[0], field 22 is f[19]
		return 0
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0
	}
	return v
}

// PIDNamespace is this process's PID namespace ("" when unreadable).
func PIDNamespace() string {
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return ""
	}
	return ns
}

// NewStart is a start record for container held by pid, filled with the
// PID's start time and this process's PID namespace.
func NewStart(container, phase string, pid int, id string) Start {
	if len(id) > 12 {
		id = id[:12]
	}
	return Start{Container: container, Started: time.Now().UTC(), Phase: phase, PID: pid,
		PIDStart: ProcStart(pid), PIDNS: PIDNamespace(), ID: id}
}

// Claim writes a starting record for container held by the calling
// process, unless the record on file is a running one whose process lives
// and whose container has not ended since (a container of that name runs:
// its tokens must not die with this runner). It reports whether it wrote.
func Claim(dir, container string) (bool, error) {
	st := NewStart(container, PhaseStarting, os.Getpid(), "")
	var wrote bool
	err := withLock(dir, container, func() error {
		if old, err := readStart(filepath.Join(dir, container+StartSuffix)); err == nil && old.Phase == PhaseRunning && Alive(old) {
			if e, err := readRecord(filepath.Join(dir, container+Suffix)); err != nil || e.Ended.Before(old.Started) {
				return nil
			}
		}
		wrote = true
		return writeStart(dir, st)
	})
	return wrote, err
}

// Confirm records that st's process (a container's init) now holds the
// container's bound tokens alive: the shield hook at createRuntime, or the
// runner after the start of a launch without the hook.
func Confirm(dir string, st Start) error {
	return withLock(dir, st.Container, func() error { return writeStart(dir, st) })
}

// ReadStart is the start record of container in dir.
func ReadStart(dir, container string) (Start, error) {
	return readStart(filepath.Join(dir, container+StartSuffix))
}

func withLock(dir, container string, f func() error) error {
	if err := names.ValidateContainerName(container); err != nil {
		return fmt.Errorf("record start: %w", err)
	}
	if err := atomicfile.MkdirPrivate(dir); err != nil {
		return fmt.Errorf("record start of %s: %w", container, err)
	}
	lk, err := filelock.Exclusive(filepath.Join(dir, ".lock"))
	if err != nil {
		return fmt.Errorf("record start of %s: %w", container, err)
	}
	defer lk.Close()
	if err := f(); err != nil {
		return fmt.Errorf("record start of %s: %w", container, err)
	}
	return nil
}

// FileStartsSince marks when start records came into use in a directory
// (the first claim or confirmation): bindings from before it keep the rule
// of their time — only an end record ends them — so tokens of tasks that
// run across an upgrade are not taken for unclaimed ones.
const FileStartsSince = ".starts-since"

func writeStart(dir string, st Start) error {
	st.Started = st.Started.UTC()
	data := mustJSON(st)
	if _, err := ParseStart(data); err != nil {
		return err
	}
	if err := markLocked(dir); err != nil {
		return err
	}
	// Not fsynced (atomicfile.Replace): it sits on the launch's path, and a
	// crash that loses it ends the process it names as well (a binding
	// without a record is pending, then lease-expired).
	return atomicfile.Replace(filepath.Join(dir, st.Container+StartSuffix), append(data, '\n'), 0o600)
}

// markLocked writes dir's FileStartsSince when it is missing (or does not
// parse). Called with the directory's lock held.
func markLocked(dir string) error {
	if !readStartsSince(dir).IsZero() {
		return nil
	}
	return atomicfile.WriteFile(filepath.Join(dir, FileStartsSince), []byte(time.Now().UTC().Format(time.RFC3339Nano)+"\n"), 0o600)
}

func mustJSON(v any) []byte {
	data, _ := json.Marshal(v) // a Start always marshals
	return data
}

func readStart(path string) (Start, error) {
	data, err := readLimited(path)
	if err != nil {
		return Start{}, err
	}
	return ParseStart(data)
}

// Alive reports whether st's process still runs, by kill(pid, 0) (ESRCH:
// gone; EPERM: it exists) and, when /proc shows it, its start time. A
// record of another PID namespace cannot be checked and counts as alive.
func Alive(st Start) bool {
	if st.PIDNS != "" {
		if ns := PIDNamespace(); ns != "" && ns != st.PIDNS {
			return true
		}
	}
	if err := unix.Kill(st.PID, 0); errors.Is(err, unix.ESRCH) {
		return false
	}
	if st.PIDStart != 0 {
		if now := ProcStart(st.PID); now != 0 && now != st.PIDStart {
			return false
		}
	}
	return true
}

// Release removes the starting record of container that the calling
// process wrote (its start failed): its bound tokens are pending again,
// bounded by StartLease from their binding. Any other record is left.
func Release(dir, container string) error {
	return withLock(dir, container, func() error {
		path := filepath.Join(dir, container+StartSuffix)
		old, err := readStart(path)
		if err != nil || old.Phase != PhaseStarting || old.PID != os.Getpid() {
			return nil
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	})
}

// readStartsSince is the directory's FileStartsSince time (zero: none).
func readStartsSince(dir string) time.Time {
	data, err := readLimited(filepath.Join(dir, FileStartsSince))
	if err != nil {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(data)))
	if err != nil {
		return time.Time{}
	}
	return t
}

// MarkStarts writes dir's FileStartsSince when it is missing: the runner
// calls it before it binds a token, so the binding is never taken for one
// from before start records (on a host whose first claim comes later).
func MarkStarts(dir string) error {
	if !readStartsSince(dir).IsZero() {
		return nil
	}
	if err := atomicfile.MkdirPrivate(dir); err != nil {
		return fmt.Errorf("mark start records: %w", err)
	}
	lk, err := filelock.Exclusive(filepath.Join(dir, ".lock"))
	if err != nil {
		return fmt.Errorf("mark start records: %w", err)
	}
	defer lk.Close()
	if err := markLocked(dir); err != nil {
		return fmt.Errorf("mark start records: %w", err)
	}
	return nil
}
