package main

import (
	"bufio"
	"context"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"etcd-registrar.io/bench/internal/must"
)

// state is what the registry should make of the pod (DESIGN §2.4, as bench/floor reads it).
func state(pod *corev1.Pod) string {
	if pod.DeletionTimestamp != nil {
		return "T"
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && pod.Status.PodIP != "" {
			return "R"
		}
	}
	return "U"
}

func watchPods(kubeconfig, namespace string) {
	pods := must.Kube(kubeconfig).CoreV1().Pods(namespace)
	ctx := context.Background()
	list, err := pods.List(ctx, metav1.ListOptions{})
	if err != nil {
		must.Fail("list pods: %v", err)
	}
	out := bufio.NewWriterSize(os.Stdout, 1<<16)
	fmt.Fprintf(out, "ready %d %s\n", len(list.Items), list.ResourceVersion)
	_ = out.Flush()
	rv := list.ResourceVersion
	for { // a watch the server closes is resumed from the last version seen
		w, err := pods.Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
		if err != nil {
			must.Fail("watch pods: %v", err)
		}
		for ev := range w.ResultChan() {
			now := monotonicNs()
			pod, ok := ev.Object.(*corev1.Pod)
			if ev.Type == watch.Error || !ok {
				must.Fail("watch pods: %v", ev.Object) // e.g. 410 Gone: the run is void
			}
			rv = pod.ResourceVersion
			switch ev.Type {
			case watch.Bookmark:
				continue
			case watch.Deleted:
				fmt.Fprintf(out, "%d X %s\n", now, pod.Name)
			default:
				fmt.Fprintf(out, "%d %s %s\n", now, state(pod), pod.Name)
			}
			if out.Buffered() > 0 && len(w.ResultChan()) == 0 {
				if err := out.Flush(); err != nil {
					return // the reader went away
				}
			}
		}
		_ = out.Flush()
	}
}
