// Package grpcprobe opens a real gRPC ClientConn on a target served by a resolver builder
// (etcd's naming resolver, kratos' discovery resolver) and reports every address list the
// resolver hands to the load balancer: exactly what a gRPC client would balance across.
//
// The balancer only observes; it never connects, so the pods need not serve gRPC.
package grpcprobe

import (
	"fmt"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"

	"etcd-registrar.io/tests/consumers/emit"
)

// OnUpdate receives the full address list after each resolver update.
type OnUpdate func([]resolver.Address)

var (
	registered atomic.Bool
	callback   atomic.Value // OnUpdate
)

const policy = "etcd_registrar_observer"

// Dial connects to target (e.g. "etcd:////services/goods") through builder and calls
// onUpdate with each resolved address list. The returned conn keeps the resolver alive.
func Dial(target string, builder resolver.Builder, onUpdate OnUpdate) (*grpc.ClientConn, error) {
	callback.Store(onUpdate)
	if registered.CompareAndSwap(false, true) {
		balancer.Register(observerBuilder{})
	}
	conn, err := grpc.NewClient(target,
		grpc.WithResolvers(builder),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, policy)),
	)
	if err != nil {
		return nil, err
	}
	conn.Connect() // leave idle mode: builds the resolver now, not at the first RPC
	return conn, nil
}

type observerBuilder struct{}

func (observerBuilder) Build(cc balancer.ClientConn, _ balancer.BuildOptions) balancer.Balancer {
	return &observer{cc: cc}
}

func (observerBuilder) Name() string { return policy }

type observer struct{ cc balancer.ClientConn }

func (o *observer) UpdateClientConnState(s balancer.ClientConnState) error {
	var addrs []resolver.Address
	seen := map[string]bool{}
	add := func(a resolver.Address) {
		if !seen[a.Addr] {
			seen[a.Addr] = true
			addrs = append(addrs, a)
		}
	}
	for _, ep := range s.ResolverState.Endpoints {
		for _, a := range ep.Addresses {
			add(a)
		}
	}
	for _, a := range s.ResolverState.Addresses {
		add(a)
	}
	callback.Load().(OnUpdate)(addrs)
	// No subconns: an RPC would wait for a picker that never comes. The observer makes none.
	o.cc.UpdateState(balancer.State{
		ConnectivityState: connectivity.TransientFailure,
		Picker:            errPicker{},
	})
	return nil
}

func (o *observer) ResolverError(err error) {
	emit.Logf("resolver error: %v", err)
}

func (o *observer) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {}
func (o *observer) Close()                                                     {}
func (o *observer) ExitIdle()                                                  {}

type errPicker struct{}

func (errPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
}
