package fleet

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dev/sluice/internal/redistest"
	"github.com/sluice-dev/sluice/limiter"
)

// TestClusterClient: on a real Redis Cluster of three masters, Clients
// given the URL of a node that does not own the fleet's slot find the one
// that does (both keys live there: one hash tag), run the scripts on it
// and share the capacity as on one server.
func TestClusterClient(t *testing.T) {
	c := redistest.StartCluster(t)
	const resource = "dynamodb:orders"
	members, state := Keys(resource)
	owner := c.SlotOwner(t, members)
	if c.SlotOwner(t, state) != owner {
		t.Fatal("the fleet's two keys are in different slots")
	}
	var seed *redistest.Server
	for _, s := range c.Nodes {
		if s != owner {
			seed = s
		}
	}
	newClient := func(id string) (*Client, *fakeLocal) {
		opts, err := RedisClusterOptions(seed.URL(), "", 500*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		rdb := redis.NewClusterClient(opts)
		t.Cleanup(func() { rdb.Close() })
		local := &fakeLocal{load: limiter.Load{Demand: 1e6}}
		cl, err := New(Config{Resource: resource, Member: id, InitialRate: 50, MinRate: 1, Capacity: 900}, rdb, local)
		if err != nil {
			t.Fatal(err)
		}
		return cl, local
	}
	a, la := newClient("a")
	b, lb := newClient("b")
	ctx := context.Background()
	a.Refresh(ctx)
	b.Refresh(ctx)
	a.Refresh(ctx)
	now := time.Now()
	if a.Mode() != ModeLeased || b.Mode() != ModeLeased || la.ceiling(now) != 450 || lb.ceiling(now) != 450 {
		t.Fatalf("modes %v %v, ceilings %v %v; want both leased at 450 (errors: %q %q)", a.Mode(), b.Mode(),
			la.ceiling(now), lb.ceiling(now), a.Status(now).LastError, b.Status(now).LastError)
	}
	direct := redis.NewClient(&redis.Options{Addr: owner.Addr(), Protocol: 2})
	defer direct.Close()
	if ids, err := direct.HKeys(ctx, members).Result(); err != nil || strings.Join(ids, ",") != "a,b" && strings.Join(ids, ",") != "b,a" {
		t.Errorf("members on the slot's owner: %v %v, want a and b", ids, err)
	}
	a.Leave()
	if ids, _ := direct.HKeys(ctx, members).Result(); len(ids) != 1 {
		t.Errorf("members after a left: %v, want b alone", ids)
	}
}

func TestRedisClusterURL(t *testing.T) {
	f := func(raw string, ok bool) {
		t.Helper()
		err := ValidRedisURL(raw, true)
		if (err == nil) != ok {
			t.Errorf("ValidRedisURL(%q, cluster) = %v, want ok %v", raw, err, ok)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error %v shows the password", err)
		}
		if _, err := RedisClusterOptions(raw, "", time.Second); (err == nil) != ok {
			t.Errorf("RedisClusterOptions(%q) = %v, want ok %v", raw, err, ok)
		}
	}
	f("redis://cfg.example.cache.amazonaws.com:6379", true)
	f("rediss://u:hunter2@h1:6379?addr=h2:6379&addr=h3:6379", true)
	f("redis://h1:6379/0", true)
	f("redis://u:hunter2@h1:6379/2", false) // a cluster has database 0 only
	f("redis://h1:6379?bogus=1", false)
	f("http://h1:6379", false)
	if ValidRedisURL("redis://h1:6379?addr=h2:6379", false) == nil {
		t.Error("addr= accepted for a single server, whose client ignores it")
	}
}
