// The JSON-lines printer shared by the consumer programs (standard library only, so it
// adds nothing to the consumers' dependency graphs).
module etcd-registrar.io/tests/consumers/emit

go 1.21
