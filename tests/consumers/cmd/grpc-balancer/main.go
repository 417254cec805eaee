// Command grpc-balancer is a real gRPC client on etcd's naming resolver: grpc-go's
// round_robin balancer makes SubConns that dial the resolved addresses, and RPCs go over
// them. It starts its own backends first, -servers gRPC health servers on loopback, and
// prints their addresses (source "servers") for the test to register in etcd. Then it calls
// Health.Check across the balancer every 100 ms and prints which backends answered in
// the last round (source "round_robin"). Unlike grpcprobe's observer, this exercises what
// grpc-go does with the resolver's addresses (compares, updates and connects them): a panic
// there (etcd-io/etcd#19700) kills the program.
package main

import (
	"context"
	"flag"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"etcd-registrar.io/tests/consumers/emit"
	"etcd-registrar.io/tests/consumers/internal/etcdnaming"
)

func main() {
	servers := flag.Int("servers", 3, "gRPC health servers to start on 127.0.0.1")
	etcd, target := emit.Args("target", `gRPC target, e.g. "etcd:////services/goods"`)

	out := emit.New()
	var backends []string
	for range *servers {
		backends = append(backends, serve())
	}
	out.Set("servers", backends, nil)

	cli, builder := etcdnaming.Resolver(etcd)
	defer cli.Close()
	conn, err := grpc.NewClient(target,
		grpc.WithResolvers(builder),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
	)
	if err != nil {
		emit.Fatalf("dial %s: %v", target, err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)

	for range time.Tick(100 * time.Millisecond) {
		// Twice as many calls as backends: round_robin reaches every ready one.
		answered := []string{}
		for range 2 * *servers {
			var p peer.Peer
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
			cancel()
			if err != nil {
				emit.Logf("check: %v", err)
				break
			}
			answered = append(answered, p.Addr.String())
		}
		out.Set("round_robin", answered, nil)
	}
}

// serve starts a gRPC health server on a free loopback port and returns its address.
func serve() string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		emit.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() {
		if err := srv.Serve(lis); err != nil {
			emit.Fatalf("serve: %v", err)
		}
	}()
	return lis.Addr().String()
}
