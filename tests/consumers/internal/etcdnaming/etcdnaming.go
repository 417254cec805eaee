// Package etcdnaming connects to etcd and builds go.etcd.io/etcd/client/v3/naming's gRPC
// resolver on that client, as a gRPC client using etcd naming does.
package etcdnaming

import (
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	etcdresolver "go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc/resolver"

	"etcd-registrar.io/tests/consumers/emit"
)

// Resolver returns an etcd client on endpoints and the naming resolver builder on it; it
// exits the program when either fails.
func Resolver(endpoints []string) (*clientv3.Client, resolver.Builder) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		emit.Fatalf("etcd client: %v", err)
	}
	builder, err := etcdresolver.NewBuilder(cli)
	if err != nil {
		emit.Fatalf("resolver builder: %v", err)
	}
	return cli, builder
}
