// Command selfreg simulates the status quo the operator replaces: N service instances that
// each register themselves in etcd the way the etcd registry libraries do it (go-zero,
// kratos, go-micro): grant a lease of their own, put their key on it, and keep it alive with
// clientv3's KeepAlive (one keepalive per lease every TTL/3). By default every instance has
// its own client and connection, as separate processes would; -clients shares fewer.
//
// Prints "registered <n> <seconds>" once every instance holds its key; on SIGTERM revokes
// the leases (as the libraries do on a clean shutdown) and exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"etcd-registrar.io/bench/internal/must"
)

type instance struct {
	client *clientv3.Client
	lease  clientv3.LeaseID
}

func main() {
	endpoints := flag.String("endpoints", "http://127.0.0.1:2379", "comma-separated etcd URLs")
	n := flag.Int("n", 100, "instances")
	clients := flag.Int("clients", 0, "etcd clients shared round-robin (default: one per instance)")
	ttl := flag.Int64("ttl", 10, "lease TTL seconds")
	prefix := flag.String("prefix", "/selfreg/bench", "key prefix")
	parallel := flag.Int("parallel", 64, "instances starting at once")
	flag.Parse()
	if *clients <= 0 || *clients > *n {
		*clients = *n
	}

	ctx, stop := must.UntilSignal()
	defer stop()
	pool := make([]*clientv3.Client, *clients)
	instances := make([]instance, *n)
	start := time.Now()
	forEach(*n, *parallel, func(i int) {
		if i < *clients {
			pool[i] = must.Etcd(*endpoints)
		}
	})
	forEach(*n, *parallel, func(i int) {
		cli := pool[i%*clients]
		grant, err := cli.Grant(ctx, *ttl)
		must.OK(err, "grant")
		key := fmt.Sprintf("%s/instance-%d", strings.TrimRight(*prefix, "/"), i)
		value := fmt.Sprintf("10.%d.%d.%d:80", 100+i>>16&0xff, i>>8&0xff, i&0xff)
		_, err = cli.Put(ctx, key, value, clientv3.WithLease(grant.ID))
		must.OK(err, "put")
		responses, err := cli.KeepAlive(ctx, grant.ID)
		must.OK(err, "keepalive")
		go func() {
			for range responses { //nolint:revive // drain, as the libraries do
			}
		}()
		instances[i] = instance{cli, grant.ID}
	})
	fmt.Printf("registered %d %.3f\n", *n, time.Since(start).Seconds())
	<-ctx.Done()
	revoke, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	forEach(*n, *parallel, func(i int) { _, _ = instances[i].client.Revoke(revoke, instances[i].lease) })
	for _, c := range pool {
		_ = c.Close()
	}
}

// forEach runs f(0..n-1) with at most `parallel` calls at once.
func forEach(n, parallel int, f func(int)) {
	var wg sync.WaitGroup
	slots := make(chan struct{}, parallel)
	for i := range n {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			f(i)
		}()
	}
	wg.Wait()
}
