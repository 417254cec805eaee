// Command etcd-naming resolves a gRPC target through go.etcd.io/etcd/client/v3/naming, the
// way a gRPC client does (grpc.NewClient("etcd:///...", grpc.WithResolvers(builder))), and
// prints the addresses the resolver gives the balancer (source "resolver", with the
// metadata the 3.5 resolver attaches). It also lists the endpoints with naming/endpoints'
// Manager (source "manager", key and metadata as details) after each update and every
// 100 ms: Manager.List is a serializable read, and etcd notifies watchers just before a
// write becomes readable, so a List right after the update can miss the newest key.
//
// The resolver strips one leading "/" from the target path: keys under /services/goods/
// are dialled as "etcd:////services/goods" (four slashes), keys under services/goods/ as
// "etcd:///services/goods".
package main

import (
	"context"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"google.golang.org/grpc/resolver"

	"etcd-registrar.io/tests/consumers/emit"
	"etcd-registrar.io/tests/consumers/internal/etcdnaming"
	"etcd-registrar.io/tests/consumers/internal/grpcprobe"
)

func main() {
	etcd, target := emit.Args("target", `gRPC target, e.g. "etcd:////services/goods"`)

	cli, builder := etcdnaming.Resolver(etcd)
	defer cli.Close()
	manager, err := endpoints.NewManager(cli, managerTarget(target))
	if err != nil {
		emit.Fatalf("endpoints manager: %v", err)
	}

	out := emit.New()
	updates := make(chan []resolver.Address, 64)
	conn, err := grpcprobe.Dial(target, builder, func(addrs []resolver.Address) { updates <- addrs })
	if err != nil {
		emit.Fatalf("dial %s: %v", target, err)
	}
	defer conn.Close()

	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case addrs := <-updates:
			var eps []string
			details := map[string]any{}
			for _, a := range addrs {
				eps = append(eps, a.Addr)
				details[a.Addr] = map[string]any{"metadata": a.Metadata} //nolint:staticcheck // where etcd 3.5 puts it
			}
			out.Set("resolver", eps, details)
		case <-poll.C:
		}
		listManager(manager, out)
	}
}

// managerTarget is the key prefix the resolver reads for a target (its own rule: the URL
// path, or the opaque part, minus one leading slash).
func managerTarget(target string) string {
	u, err := url.Parse(target)
	if err != nil {
		emit.Fatalf("target %q: %v", target, err)
	}
	path := u.Path
	if path == "" {
		path = u.Opaque
	}
	return strings.TrimPrefix(path, "/")
}

func listManager(m endpoints.Manager, out *emit.Printer) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	all, err := m.List(ctx)
	if err != nil {
		emit.Logf("manager list: %v", err)
		return
	}
	var eps []string
	details := map[string]any{}
	for key, ep := range all {
		eps = append(eps, ep.Addr)
		details[ep.Addr] = map[string]any{"key": key, "metadata": ep.Metadata}
	}
	out.Set("manager", eps, details)
}
