// Command probe is the benchmark's view of the registry etcd.
//
//	probe watch -endpoints URL -prefix P   stream every PUT/DELETE under P, one line each:
//	                                       "<CLOCK_MONOTONIC ns> P|D <key>", flushed per
//	                                       watch response; first line "ready <n keys> <rev>"
//	probe pods -kubeconfig F -namespace NS stream every pod change the API server sends
//	                                       to a watcher: "<ns> <state> <pod>", state R
//	                                       (serving), U (not), T (terminating), X (gone),
//	                                       C (gated pod: containers ready, a gate not);
//	                                       first line "ready <n pods> <resourceVersion>"
//	probe leases -endpoints URL            print how many leases etcd holds
//	probe clean -endpoints URL -prefix P   revoke every lease attached to a key under P
//	                                       (repeatable), then delete what is left under P
//
// Timestamps come from CLOCK_MONOTONIC, the clock Python's time.monotonic() reads, so the
// benchmark compares them with its own request times directly. The pod stream tells the
// benchmark when the API server published each status change to its watchers (the
// controllers under test receive it at the same moment).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"etcd-registrar.io/bench/internal/must"
)

type prefixes []string

func (p *prefixes) String() string     { return strings.Join(*p, ",") }
func (p *prefixes) Set(v string) error { *p = append(*p, v); return nil }

func monotonicNs() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return ts.Nano()
}

func main() {
	if len(os.Args) < 2 {
		must.Fail("usage: probe watch|leases|clean [flags]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	endpoints := fs.String("endpoints", "http://127.0.0.1:2379", "comma-separated etcd URLs")
	var prefix prefixes
	fs.Var(&prefix, "prefix", "key prefix (repeatable for clean)")
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig (pods)")
	namespace := fs.String("namespace", "", "namespace (pods)")
	_ = fs.Parse(os.Args[2:])
	if os.Args[1] == "pods" {
		watchPods(*kubeconfig, *namespace)
		return
	}
	cli := must.Etcd(*endpoints)
	defer cli.Close()
	ctx := context.Background()
	switch os.Args[1] {
	case "watch":
		if len(prefix) != 1 {
			must.Fail("watch takes exactly one -prefix")
		}
		watchKeys(ctx, cli, prefix[0])
	case "leases":
		resp, err := cli.Leases(ctx)
		if err != nil {
			must.Fail("leases: %v", err)
		}
		fmt.Println(len(resp.Leases))
	case "clean":
		for _, p := range prefix {
			clean(ctx, cli, p)
		}
	default:
		must.Fail("unknown command %q", os.Args[1])
	}
}

func watchKeys(ctx context.Context, cli *clientv3.Client, prefix string) {
	snapshot, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		must.Fail("get: %v", err)
	}
	out := bufio.NewWriterSize(os.Stdout, 1<<16)
	fmt.Fprintf(out, "ready %d %d\n", len(snapshot.Kvs), snapshot.Header.Revision)
	for _, kv := range snapshot.Kvs {
		fmt.Fprintf(out, "%d S %s\n", monotonicNs(), kv.Key)
	}
	_ = out.Flush()
	rev := snapshot.Header.Revision + 1
	for resp := range cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev)) {
		now := monotonicNs()
		if err := resp.Err(); err != nil {
			must.Fail("watch: %v", err)
		}
		for _, ev := range resp.Events {
			kind := "P"
			if ev.Type == clientv3.EventTypeDelete {
				kind = "D"
			}
			fmt.Fprintf(out, "%d %s %s\n", now, kind, ev.Kv.Key)
		}
		if err := out.Flush(); err != nil {
			return // the reader went away
		}
	}
}

func clean(ctx context.Context, cli *clientv3.Client, prefix string) {
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		must.Fail("get: %v", err)
	}
	leases := map[clientv3.LeaseID]bool{}
	for _, kv := range resp.Kvs {
		if kv.Lease != 0 {
			leases[clientv3.LeaseID(kv.Lease)] = true
		}
	}
	for id := range leases {
		if _, err := cli.Revoke(ctx, id); err != nil && !strings.Contains(err.Error(), "not found") {
			must.Fail("revoke %x: %v", id, err)
		}
	}
	if _, err := cli.Delete(ctx, prefix, clientv3.WithPrefix()); err != nil {
		must.Fail("delete: %v", err)
	}
}
