// Command kratos reads a service through github.com/go-kratos/kratos/contrib/registry/etcd:
//   - "resolver": kratos' gRPC discovery resolver (what a kratos gRPC client dials with
//     "discovery:///<service>"), i.e. the addresses it parsed from the instances' endpoints;
//   - "watch": the instances a registry Watcher's Next() returns;
//   - "get": Registry.GetService after each watch event.
//
// Details carry each instance's id, name, version and metadata.
package main

import (
	"context"
	"flag"
	"net/url"
	"os"
	"time"

	etcdregistry "github.com/go-kratos/kratos/contrib/registry/etcd/v2"
	"github.com/go-kratos/kratos/v2/log"
	"github.com/go-kratos/kratos/v2/registry"
	"github.com/go-kratos/kratos/v2/transport/grpc/resolver/discovery"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/resolver"

	"etcd-registrar.io/tests/consumers/emit"
	"etcd-registrar.io/tests/consumers/internal/grpcprobe"
)

func main() {
	namespace := flag.String("namespace", "/microservices", "kratos registry namespace (key prefix)")
	scheme := flag.String("scheme", "grpc", "endpoint scheme the watch/get views pick (grpc or http)")
	etcd, service := emit.Args("service", "service name")
	log.SetLogger(log.NewStdLogger(os.Stderr))

	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd, DialTimeout: 5 * time.Second})
	if err != nil {
		emit.Fatalf("etcd client: %v", err)
	}
	defer cli.Close()
	reg := etcdregistry.New(cli, etcdregistry.Namespace(*namespace))
	out := emit.New()

	if *scheme == "grpc" { // kratos' gRPC client only dials grpc:// endpoints
		builder := discovery.NewBuilder(reg, discovery.WithInsecure(true), discovery.DisableDebugLog())
		conn, err := grpcprobe.Dial("discovery:///"+service, builder, func(addrs []resolver.Address) {
			var eps []string
			details := map[string]any{}
			for _, a := range addrs {
				eps = append(eps, a.Addr)
				if in, ok := a.Attributes.Value("rawServiceInstance").(*registry.ServiceInstance); ok {
					details[a.Addr] = describe(in)
				}
			}
			out.Set("resolver", eps, details)
		})
		if err != nil {
			emit.Fatalf("dial: %v", err)
		}
		defer conn.Close()
	}

	ctx := context.Background()
	w, err := reg.Watch(ctx, service)
	if err != nil {
		emit.Fatalf("watch: %v", err)
	}
	for {
		instances, err := w.Next()
		if err != nil {
			emit.Logf("watch next: %v", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		report(out, "watch", instances, *scheme)
		got, err := reg.GetService(ctx, service)
		if err != nil {
			emit.Logf("get service: %v", err)
			continue
		}
		report(out, "get", got, *scheme)
	}
}

// report lists each instance by the host of its first endpoint with the wanted scheme
// (kratos' own rule); an instance without one shows as "no-<scheme>-endpoint:<id>".
func report(out *emit.Printer, source string, instances []*registry.ServiceInstance, scheme string) {
	var eps []string
	details := map[string]any{}
	for _, in := range instances {
		addr := "no-" + scheme + "-endpoint:" + in.ID
		for _, e := range in.Endpoints {
			if u, err := url.Parse(e); err == nil && u.Scheme == scheme {
				addr = u.Host
				break
			}
		}
		eps = append(eps, addr)
		details[addr] = describe(in)
	}
	out.Set(source, eps, details)
}

func describe(in *registry.ServiceInstance) map[string]any {
	return map[string]any{
		"id": in.ID, "name": in.Name, "version": in.Version,
		"metadata": in.Metadata, "endpoints": in.Endpoints,
	}
}
