// Package must holds what the benchmark's Go programs share: connecting to etcd and the
// API server, and failing loudly (a benchmark that hits an error has no result to give).
package must

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Fail prints "<program>: <message>" to stderr and exits 1.
func Fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, filepath.Base(os.Args[0])+": "+format+"\n", args...)
	os.Exit(1)
}

// OK fails with `what` when err is not nil.
func OK(err error, what string) {
	if err != nil {
		Fail("%s: %v", what, err)
	}
}

// Etcd connects to comma-separated etcd endpoints.
func Etcd(endpoints string) *clientv3.Client {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: strings.Split(endpoints, ","), DialTimeout: 10 * time.Second,
	})
	OK(err, "etcd client")
	return cli
}

// Kube is a clientset for a kubeconfig file.
func Kube(kubeconfig string) *kubernetes.Clientset {
	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	OK(err, "kubeconfig")
	clientset, err := kubernetes.NewForConfig(config)
	OK(err, "kubernetes client")
	return clientset
}

// UntilSignal is a context cancelled by SIGTERM or SIGINT (how the benchmark stops a program).
func UntilSignal() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
}
