package sidecar

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-dev/sluice/fleet"
	"github.com/sluice-dev/sluice/internal/redact"
	"github.com/sluice-dev/sluice/sidecar/admin"
	"github.com/sluice-dev/sluice/sidecar/apierror"
)

// Fleet mode's wiring: its configuration's checks, the Client built from
// it, the loop, and what /v1/status shows of it.

// Bounds of SLUICE_FLEET_REFRESH: often enough that a member that joins
// gets its share within seconds, seldom enough that Redis's load stays a
// few calls per second per sidecar at most.
const (
	minFleetRefresh = 100 * time.Millisecond
	maxFleetRefresh = time.Minute
)

// validateFleet returns one problem per invalid fleet variable, each
// starting with the variable's name. The password is never read here,
// only the file's presence checked.
func (c Config) validateFleet() []string {
	var p []string
	bad := func(key, format string, args ...any) {
		p = append(p, EnvPrefix+key+": "+fmt.Sprintf(format, args...))
	}
	if c.FleetRedisURL == "" {
		// Fleet mode is off, and the other fleet variables are ignored
		// (with a warning, see doubtful): unsetting the URL alone turns it
		// off in a hurry, even if the password's Secret went with it.
		return nil
	}
	if err := fleet.ValidRedisURL(c.FleetRedisURL, c.FleetRedisCluster); err != nil {
		bad("FLEET_REDIS_URL", "%v", err)
	}
	if c.FleetRedisPasswordFile != "" {
		// A FIFO or a device would block the read at startup for ever.
		if fi, err := os.Stat(c.FleetRedisPasswordFile); err != nil {
			bad("FLEET_REDIS_PASSWORD_FILE", "%v", err)
		} else if !fi.Mode().IsRegular() {
			bad("FLEET_REDIS_PASSWORD_FILE", "%s is not a regular file (mode %s)", c.FleetRedisPasswordFile, fi.Mode().Type())
		}
	}
	if c.FleetResource != "" {
		if err := fleet.ValidResource(c.FleetResource); err != nil {
			bad("FLEET_RESOURCE", "%v", err)
		}
	}
	if math.IsNaN(c.FleetCapacity) || math.IsInf(c.FleetCapacity, 0) || c.FleetCapacity < 0 {
		bad("FLEET_CAPACITY", "must be 0 (learned by the fleet) or a positive number in SLUICE_RATE_UNIT per second, got %v", c.FleetCapacity)
	}
	if !(c.FleetWeight >= fleet.MinWeight && c.FleetWeight <= fleet.MaxWeight) {
		bad("FLEET_WEIGHT", "must be a number between %v and %v, got %v", fleet.MinWeight, fleet.MaxWeight, c.FleetWeight)
	}
	if c.FleetRefresh < minFleetRefresh || c.FleetRefresh > maxFleetRefresh {
		bad("FLEET_REFRESH", "must be between %v and %v, got %v", minFleetRefresh, maxFleetRefresh, c.FleetRefresh)
	}
	return p
}

// fleetResource is SLUICE_FLEET_RESOURCE, or one derived from the profile
// and the upstream's host ("s3:bucket.s3.amazonaws.com"): sidecars
// writing to the same store with the same profile share its budget
// unless told otherwise.
func (c *Config) fleetResource() string {
	if c.FleetResource != "" {
		return c.FleetResource
	}
	host := "upstream"
	if u, err := url.Parse(c.UpstreamURL); err == nil && u.Host != "" {
		host = u.Host
	}
	r := strings.Map(func(r rune) rune {
		if fleet.ValidResource(string(r)) == nil {
			return r
		}
		return '_'
	}, c.Profile+":"+host)
	return r[:min(len(r), 200)]
}

// fleetPart is fleet mode's share of a Server; nil when it is off.
type fleetPart struct {
	client *fleet.Client
	redis  io.Closer
	url    string // redacted
}

