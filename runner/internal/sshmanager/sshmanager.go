// Package sshmanager manages the host-side SSH keys of projects
// (docs/ssh-agent.md, Key management (`terok-sandbox ssh …`)): init (the project's tk-main key and ssh config),
// add-key (numbered tk-side keys), import of an existing key pair, and the
// listing of ssh-keys.json. Keys are generated in Go; ssh-keygen is not used.
// Every registration goes through common/sshkeys.Update (locked, atomic).
package sshmanager

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/crypto/ssh"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/filelock"
	"terok.dev/sandbox/common/secretstore"
	"terok.dev/sandbox/common/sshkeys"
)

// Comment prefixes of the two key roles (docs/ssh-agent.md, Key management (`terok-sandbox ssh …`)).
const (
	MainPrefix = "tk-main:"
	SidePrefix = "tk-side:"
)

// Manager works on one configuration's key directory and ssh-keys.json.
type Manager struct {
	KeysDir  string // <state_dir>/ssh-keys
	KeysJSON string // <credentials_dir>/ssh-keys.json
	Env      config.Env
	// Vault seals new private key files when the store is encrypted
	// (nil: plaintext, as before).
	Vault *secretstore.Vault
}

// New returns the manager for cfg.
func New(cfg config.Config, env config.Env) Manager {
	return Manager{KeysDir: cfg.SSHKeysDir(), KeysJSON: cfg.SSHKeysJSON(), Env: env,
		Vault: secretstore.OpenVault(cfg.CredentialsDir)}
}

// CheckProject applies the project id rule (docs/ssh-agent.md, Key management (`terok-sandbox ssh …`)).
func CheckProject(p string) error {
	if !config.ValidName(p) {
		return specErrorf("Invalid project ID '%s': must start with a letter or digit and contain only [A-Za-z0-9._-]", p)
	}
	return nil
}

// DefaultKeyName (docs/ssh-agent.md, Key management (`terok-sandbox ssh …`)) is the configured name, else id_<algo>_<project>.
func DefaultKeyName(project, keyType, configured string) string {
	if configured != "" {
		return configured
	}
	algo := "ed25519"
	if keyType == TypeRSA {
		algo = "rsa"
	}
	return "id_" + algo + "_" + project
}

// projectDir creates <keys dir>/<project> with mode 0700.
func (m Manager) projectDir(project string) (string, error) {
	dir := filepath.Join(m.KeysDir, project)
	if err := ensureDir(dir, "SSH host dir"); err != nil {
		return "", err
	}
	return dir, nil
}

// ensureDir creates dir (0700, forced) and checks it is writable, failing
// with the operator hint of docs/config.md, Creation and permissions.
func ensureDir(dir, label string) error {
	err := atomicfile.MkdirPrivate(dir)
	if err == nil {
		err = syscall.Access(dir, 2 /* W_OK */)
	}
	if err != nil {
		uid, gid := os.Getuid(), os.Getgid()
		return fmt.Errorf("%s directory is not writable: %s (%v)\nFix permissions for the user running terok-sandbox (uid=%d, gid=%d). Example: sudo chown -R %d:%d %s",
			label, dir, err, uid, gid, uid, gid, dir)
	}
	return nil
}

// ---- init ----

// InitOptions are the inputs of Init.
type InitOptions struct {
	Project        string
	Dir            string // default <keys dir>/<project>
	ConfiguredName string // key name from configuration, if any
	ConfigTemplate string // SSH config template path; "" = built-in
	KeyType        string // ed25519 (default) or rsa
	KeyName        string // explicit name, wins over ConfiguredName
	Force          bool
	// Destinations bind the key to these hosts when it is registered
	// (docs/ssh-agent.md, Destination-bound keys); Init checks them before
	// it creates anything. None: any host.
	Destinations []string
}

// InitResult is what Init produced (absolute paths).
type InitResult struct {
	Dir        string `json:"dir"`
	PrivateKey string `json:"private_key"`
	PublicKey  string `json:"public_key"`
	ConfigPath string `json:"config_path"`
	KeyName    string `json:"key_name"`
	Generated  bool   `json:"generated"`
	PublicText string `json:"public_key_text,omitempty"`
}

var reservedNames = []string{"authorized_keys", "config", "known_hosts"}

