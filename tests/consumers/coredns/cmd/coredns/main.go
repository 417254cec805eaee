// Command coredns is CoreDNS (github.com/coredns/coredns, coremain) built with only the
// plugins the consumer test needs: bind, errors, log and etcd. Same flags as coredns.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/etcd"
	_ "github.com/coredns/coredns/plugin/log"
)

func init() {
	// The order plugins run in, as in CoreDNS' plugin.cfg (a subset of it).
	dnsserver.Directives = []string{"bind", "errors", "log", "etcd"}
}

func main() {
	coremain.Run()
}
