// Package emit prints what a consumer library resolves, one JSON line per change:
//
//	{"source":"watch","endpoints":["10.0.0.5:80","10.0.0.6:80"],"details":{...}}
//
// Each consumer may have several views ("sources": a resolver, a GetService, a watcher);
// a line is printed only when that source's full set (or its details) changed.
package emit

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
)

// Line is one observation of one source: the full current set, sorted.
type Line struct {
	Source    string         `json:"source"`
	Endpoints []string       `json:"endpoints"`
	Details   map[string]any `json:"details,omitempty"`
}

// Printer writes Lines to stdout, skipping repeats per source. Safe for concurrent use.
type Printer struct {
	mu   sync.Mutex
	last map[string]string
}

// New returns a Printer.
func New() *Printer { return &Printer{last: map[string]string{}} }

// Set reports the current endpoints of source (details: optional per-endpoint facts).
func (p *Printer) Set(source string, endpoints []string, details map[string]any) {
	eps := append([]string{}, endpoints...)
	sort.Strings(eps)
	eps = dedupe(eps)
	text, err := json.Marshal(Line{Source: source, Endpoints: eps, Details: details})
	if err != nil {
		Logf("%s: cannot encode: %v", source, err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last[source] == string(text) {
		return
	}
	p.last[source] = string(text)
	fmt.Fprintf(os.Stdout, "%s\n", text)
}

func dedupe(sorted []string) []string {
	out := sorted[:0]
	for i, s := range sorted {
		if i == 0 || s != sorted[i-1] {
			out = append(out, s)
		}
	}
	return out
}

// Logf writes a diagnostic to stderr (stdout carries only JSON lines).
func Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

// Fatalf logs and exits 1.
func Fatalf(format string, args ...any) {
	Logf(format, args...)
	os.Exit(1)
}

// Args registers -etcd (comma-separated etcd client URLs) and the required string flag
// `name`, parses the command line (with any flags the caller registered before) and returns
// the etcd URLs and the flag's value. It exits with the usage when the flag is missing.
func Args(name, usage string) ([]string, string) {
	etcd := flag.String("etcd", "http://127.0.0.1:2379", "comma-separated etcd client URLs")
	value := flag.String(name, "", usage+" (required)")
	flag.Parse()
	Require(name, *value)
	var urls []string
	for _, e := range strings.Split(*etcd, ",") {
		if e = strings.TrimSpace(e); e != "" {
			urls = append(urls, e)
		}
	}
	return urls, *value
}

// Require exits with the usage when the required flag `name` is empty.
func Require(name, value string) {
	if value == "" {
		flag.Usage()
		Fatalf("-%s is required", name)
	}
}