// CheckKeyFileName checks an `ssh init --key-name` value (docs/ssh-agent.md,
// Key management (`terok-sandbox ssh …`)).
func CheckKeyFileName(name string) error {
	bad := name == "" || filepath.IsAbs(name) || strings.ContainsAny(name, `/\`) || name == "." || name == ".."
	if bad {
		return specErrorf("Invalid SSH key name '%s': must be a plain filename, not an absolute path or traversal sequence", name)
	}
	for _, r := range reservedNames {
		if strings.EqualFold(name, r) {
			return specErrorf("Invalid SSH key name '%s': collides with reserved filename (reserved: %s)", name, strings.Join(reservedNames, ", "))
		}
	}
	return nil
}

// Init creates (or, without Force, keeps) the project's main key and ssh
// config. It does not register the key; the caller does (Register).
func (m Manager) Init(o InitOptions) (InitResult, error) {
	if o.KeyType == "" {
		o.KeyType = TypeEd25519
	}
	if err := CheckKeyType(o.KeyType); err != nil {
		return InitResult{}, err
	}
	if err := CheckProject(o.Project); err != nil {
		return InitResult{}, err
	}
	if err := CheckDestinations(o.Destinations); err != nil {
		return InitResult{}, err
	}
	dir := o.Dir
	if dir == "" {
		dir = filepath.Join(m.KeysDir, o.Project)
	}
	dir, err := m.absolute(dir)
	if err != nil {
		return InitResult{}, err
	}
	if err := ensureDir(dir, "SSH host dir"); err != nil {
		return InitResult{}, err
	}
	if dir, err = filepath.EvalSymlinks(dir); err != nil {
		return InitResult{}, fmt.Errorf("resolve %s: %w", o.Dir, err)
	}
	name := o.KeyName
	if name == "" {
		name = DefaultKeyName(o.Project, o.KeyType, o.ConfiguredName)
	}
	if err := CheckKeyFileName(name); err != nil {
		return InitResult{}, err
	}
	res := InitResult{
		Dir: dir, KeyName: name,
		PrivateKey: filepath.Join(dir, name),
		PublicKey:  filepath.Join(dir, name+".pub"),
		ConfigPath: filepath.Join(dir, "config"),
	}
	for _, p := range []string{res.PrivateKey, res.PublicKey, res.ConfigPath} {
		if err := regularOrMissing(p); err != nil {
			return InitResult{}, err
		}
	}
	// Render the config before touching keys, so a bad template changes nothing.
	cfgText, err := RenderConfig(o.ConfigTemplate, name, res.PrivateKey, o.Project)
	if err != nil {
		return InitResult{}, err
	}
	if o.Force || !exists(res.PrivateKey) || !exists(res.PublicKey) {
		priv, pub, err := GenerateKey(o.KeyType, MainPrefix+o.Project)
		if err != nil {
			return InitResult{}, err
		}
		for _, p := range []string{res.PrivateKey, res.PublicKey} {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return InitResult{}, fmt.Errorf("remove old key %s: %w", p, err)
			}
		}
		if err := m.writePair(res.PrivateKey, res.PublicKey, priv, pub); err != nil {
			return InitResult{}, err
		}
		res.Generated = true
	}
	if o.Force || !exists(res.ConfigPath) {
		if err := atomicfile.WriteFile(res.ConfigPath, []byte(cfgText), 0o644); err != nil {
			return InitResult{}, specErrorf("Failed to write SSH config at %s: %v", res.ConfigPath, err)
		}
	}
	// In a fixed order (a map gave a random one), and the error names the
	// path that failed, not always the directory.
	for _, pm := range []struct {
		path string
		mode os.FileMode
	}{{dir, 0o700}, {res.PrivateKey, 0o600}, {res.PublicKey, 0o644}, {res.ConfigPath, 0o644}} {
		if err := os.Chmod(pm.path, pm.mode); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return InitResult{}, specErrorf("Failed to set SSH permissions on %s: %v", pm.path, err)
		}
	}
	if b, err := os.ReadFile(res.PublicKey); err == nil {
		res.PublicText = strings.TrimSpace(string(b))
	}
	return res, nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// regularOrMissing checks that a file ssh init would write is a regular
// file or absent.
func regularOrMissing(p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", p, err)
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return specErrorf("Refusing to use %s: expected a regular file but found a symlink. Remove it manually and retry.", p)
	case !fi.Mode().IsRegular():
		return specErrorf("Refusing to use %s: expected a regular file but found a non-regular file. Remove it manually and retry.", p)
	}
	return nil
}

// absolute is ~-expansion and absolutisation (symlinks are resolved by the
// caller once the path exists).
func (m Manager) absolute(p string) (string, error) {
	if m.Env.Getenv != nil {
		p = m.Env.Expand(p)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", p, err)
	}
	return abs, nil
}

// Register adds a key pair to ssh-keys.json with the update rule. With
// destinations the key is bound to them (docs/ssh-agent.md,
// Destination-bound keys); without, a re-registered key keeps the
// destinations it had.
func (m Manager) Register(project, priv, pub string, destinations ...string) error {
	if len(destinations) == 0 {
		return sshkeys.Update(m.KeysJSON, sshkeys.Pair{Project: project, PrivateKey: priv, PublicKey: pub})
	}
	return sshkeys.Register(m.KeysJSON, sshkeys.Pair{Project: project, PrivateKey: priv, PublicKey: pub}, destinations)
}

// CheckDestinations validates destinations given on the command line
// (none is fine: no restriction).
func CheckDestinations(ds []string) error {
	if len(ds) == 0 {
		return nil
	}
	return sshkeys.ValidateDestinations(ds)
}

// Restrict sets the destinations of a registered key, or removes them
// (destinations empty: the key signs for any host again). key is the KEY
// column of `ssh list` (the public key's comment), the key file's name, or
// the private key's path.
func (m Manager) Restrict(project, key string, destinations []string) (Row, error) {
	if err := CheckProject(project); err != nil {
		return Row{}, err
	}
	if err := CheckDestinations(destinations); err != nil {
		return Row{}, err
	}
	rows, err := m.List(project)
	if err != nil {
		return Row{}, err
	}
	var match []Row
	for _, r := range rows {
		if r.Key == key || r.Path == key || filepath.Base(r.Path) == key {
			match = append(match, r)
		}
	}
	switch len(match) {
	case 0:
		return Row{}, fmt.Errorf("no key %q registered for project '%s' (see terok-sandbox ssh list --project %s): %w", key, project, project, sshkeys.ErrNoEntry)
	case 1:
	default:
		return Row{}, fmt.Errorf("%d keys of project '%s' match %q; name the private key's path", len(match), project, key)
	}
	if err := sshkeys.SetDestinations(m.KeysJSON, sshkeys.KeyRef{Project: project, PrivateKey: match[0].Path}, destinations); err != nil {
		return Row{}, err
	}
	r := match[0]
	r.Destinations, r.DestinationsProblem = destinations, ""
	if len(destinations) == 0 {
		r.Destinations = nil
	}
	return r, nil
}

// ---- add-key ----

var sideNamePattern = regexp.MustCompile(`^[a-zA-Z_-]+$`)

// AddKeyResult describes a generated side key.
type AddKeyResult struct {
	Project    string `json:"project"`
	Name       string `json:"name"`
	PrivateKey string `json:"private_key"`
	PublicKey  string `json:"public_key"`
	Comment    string `json:"comment"`
	PublicText string `json:"public_key_text,omitempty"`
}

// counterFile records the highest key number ever issued in a project's
// directory, so deleting the newest key never lets its number come back.
const counterFile = ".key-counter"

// AddKey generates a tk-side key and registers it. With name "" the key is
// key-<N>, N one more than the highest number ever issued in the project
// (any algorithm); numbers are never reused, also after deletion. The
// directory lock makes concurrent add-key calls pick distinct numbers.
func (m Manager) AddKey(project, name, keyType string, destinations ...string) (AddKeyResult, error) {
	if err := CheckProject(project); err != nil {
		return AddKeyResult{}, err
	}
	if err := CheckDestinations(destinations); err != nil {
		return AddKeyResult{}, err
	}
	if keyType == "" {
		keyType = TypeEd25519
	}
	if err := CheckKeyType(keyType); err != nil {
		return AddKeyResult{}, err
	}
	if name != "" && !sideNamePattern.MatchString(name) {
		return AddKeyResult{}, specErrorf("Invalid key name '%s': must contain only letters, underscores, and hyphens", name)
	}
	dir, err := m.projectDir(project)
	if err != nil {
		return AddKeyResult{}, err
	}
	algo := "ed25519"
	if keyType == TypeRSA {
		algo = "rsa"
	}
	res, err := func() (AddKeyResult, error) {
		lk, err := filelock.Exclusive(filepath.Join(dir, ".add-key.lock"))
		if err != nil {
			return AddKeyResult{}, fmt.Errorf("lock %s: %w", dir, err)
		}
		defer lk.Close()
		n := 0
		if name == "" {
			if n, err = nextNumber(dir); err != nil {
				return AddKeyResult{}, err
			}
			name = "key-" + strconv.Itoa(n)
		}
		file := "id_" + algo + "_" + name
		r := AddKeyResult{
			Project: project, Name: name, Comment: SidePrefix + project + ":" + name,
			PrivateKey: filepath.Join(dir, file), PublicKey: filepath.Join(dir, file+".pub"),
		}
		for _, p := range []string{r.PrivateKey, r.PublicKey} {
			if _, err := os.Lstat(p); err == nil {
				return AddKeyResult{}, specErrorf("Key file already exists: %s\nUse a different --name or remove the existing key first.", p)
			}
		}
		priv, pub, err := GenerateKey(keyType, r.Comment)
		if err != nil {
			return AddKeyResult{}, err
		}
		if err := m.writePair(r.PrivateKey, r.PublicKey, priv, pub); err != nil {
			return AddKeyResult{}, err
		}
		if n > 0 {
			if err := atomicfile.WriteFile(filepath.Join(dir, counterFile), []byte(strconv.Itoa(n)+"\n"), 0o600); err != nil {
				os.Remove(r.PrivateKey)
				os.Remove(r.PublicKey)
				return AddKeyResult{}, fmt.Errorf("record key number: %w", err)
			}
		}
		r.PublicText = strings.TrimSpace(string(pub))
		return r, nil
	}()
	if err != nil {
		return AddKeyResult{}, err
	}
	if err := m.Register(project, res.PrivateKey, res.PublicKey, destinations...); err != nil {
		// An unregistered key is useless and its name would block a retry.
		os.Remove(res.PrivateKey)
		os.Remove(res.PublicKey)
		return AddKeyResult{}, fmt.Errorf("register the new key (it was removed again): %w", err)
	}
	return res, nil
}

var numberedKey = regexp.MustCompile(`^id_(?:ed25519|rsa|ecdsa)_key-([0-9]+)$`)

// nextNumber is one more than the highest of the recorded counter and the
// numbers of key-<N> files present.
func nextNumber(dir string) (int, error) {
	high := 0
	if b, err := os.ReadFile(filepath.Join(dir, counterFile)); err == nil {
		v, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || v < 0 {
			return 0, fmt.Errorf("%s is corrupt (%q); it must hold the highest key number issued, fix it by hand",
				filepath.Join(dir, counterFile), bytes.TrimSpace(b))
		}
		high = v
	} else if !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("read key counter: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", dir, err)
	}
	for _, e := range ents {
		if mm := numberedKey.FindStringSubmatch(e.Name()); mm != nil {
			if v, err := strconv.Atoi(mm[1]); err == nil && v > high {
				high = v
			}
		}
	}
	return high + 1, nil
}

// ---- import ----

// Copy is one copied file.
type Copy struct {
	Src string `json:"src"`
	Dst string `json:"dst"`
}

// ImportResult describes an import.
type ImportResult struct {
	Project    string `json:"project"`
	PrivateKey string `json:"private_key"`
	PublicKey  string `json:"public_key"`
	Copies     []Copy `json:"copies"`
}

// Import copies an existing key pair into the project's directory and
// registers it. The public key must belong to the private key.
func (m Manager) Import(project, privSrc, pubSrc string, destinations ...string) (ImportResult, error) {
	if err := CheckProject(project); err != nil {
		return ImportResult{}, err
	}
	if err := CheckDestinations(destinations); err != nil {
		return ImportResult{}, err
	}
	priv, err := m.resolveSource(privSrc)
	if err != nil {
		return ImportResult{}, specErrorf("Private key not found: %s", privSrc)
	}
	if pubSrc == "" {
		pubSrc = priv + ".pub"
	}
	pub, err := m.resolveSource(pubSrc)
	if err != nil {
		return ImportResult{}, specErrorf("Public key not found: %s (use --public-key to specify explicitly)", pubSrc)
	}
	privData, err := readSmall(priv)
	if err != nil {
		return ImportResult{}, err
	}
	pubData, err := readSmall(pub)
	if err != nil {
		return ImportResult{}, err
	}
	if err := checkPair(privData, pubData); err != nil {
		return ImportResult{}, fmt.Errorf("refusing to import %s: %w", priv, err)
	}
	dir, err := m.projectDir(project)
	if err != nil {
		return ImportResult{}, err
	}
	res := ImportResult{Project: project}
	for _, f := range []struct {
		src  string
		data []byte
		mode os.FileMode
		dst  *string
		priv bool
	}{{priv, privData, 0o600, &res.PrivateKey, true}, {pub, pubData, 0, &res.PublicKey, false}} {
		dst, err := m.copyInto(dir, f.src, f.data, f.mode, f.priv)
		if err != nil {
			return ImportResult{}, err
		}
		*f.dst = dst
		res.Copies = append(res.Copies, Copy{Src: f.src, Dst: dst})
	}
	if err := m.Register(project, res.PrivateKey, res.PublicKey, destinations...); err != nil {
		return ImportResult{}, err
	}
	return res, nil
}

func (m Manager) resolveSource(p string) (string, error) {
	abs, err := m.absolute(p)
	if err != nil {
		return "", err
	}
	r, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(r)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", r)
	}
	return r, nil
}

func readSmall(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	if len(b) > 1<<20 {
		return nil, fmt.Errorf("%s is larger than 1 MiB, not a key file", p)
	}
	return b, nil
}

// checkPair verifies the public key line belongs to the private key, so the
// agent never announces a key it cannot sign for.
func checkPair(privData, pubData []byte) error {
	signer, err := ssh.ParsePrivateKey(privData)
	if err != nil {
		var pm *ssh.PassphraseMissingError
		if errors.As(err, &pm) {
			return errors.New("the private key is encrypted; the agent needs an unencrypted key")
		}
		return fmt.Errorf("cannot parse the private key: %w", err)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey(pubData)
	if err != nil {
		return fmt.Errorf("cannot parse the public key: %w", err)
	}
	if !bytes.Equal(pk.Marshal(), signer.PublicKey().Marshal()) {
		return errors.New("the public key does not belong to the private key")
	}
	return nil
}

// copyInto copies src into dir under its base name, or <stem>_<n><ext> if a
// different file already has that name; an identical file is reused. mode 0
// keeps the source's mode. Timestamps are kept. A private key is sealed
// when the store is encrypted, and an existing file is compared by its
// plaintext.
func (m Manager) copyInto(dir, src string, data []byte, mode os.FileMode, private bool) (string, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return "", err
	}
	if mode == 0 {
		mode = fi.Mode().Perm()
	}
	base := filepath.Base(src)
	ext := filepath.Ext(base)
	stem := strings.TrimSuffix(base, ext)
	for n := 0; ; n++ {
		name := base
		if n > 0 {
			name = stem + "_" + strconv.Itoa(n) + ext
		}
		dst := filepath.Join(dir, name)
		if old, err := os.ReadFile(dst); err == nil {
			if private && secretstore.IsSealed(old) {
				if old, err = sshkeys.DecodePrivateKey(m.Vault, dst, old); err != nil {
					continue // not openable here: treat as a different file
				}
			}
			if bytes.Equal(old, data) {
				if err := os.Chmod(dst, mode); err != nil {
					return "", fmt.Errorf("chmod %s: %w", dst, err)
				}
				return dst, nil
			}
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("read %s: %w", dst, err)
		}
		content := data
		var w *secretstore.Writer
		if private {
			if w, err = m.Vault.BeginWrite(); err != nil {
				return "", fmt.Errorf("write private key %s: %w", dst, err)
			}
			if content, err = sshkeys.EncodePrivateKey(w, dst, data); err != nil {
				w.Close()
				return "", err
			}
		}
		err := writeNew(dst, content, mode)
		if w != nil {
			w.Close()
		}
		if err != nil {
			if errors.Is(err, os.ErrExist) {
				continue // created meanwhile; look again
			}
			return "", err
		}
		if err := os.Chtimes(dst, fi.ModTime(), fi.ModTime()); err != nil {
			return "", fmt.Errorf("keep timestamps of %s: %w", dst, err)
		}
		return dst, nil
	}
}

// ---- list ----

// Row is one listed key.
type Row struct {
	Project     string `json:"project"`
	Key         string `json:"key"`
	Type        string `json:"type"`
	Fingerprint string `json:"fingerprint"`
	Path        string `json:"path"`
	// Destinations the key is bound to (docs/ssh-agent.md,
	// Destination-bound keys); absent: any host.
	Destinations []string `json:"destinations,omitempty"`
	// DestinationsProblem: the member is present but unusable, so the
	// agent does not serve the key.
	DestinationsProblem string `json:"destinations_problem,omitempty"`
}

// ErrNoProject is returned by List for a --project that is not registered.
var ErrNoProject = errors.New("no keys registered for project")

// List returns the registered keys, projects ascending, entries in order.
// A missing or empty file is no rows (also with a project); an unreadable or
// invalid one is an error; a project absent from a non-empty map is
// ErrNoProject.
func (m Manager) List(project string) ([]Row, error) {
	data, err := os.ReadFile(m.KeysJSON)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // a missing file is "no keys", before the --project check
	}
	if err != nil {
		return nil, specErrorf("Cannot read %s: %v", m.KeysJSON, err)
	}
	km, err := sshkeys.Parse(data)
	if err != nil {
		return nil, specErrorf("Cannot read %s: %v", m.KeysJSON, err)
	}
	if len(km) == 0 {
		return nil, nil
	}
	projects := make([]string, 0, len(km))
	for p := range km {
		projects = append(projects, p)
	}
	sort.Strings(projects)
	if project != "" {
		if _, ok := km[project]; !ok {
			return nil, specErrorf("No keys registered for project '%s': %w", project, ErrNoProject)
		}
		projects = []string{project}
	}
	var rows []Row
	for _, p := range projects {
		for _, e := range km[p] {
			rows = append(rows, describe(p, e))
		}
	}
	return rows, nil
}

func stem(p string) string {
	b := filepath.Base(p)
	return strings.TrimSuffix(b, filepath.Ext(b))
}

func describe(project string, e sshkeys.Entry) Row {
	r := Row{Project: project, Path: e.PrivateKey, Destinations: e.Destinations, DestinationsProblem: e.Problem}
	data, err := os.ReadFile(e.PublicKey)
	if err != nil {
		r.Type, r.Key, r.Fingerprint = "?", stem(e.PrivateKey), "(pub missing)"
		return r
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		r.Type, r.Key, r.Fingerprint = "?", stem(e.PublicKey), "(error)"
		return r
	}
	var blob []byte
	if len(fields) > 1 {
		if blob, err = base64.StdEncoding.DecodeString(fields[1]); err != nil {
			r.Type, r.Key, r.Fingerprint = "?", stem(e.PublicKey), "(error)"
			return r
		}
	}
	r.Type = strings.TrimPrefix(fields[0], "ssh-")
	r.Key = stem(e.PublicKey)
	if len(fields) > 2 {
		r.Key = strings.Join(fields[2:], " ")
	}
	sum := sha256.Sum256(blob)
	r.Fingerprint = "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
	return r
}

// FormatTable renders rows as the `ssh list` table (docs/ssh-agent.md,
// Key management (`terok-sandbox ssh …`)).
func FormatTable(rows []Row) string {
	head := []string{"PROJECT", "KEY", "TYPE", "FINGERPRINT", "PATH"}
	// The DESTINATIONS column appears only when some key is bound, so the
	// table of unrestricted keys stays as before (docs/ssh-agent.md, Key
	// management (`terok-sandbox ssh …`)).
	withDest := false
	for _, r := range rows {
		withDest = withDest || r.Destinations != nil || r.DestinationsProblem != ""
	}
	if withDest {
		head = append(head, "DESTINATIONS")
	}
	cells := [][]string{head}
	for _, r := range rows {
		row := []string{r.Project, r.Key, r.Type, r.Fingerprint, r.Path}
		if withDest {
			d := strings.Join(r.Destinations, ",")
			switch {
			case r.DestinationsProblem != "":
				d = "(invalid: not served)"
			case d == "":
				d = "(any)"
			}
			row = append(row, d)
		}
		cells = append(cells, row)
	}
	width := make([]int, len(head))
	for _, row := range cells {
		for i, c := range row {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	var b strings.Builder
	for _, row := range cells {
		var line strings.Builder
		for i, c := range row {
			if i > 0 {
				line.WriteString("  ")
			}
			line.WriteString(c)
			line.WriteString(strings.Repeat(" ", width[i]-len([]rune(c))))
		}
		b.WriteString(strings.TrimRight(line.String(), " "))
		b.WriteByte('\n')
	}
	return b.String()
}
