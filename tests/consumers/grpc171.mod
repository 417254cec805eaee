// The module of ./cmd/grpc-balancer alone at google.golang.org/grpc v1.71.1, the last
// release whose round_robin panics on etcd-naming metadata that is a JSON object or array
// (grpc/grpc-go#8225; fixed in 1.72.0), still with the etcd 3.5 resolver of go.mod, which
// passes the metadata on. hack/build-consumers.sh builds it with `go build -modfile`.
module etcd-registrar.io/tests/consumers

go 1.24.0

require (
	etcd-registrar.io/tests/consumers/emit v0.0.0
	go.etcd.io/etcd/client/v3 v3.5.21
	google.golang.org/grpc v1.71.1
)

require (
	github.com/coreos/go-semver v0.3.0 // indirect
	github.com/coreos/go-systemd/v22 v22.3.2 // indirect
	github.com/gogo/protobuf v1.3.2 // indirect
	github.com/golang/protobuf v1.5.4 // indirect
	go.etcd.io/etcd/api/v3 v3.5.21 // indirect
	go.etcd.io/etcd/client/pkg/v3 v3.5.21 // indirect
	go.uber.org/atomic v1.7.0 // indirect
	go.uber.org/multierr v1.6.0 // indirect
	go.uber.org/zap v1.17.0 // indirect
	golang.org/x/net v0.38.0 // indirect
	golang.org/x/sys v0.31.0 // indirect
	golang.org/x/text v0.23.0 // indirect
	google.golang.org/genproto/googleapis/api v0.0.0-20250106144421-5f5ef82da422 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20250115164207-1a7da9e5054f // indirect
	google.golang.org/protobuf v1.36.4 // indirect
)

replace etcd-registrar.io/tests/consumers/emit => ./emit
