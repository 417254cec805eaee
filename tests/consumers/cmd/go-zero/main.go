// Command go-zero subscribes to a key with github.com/zeromicro/go-zero/core/discov, the
// Subscriber a go-zero zrpc client resolves "etcd" targets with, and prints its values
// (source "subscriber") after every change it notifies.
package main

import (
	"os"

	"github.com/zeromicro/go-zero/core/discov"
	"github.com/zeromicro/go-zero/core/logx"

	"etcd-registrar.io/tests/consumers/emit"
)

func main() {
	etcd, key := emit.Args("key", "the key a go-zero server registers under (its Etcd.Key), e.g. goods")
	logx.SetWriter(logx.NewWriter(os.Stderr)) // stdout carries only JSON lines
	logx.DisableStat()

	sub, err := discov.NewSubscriber(etcd, key)
	if err != nil {
		emit.Fatalf("subscriber: %v", err)
	}
	out := emit.New()
	changed := make(chan struct{}, 1)
	sub.AddListener(func() {
		select {
		case changed <- struct{}{}:
		default: // a report is already due; it reads the latest values
		}
	})
	out.Set("subscriber", sub.Values(), nil)
	for range changed {
		out.Set("subscriber", sub.Values(), nil)
	}
}
