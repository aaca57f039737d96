package buffer

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// memoryCollector reports authpipe_buffer_redis_memory_bytes: Redis'
// used_memory (INFO memory) at scrape time, summed over the masters of a
// Cluster. What sizing Redis needs (CONFIGURATION.md) is checked against
// it. A Redis that refuses INFO (some managed services) leaves the series
// out, said once in the log; a Redis that does not answer leaves it out of
// that scrape (authpipe_buffer_up tells).
type memoryCollector struct {
	client  redis.UniversalClient
	log     *slog.Logger
	desc    *prometheus.Desc
	refused atomic.Bool
}

func newMemoryCollector(client redis.UniversalClient, log *slog.Logger) *memoryCollector {
	return &memoryCollector{
		client: client,
		log:    log,
		desc: prometheus.NewDesc("authpipe_buffer_redis_memory_bytes",
			"Memory Redis uses (INFO memory used_memory), summed over the masters of a Cluster; absent where Redis refuses INFO.", nil, nil),
	}
}

func (c *memoryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *memoryCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	n, err := RedisMemory(ctx, c.client)
	switch {
	case err == nil:
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n))
	case isRefused(err):
		if !c.refused.Swap(true) {
			c.log.Warn("Redis refuses INFO memory: authpipe_buffer_redis_memory_bytes is left out", "err", err)
		}
	}
}

// RedisMemory returns Redis' used_memory in bytes (INFO memory), summed
// over the masters of a Cluster.
func RedisMemory(ctx context.Context, client redis.UniversalClient) (int64, error) {
	if cc, ok := client.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		var total int64
		err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			n, err := nodeMemory(ctx, node)
			mu.Lock()
			total += n
			mu.Unlock()
			return err
		})
		return total, err
	}
	return nodeMemory(ctx, client)
}

func nodeMemory(ctx context.Context, c redis.Cmdable) (int64, error) {
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		return 0, fmt.Errorf("info memory: %w", err)
	}
	v := infoField(info, "used_memory")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("info memory: used_memory %q: %w", v, err)
	}
	return n, nil
}
