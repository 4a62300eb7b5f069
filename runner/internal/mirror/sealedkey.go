package mirror

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"terok.dev/sandbox/common/secretstore"
	"terok.dev/sandbox/common/sshkeys"
)

// OpenSSH cannot read a sealed key file (docs/secrets-at-rest.md, Value
// format). For a sealed project key the mirror opens it in memory and hands
// it to one git command through a private agent: a unix socket in a fresh
// 0700 directory, served for the command's duration and removed after it,
// with ssh pinned to that key by its public half (IdentitiesOnly).

// sshEnv is SSHEnv for one git command; call stop when it has finished.
func (m *Manager) sshEnv() (env []string, stop func(), err error) {
	key := m.KeyPath()
	data, rerr := os.ReadFile(key)
	if rerr != nil || !secretstore.IsSealed(data) {
		return m.SSHEnv(), func() {}, nil
	}
	plain, err := sshkeys.DecodePrivateKey(m.o.Vault, key, data)
	if err != nil {
		return nil, nil, fmt.Errorf("project SSH key: %w", err)
	}
	raw, err := ssh.ParseRawPrivateKey(plain)
	clear(plain)
	if err != nil {
		return nil, nil, fmt.Errorf("project SSH key %s: %w", key, err)
	}
	a, err := startKeyAgent(raw)
	if err != nil {
		return nil, nil, err
	}
	env = append([]string(nil), m.o.Environ...)
	env = append(env,
		"GIT_SSH_COMMAND=ssh -o IdentitiesOnly=yes -o IdentityFile="+shellQuote(a.pubFile)+" -o StrictHostKeyChecking=no",
		"SSH_AUTH_SOCK="+a.sock)
	return env, a.stop, nil
}

// keyAgent is a one-key agent on a private unix socket.
type keyAgent struct {
	dir, sock, pubFile string
	ln                 net.Listener
	keyring            agent.Agent
	wg                 sync.WaitGroup
	mu                 sync.Mutex
	conns              map[net.Conn]bool
	once               sync.Once
}

func startKeyAgent(raw any) (*keyAgent, error) {
	signer, err := ssh.NewSignerFromKey(raw)
	if err != nil {
		return nil, fmt.Errorf("project SSH key: %w", err)
	}
	dir, err := os.MkdirTemp("", "terok-mirror-agent-")
	if err != nil {
		return nil, fmt.Errorf("agent directory: %w", err)
	}
	a := &keyAgent{dir: dir, sock: filepath.Join(dir, "agent.sock"), pubFile: filepath.Join(dir, "key.pub"),
		keyring: agent.NewKeyring(), conns: map[net.Conn]bool{}}
	fail := func(err error) (*keyAgent, error) {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := os.WriteFile(a.pubFile, ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o600); err != nil {
		return fail(fmt.Errorf("agent public key: %w", err))
	}
	if err := a.keyring.Add(agent.AddedKey{PrivateKey: raw, Comment: "terok-sandbox mirror"}); err != nil {
		return fail(fmt.Errorf("agent key: %w", err))
	}
	if a.ln, err = net.Listen("unix", a.sock); err != nil {
		return fail(fmt.Errorf("agent socket: %w", err))
	}
	a.wg.Add(1)
	go a.serve()
	return a, nil
}

func (a *keyAgent) serve() {
	defer a.wg.Done()
	for {
		c, err := a.ln.Accept()
		if err != nil {
			return // closed by stop
		}
		a.mu.Lock()
		a.conns[c] = true
		a.mu.Unlock()
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			_ = agent.ServeAgent(a.keyring, c)
			a.mu.Lock()
			delete(a.conns, c)
			a.mu.Unlock()
			c.Close()
		}()
	}
}

// stop closes the socket and every session, forgets the key and removes
// the directory.
func (a *keyAgent) stop() {
	a.once.Do(func() {
		_ = a.ln.Close()
		a.mu.Lock()
		for c := range a.conns {
			c.Close()
		}
		a.mu.Unlock()
		a.wg.Wait()
		_ = a.keyring.RemoveAll()
		_ = os.RemoveAll(a.dir)
	})
}