// newFleet registers fleet mode's metrics (always: dashboards and alerts
// find them on every sidecar, zero when it is off) and, when
// SLUICE_FLEET_REDIS_URL is set, builds its Client on the limiter. It
// does no I/O but reading the password file: Redis is first called by
// the loop, so a sidecar starts, and writes, whether Redis is up or not.
func (s *Server) newFleet(cfg *Config, reg prometheus.Registerer, log *slog.Logger, dial func(context.Context, string, string) (net.Conn, error)) error {
	m := fleet.NewMetrics(reg)
	if cfg.FleetRedisURL == "" {
		return nil
	}
	password := ""
	if cfg.FleetRedisPasswordFile != "" {
		b, err := os.ReadFile(cfg.FleetRedisPasswordFile)
		if err != nil {
			return &StartupError{fmt.Errorf("SLUICE_FLEET_REDIS_PASSWORD_FILE: %w", err)}
		}
		password = strings.TrimSpace(string(b))
	}
	fcfg := fleet.Config{
		Resource:    cfg.fleetResource(),
		Weight:      cfg.FleetWeight,
		Capacity:    cfg.FleetCapacity,
		InitialRate: cfg.InitialRate,
		MinRate:     cfg.MinRate,
		MaxRate:     cfg.MaxRate,
		Refresh:     cfg.FleetRefresh,
		Logger:      log,
		Metrics:     m,
	}
	rdb, err := fleetRedis(cfg, password, dial)
	if err != nil {
		return &StartupError{fmt.Errorf("SLUICE_FLEET_REDIS_URL: %w", err)}
	}
	client, err := fleet.New(fcfg, rdb, s.lim)
	if err != nil {
		rdb.Close()
		return &StartupError{fmt.Errorf("fleet mode: %w", err)}
	}
	s.fleet = &fleetPart{client: client, redis: rdb, url: redact.URL(cfg.FleetRedisURL)}
	log.Info("fleet mode on", "component", "fleet", "redis", s.fleet.url, "cluster", cfg.FleetRedisCluster, "resource", fcfg.Resource,
		"member", client.Member(), "weight", fcfg.Weight, "capacity", fcfg.Capacity, "refresh", fcfg.Refresh)
	return nil
}

// fleetRedis is the fleet's Redis client: of one server, or of a Redis
// Cluster with SLUICE_FLEET_REDIS_CLUSTER. dial, if set, replaces the
// network (tests).
func fleetRedis(cfg *Config, password string, dial func(context.Context, string, string) (net.Conn, error)) (fleetRedisClient, error) {
	timeout := min(cfg.FleetRefresh/2, 500*time.Millisecond)
	if cfg.FleetRedisCluster {
		opts, err := fleet.RedisClusterOptions(cfg.FleetRedisURL, password, timeout)
		if err != nil {
			return nil, err
		}
		if dial != nil {
			opts.Dialer = dial
		}
		return redis.NewClusterClient(opts), nil
	}
	opts, err := fleet.RedisOptions(cfg.FleetRedisURL, password, timeout)
	if err != nil {
		return nil, err
	}
	if dial != nil {
		opts.Dialer = dial
	}
	return redis.NewClient(opts), nil
}

// fleetRedisClient is what fleet mode needs of either client: the
// scripts, and closing.
type fleetRedisClient interface {
	redis.Scripter
	io.Closer
}

// runFleet runs the fleet loop until ctx ends or a shutdown is requested:
// at SIGTERM the sidecar leaves the fleet at once, while its last writes
// drain, so that the others get its share without waiting for its
// membership to expire.
func (s *Server) runFleet(ctx context.Context) {
	if s.fleet == nil {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.stopCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	s.fleet.client.Run(ctx)
	if err := s.fleet.redis.Close(); err != nil {
		s.log.Debug("closing the fleet's Redis client", "component", "fleet", "err", err)
	}
}

// fleetStatus is the "fleet" object of /v1/status; nil when fleet mode is
// off.
func (s *Server) fleetStatus() *admin.FleetStatus {
	if s.fleet == nil {
		return nil
	}
	now := time.Now()
	st := s.fleet.client.Status(now)
	out := &admin.FleetStatus{
		Redis: s.fleet.url, Resource: st.Resource, Member: st.Member, Mode: st.Mode, Degraded: st.Degraded,
		Lease: st.Lease, LeaseUntil: st.LeaseUntil, Budget: st.Budget, Capacity: st.Capacity,
		Demand: st.Demand, Weight: st.Weight, MemberCount: st.Members, LastRefresh: st.LastOK,
		LastError: apierror.Truncate(st.LastError, 300), RefreshErrors: st.Errors,
		Members: []admin.FleetMember{},
	}
	for _, m := range st.List {
		out.Members = append(out.Members, admin.FleetMember{
			ID: m.ID, Weight: m.Weight, Demand: m.Demand, Lease: m.Lease, Age: m.Age.Round(time.Second).String(),
		})
	}
	return out
}
