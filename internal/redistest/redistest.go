// Package redistest runs a real redis-server for tests: on 127.0.0.1, on a
// free port, with its files in a temporary directory, nothing saved to
// disk, stopped by PID when the test ends. A test that needs it is skipped
// when the binary is not installed (.ci installs Debian's redis-server).
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/freeport"
)

// RequireEnv, when set, makes a missing redis-server fail the test
// instead of skipping it: .ci/fleet.sh and .ci/browser.sh set it once
// one is installed.
const RequireEnv = "SLUICE_REQUIRE_REDIS"

// Server is one redis-server process. Its methods are safe for concurrent
// use.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	args []string // more flags (a cluster node's)

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Binary returns the path of redis-server, or "" if it is not installed.
func Binary() string {
	for _, p := range []string{"redis-server", "/usr/bin/redis-server", "/usr/sbin/redis-server"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	return ""
}

// Start starts a redis-server, or skips the test if there is none. The
// server is killed when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return startWith(t)
}

func startWith(t testing.TB, args ...string) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("redis-server is not installed and %s is set", RequireEnv)
		}
		t.Skip("redis-server is not installed (apt-get install redis-server; .ci/fleet.sh installs it)")
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), port: freeport.Get(t, 1)[0], args: args}
	s.start()
	t.Cleanup(s.Kill)
	return s
}

// Addr is the server's host:port on loopback.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr() }

func (s *Server) start() {
	s.t.Helper()
	args := append([]string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--protected-mode", "yes"}, s.args...)
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	// Ready when it answers PING; bounded.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ping(s.Addr()) == nil {
			return
		}
		if time.Now().After(deadline) {
			s.Kill()
			s.t.Fatalf("redis-server on %s did not answer PING within 10s", s.Addr())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ping sends PING over a fresh connection.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING: %q", line)
	}
	return nil
}

// signal sends sig to the running server, if any.
func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// Pause stops the server (SIGSTOP): connections stay open, nothing is
// answered, as when a server hangs.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

// Kill kills the server (SIGKILL) and waits for it; its data is lost.
// Idempotent.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // a stopped process dies all the same, but say so
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// Restart starts a new server on the same port, with no data, after Kill.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}
