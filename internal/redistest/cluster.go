package redistest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dev/sluice/internal/freeport"
)

// Cluster is a Redis Cluster of three masters on loopback, without
// replicas, each owning a third of the slots. Its nodes are killed when
// the test ends.
type Cluster struct {
	Nodes []*Server
}

// StartCluster starts a Cluster, or skips the test as Start does, and
// returns once every node sees all the slots covered.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	const n, slots = 3, 16384
	c := &Cluster{}
	var bus []int
	for range n {
		// The bus port is chosen too: the default (port+10000) may not
		// exist for an ephemeral port.
		bus = append(bus, freeport.Get(t, 1)[0])
		c.Nodes = append(c.Nodes, startWith(t, "--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(bus[len(bus)-1]),
			"--cluster-node-timeout", "5000"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	do := func(s *Server, args ...any) *redis.Cmd {
		rdb := redis.NewClient(&redis.Options{Addr: s.Addr(), Protocol: 2, DisableIdentity: true})
		defer rdb.Close()
		return rdb.Do(ctx, args...)
	}
	for i, s := range c.Nodes {
		from, to := i*slots/n, (i+1)*slots/n-1 // as SlotOwner
		if err := do(s, "CLUSTER", "ADDSLOTSRANGE", from, to).Err(); err != nil {
			t.Fatalf("redis cluster: ADDSLOTSRANGE %d %d on %s: %v", from, to, s.Addr(), err)
		}
		if i > 0 {
			if err := do(c.Nodes[0], "CLUSTER", "MEET", "127.0.0.1", s.port, bus[i]).Err(); err != nil {
				t.Fatalf("redis cluster: MEET %s: %v", s.Addr(), err)
			}
		}
	}
	// Gossip takes a moment; bounded.
	for _, s := range c.Nodes {
		for {
			info, err := do(s, "CLUSTER", "INFO").Text()
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", n)) {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("redis cluster: %s not ready within 30s: %v\n%s", s.Addr(), err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// URL is a redis:// URL of the cluster naming its first node.
func (c *Cluster) URL() string { return c.Nodes[0].URL() }

// SlotOwner returns the node that owns key's hash slot (the server
// computes the slot).
func (c *Cluster) SlotOwner(t testing.TB, key string) *Server {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: c.Nodes[0].Addr(), Protocol: 2, DisableIdentity: true})
	defer rdb.Close()
	slot, err := rdb.ClusterKeySlot(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("CLUSTER KEYSLOT %s: %v", key, err)
	}
	n := int64(len(c.Nodes))
	for i, s := range c.Nodes {
		if from, to := int64(i)*16384/n, (int64(i)+1)*16384/n-1; slot >= from && slot <= to {
			return s
		}
	}
	t.Fatalf("slot %d of %s has no node", slot, key)
	return nil
}
