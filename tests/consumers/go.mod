// Consumer programs for tests/e2e/test_consumers.py: each reads the registry through a real
// service-discovery client library and prints the endpoints it resolves as JSON lines.
// One graph for the libraries an application links (etcd naming, kratos, go-zero,
// go-micro), as in a service that uses them. go.etcd.io/etcd/client/v3 stays on the 3.5
// line go-zero v1.10.3 and go-micro v5.12.0 require: go-zero sets RejectOldCluster, and a
// 3.7 client then refuses etcd servers older than 3.6 (the e2e registry runs Debian's 3.4).
// CoreDNS, a server with its own release graph, is the separate module ./coredns.
// Built by hack/build-consumers.sh into $ETCD_REGISTRAR_CACHE/consumers-<hash>.
module etcd-registrar.io/tests/consumers

go 1.24.0

require (
	etcd-registrar.io/tests/consumers/emit v0.0.0
	github.com/go-kratos/kratos/contrib/registry/etcd/v2 v2.0.0-20251015020953-cdff24709025
	github.com/go-kratos/kratos/v2 v2.9.1
	github.com/zeromicro/go-zero v1.10.3
	go-micro.dev/v5 v5.12.0
	go.etcd.io/etcd/client/v3 v3.5.21
	google.golang.org/grpc v1.80.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/coreos/go-semver v0.3.1 // indirect
	github.com/coreos/go-systemd/v22 v22.5.0 // indirect
	github.com/fatih/color v1.18.0 // indirect
	github.com/go-kratos/aegis v0.2.0 // indirect
	github.com/gogo/protobuf v1.3.2 // indirect
	github.com/golang/protobuf v1.5.4 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/mattn/go-colorable v0.1.13 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/miekg/dns v1.1.50 // indirect
	github.com/mitchellh/hashstructure v1.1.0 // indirect
	github.com/spaolacci/murmur3 v1.1.0 // indirect
	go.etcd.io/etcd/api/v3 v3.5.21 // indirect
	go.etcd.io/etcd/client/pkg/v3 v3.5.21 // indirect
	go.opentelemetry.io/otel v1.40.0 // indirect
	go.opentelemetry.io/otel/trace v1.40.0 // indirect
	go.uber.org/automaxprocs v1.6.0 // indirect
	go.uber.org/mock v0.6.0 // indirect
	go.uber.org/multierr v1.10.0 // indirect
	go.uber.org/zap v1.27.0 // indirect
	golang.org/x/mod v0.32.0 // indirect
	golang.org/x/net v0.50.0 // indirect
	golang.org/x/sync v0.19.0 // indirect
	golang.org/x/sys v0.41.0 // indirect
	golang.org/x/text v0.34.0 // indirect
	golang.org/x/tools v0.41.0 // indirect
	google.golang.org/genproto/googleapis/api v0.0.0-20260128011058-8636f8732409 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260128011058-8636f8732409 // indirect
	google.golang.org/protobuf v1.36.11 // indirect
)

replace etcd-registrar.io/tests/consumers/emit => ./emit
