package fleet

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dev/sluice/internal/redact"
)

// NewRedis returns a client of the Redis at rawURL (redis:// or rediss://
// for TLS, with an optional user, password and database number:
// redis://user:password@host:6379/0), set up for fleet mode: password, if
// not "", replaces the URL's; every call is bounded by timeout, dialling
// included, and never retried within a refresh (the next refresh is the
// retry); two connections at most; RESP2, which every server that speaks
// Redis's protocol understands; no CLIENT SETINFO. Errors name the URL
// redacted. It does no I/O: it connects at the first call, and again
// after a connection breaks.
func NewRedis(rawURL, password string, timeout time.Duration) (*redis.Client, error) {
	opts, err := RedisOptions(rawURL, password, timeout)
	if err != nil {
		return nil, err
	}
	return redis.NewClient(opts), nil
}

// RedisOptions are NewRedis's options, for a caller that adds to them (a
// Dialer in tests).
func RedisOptions(rawURL, password string, timeout time.Duration) (*redis.Options, error) {
	quietOnce.Do(func() { redis.SetLogger(quiet{}) })
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("fleet: Redis URL %s: %w", redact.URL(rawURL), redact.URLError(err))
	}
	if password != "" {
		opts.Password = password
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout, opts.PoolTimeout = timeout, timeout, timeout, timeout
	opts.ContextTimeoutEnabled = true
	opts.MaxRetries = -1
	opts.DialerRetries = 1
	opts.PoolSize, opts.MinIdleConns = 2, 0
	opts.Protocol = 2
	opts.DisableIdentity = true
	return opts, nil
}

// RedisClusterOptions are the options of a client of the Redis Cluster
// that rawURL names (a node, or a managed offering's configuration
// endpoint; more seed nodes may follow as addr= parameters:
// redis://user:password@host1:6379?addr=host2:6379), set up as
// RedisOptions. The client learns the cluster's slots from a node and
// sends each refresh to the node that owns the fleet's keys, which share
// one slot (their hash tag is the resource); it follows the MOVED and ASK
// redirections of a resharding or a failover within the call's deadline.
func RedisClusterOptions(rawURL, password string, timeout time.Duration) (*redis.ClusterOptions, error) {
	quietOnce.Do(func() { redis.SetLogger(quiet{}) })
	if err := ValidRedisURL(rawURL, true); err != nil {
		return nil, fmt.Errorf("fleet: Redis Cluster URL %w", err)
	}
	opts, err := redis.ParseClusterURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("fleet: Redis Cluster URL %s: %w", redact.URL(rawURL), redact.URLError(err))
	}
	if password != "" {
		opts.Password = password
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout, opts.PoolTimeout = timeout, timeout, timeout, timeout
	opts.ContextTimeoutEnabled = true
	// A redirection is not a failure: follow a few, within the deadline.
	// The cluster client may also try a broken connection again in those
	// attempts, within the same deadline; a report sent twice counts once
	// (Report.Seq).
	opts.MaxRedirects = 3
	opts.MaxRetries = -1
	opts.DialerRetries = 1
	opts.PoolSize, opts.MinIdleConns = 2, 0
	opts.Protocol = 2
	opts.DisableIdentity = true
	return opts, nil
}

// quiet silences go-redis's own log lines (plain text on stderr, one per
// failed dial): the Client logs failures itself, as JSON through the
// sidecar's logger, and throttled.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

var quietOnce sync.Once

// ValidRedisURL reports why rawURL cannot be a fleet's Redis, or nil: it
// must be a redis:// or rediss:// URL with a host that go-redis reads, as
// a server's URL, or a Redis Cluster's if cluster (which has no database
// number, and may name more seed nodes with addr=). The error shows the
// URL redacted.
func ValidRedisURL(rawURL string, cluster bool) error {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		return fmt.Errorf("must be a redis:// or rediss:// URL with a host, got %q", redact.URL(rawURL))
	}
	if !cluster {
		if _, err := redis.ParseURL(rawURL); err != nil {
			return fmt.Errorf("%q: %v", redact.URL(rawURL), redact.URLError(err))
		}
		return nil
	}
	if p := strings.Trim(u.Path, "/"); p != "" && p != "0" {
		return fmt.Errorf("%q: a Redis Cluster has database 0 only, got /%s", redact.URL(rawURL), p)
	}
	if _, err := redis.ParseClusterURL(rawURL); err != nil {
		return fmt.Errorf("%q: %v", redact.URL(rawURL), redact.URLError(err))
	}
	return nil
}
