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

// state is what the registry should make of the pod (docs/annotations.md, as bench/floor reads it).
// A pod with readiness gates is on a node no kubelet manages, so its Ready is computed here
// as a kubelet would: R once ContainersReady and every gate condition are True, C while its
// containers are ready but a gate is not (the moment it asks to be registered).
func state(pod *corev1.Pod) string {
	if pod.DeletionTimestamp != nil {
		return "T"
	}
	status := map[corev1.PodConditionType]corev1.ConditionStatus{}
	for _, c := range pod.Status.Conditions {
		status[c.Type] = c.Status
	}
	if pod.Status.PodIP == "" {
		return "U"
	}
	if len(pod.Spec.ReadinessGates) == 0 {
		if status[corev1.PodReady] == corev1.ConditionTrue {
			return "R"
		}
		return "U"
	}
	if status[corev1.ContainersReady] != corev1.ConditionTrue {
		return "U"
	}
	for _, gate := range pod.Spec.ReadinessGates {
		if status[gate.ConditionType] != corev1.ConditionTrue {
			return "C"
		}
	}
	return "R"
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
