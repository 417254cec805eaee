// Command floor is the benchmark's lower bound: the least a Go controller needs to keep an
// etcd registry in step with pod readiness. A client-go informer on pods feeds a workqueue;
// workers read the pod from the informer cache and put (or delete) `<prefix>/<service>/<pod>`
// = `ip:port` on one lease kept alive by clientv3. No batching, no sweep, no status, no
// Events, no ownership records: what is left is the cost of the pipeline itself.
//
// It applies the operator's readiness rule (docs/annotations.md) and its opt-in annotation, so both
// write the same keys for the same pods. Prints "synced" once the informer has listed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"etcd-registrar.io/bench/internal/must"
)

const serviceAnnotation = "etcd-registrar.io/service"

type controller struct {
	etcd    *clientv3.Client
	lease   clientv3.LeaseID
	prefix  string
	pods    cache.Indexer
	queue   workqueue.TypedRateLimitingInterface[string]
	mu      sync.Mutex
	written map[string]entry // pod (namespace/name) -> the key and value it holds
}

type entry struct{ key, value string }

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file")
	namespace := flag.String("namespace", "", "namespace to watch (default: all)")
	endpoints := flag.String("endpoints", "http://127.0.0.1:2379", "comma-separated etcd URLs")
	prefix := flag.String("prefix", "/floor", "key prefix")
	ttl := flag.Int64("ttl", 10, "lease TTL seconds")
	workers := flag.Int("workers", 8, "workqueue workers")
	flag.Parse()

	ctx, stop := must.UntilSignal()
	defer stop()
	kube := must.Kube(*kubeconfig)
	etcd := must.Etcd(*endpoints)
	defer etcd.Close()
	grant, err := etcd.Grant(ctx, *ttl)
	must.OK(err, "lease grant")
	keepalive, err := etcd.KeepAlive(ctx, grant.ID)
	must.OK(err, "keepalive")
	go func() {
		for range keepalive { //nolint:revive // drain the responses
		}
	}()

	factory := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(*namespace))
	informer := factory.Core().V1().Pods().Informer()
	c := &controller{
		etcd: etcd, lease: grant.ID, prefix: strings.TrimRight(*prefix, "/"),
		pods:    informer.GetIndexer(),
		queue:   workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		written: map[string]entry{},
	}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	_, err = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	})
	must.OK(err, "event handler")
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		must.Fail("informer never synced")
	}
	fmt.Println("synced")
	for range *workers {
		go c.run(ctx)
	}
	<-ctx.Done()
	c.queue.ShutDown()
	revokeCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = etcd.Revoke(revokeCtx, grant.ID)
}

func (c *controller) run(ctx context.Context) {
	for {
		key, shutdown := c.queue.Get()
		if shutdown {
			return
		}
		if err := c.sync(ctx, key); err != nil {
			fmt.Fprintf(os.Stderr, "sync %s: %v\n", key, err)
			c.queue.AddRateLimited(key)
		} else {
			c.queue.Forget(key)
		}
		c.queue.Done(key)
	}
}

// sync makes etcd hold the key of pod `key` exactly while the pod is serving.
func (c *controller) sync(ctx context.Context, key string) error {
	obj, exists, err := c.pods.GetByKey(key)
	if err != nil {
		return err
	}
	want, value := "", ""
	if exists {
		want, value = c.desired(obj.(*corev1.Pod))
	}
	c.mu.Lock()
	held := c.written[key]
	c.mu.Unlock()
	if held == (entry{want, value}) {
		return nil // unchanged: nothing to write
	}
	if held.key != "" && held.key != want {
		if _, err := c.etcd.Delete(ctx, held.key); err != nil {
			return err
		}
	}
	if want != "" {
		if _, err := c.etcd.Put(ctx, want, value, clientv3.WithLease(c.lease)); err != nil {
			return err
		}
	}
	c.mu.Lock()
	if want == "" {
		delete(c.written, key)
	} else {
		c.written[key] = entry{want, value}
	}
	c.mu.Unlock()
	return nil
}

// desired returns the etcd key and value of a serving, opted-in pod, else "".
func (c *controller) desired(pod *corev1.Pod) (string, string) {
	service := pod.Annotations[serviceAnnotation]
	if service == "" || pod.Status.PodIP == "" || pod.DeletionTimestamp != nil ||
		pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return "", ""
	}
	ready := false
	for _, cond := range pod.Status.Conditions {
		if cond.Type == corev1.PodReady {
			ready = cond.Status == corev1.ConditionTrue
		}
	}
	if !ready || len(pod.Spec.Containers) == 0 || len(pod.Spec.Containers[0].Ports) == 0 {
		return "", ""
	}
	port := pod.Spec.Containers[0].Ports[0].ContainerPort
	return fmt.Sprintf("%s/%s/%s", c.prefix, service, pod.Name), fmt.Sprintf("%s:%d", pod.Status.PodIP, port)
}
