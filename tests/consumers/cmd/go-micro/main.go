// Command go-micro reads a service through go-micro's etcd registry (go-micro.dev/v5/registry/etcd):
//   - "get": Registry.GetService, re-read after every event a registry Watcher reports and
//     every 100 ms (GetService is a serializable read, and etcd notifies watchers just
//     before a write becomes readable, so a read right after the event can miss it);
//   - "cache": go-micro's registry cache (what its client selector picks nodes from, kept
//     up to date by its own watcher), read every 20 ms.
//
// Details carry each node's id and metadata, with the service's name, version and metadata.
package main

import (
	"errors"
	"net/url"
	"os"
	"time"

	"go-micro.dev/v5/logger"
	"go-micro.dev/v5/registry"
	"go-micro.dev/v5/registry/cache"
	"go-micro.dev/v5/registry/etcd"

	"etcd-registrar.io/tests/consumers/emit"
)

func main() {
	etcdURLs, service := emit.Args("service", "service name")
	logger.DefaultLogger = logger.NewLogger(logger.WithOutput(os.Stderr))

	reg := etcd.NewEtcdRegistry(registry.Addrs(hostPorts(etcdURLs)...), registry.Timeout(5*time.Second))
	out := emit.New()

	cached := cache.New(reg)
	go func() {
		for {
			read(out, "cache", cached, service)
			time.Sleep(20 * time.Millisecond)
		}
	}()

	w, err := reg.Watch(registry.WatchService(service))
	if err != nil {
		emit.Fatalf("watch: %v", err)
	}
	changed := make(chan struct{}, 1)
	go func() {
		for {
			res, err := w.Next()
			if err != nil {
				emit.Fatalf("watch next: %v", err)
			}
			if res.Service == nil || res.Service.Name != service {
				emit.Logf("watch: event for another service: %+v", res)
			}
			select {
			case changed <- struct{}{}:
			default: // a re-read is already due
			}
		}
	}()
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for {
		read(out, "get", reg, service)
		select {
		case <-changed:
		case <-poll.C:
		}
	}
}

type getter interface {
	GetService(string, ...registry.GetOption) ([]*registry.Service, error)
}

func read(out *emit.Printer, source string, from getter, service string) {
	services, err := from.GetService(service)
	if errors.Is(err, registry.ErrNotFound) {
		services, err = nil, nil
	}
	if err != nil {
		emit.Logf("%s: get service: %v", source, err)
		return
	}
	var eps []string
	details := map[string]any{}
	for _, s := range services {
		for _, n := range s.Nodes {
			eps = append(eps, n.Address)
			details[n.Address] = map[string]any{
				"id": n.Id, "metadata": n.Metadata,
				"service": s.Name, "version": s.Version, "service_metadata": s.Metadata,
			}
		}
	}
	out.Set(source, eps, details)
}

// hostPorts turns etcd client URLs into the host:port form go-micro's registry expects.
func hostPorts(urls []string) []string {
	var out []string
	for _, e := range urls {
		if u, err := url.Parse(e); err == nil && u.Host != "" {
			e = u.Host
		}
		out = append(out, e)
	}
	return out
}
