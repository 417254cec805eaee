// Command dnswatch queries a DNS server for a name's A and SRV records every -interval and
// prints each answer set when it changes: source "A" lists the addresses, source "SRV" lists
// "ip:port" for each SRV target (resolved through the A records in the additional section).
// Details carry the answers' TTLs (and SRV targets). NXDOMAIN or an empty answer is an
// empty set; a query that fails (server not up yet) prints nothing.
package main

import (
	"flag"
	"net"
	"strconv"
	"time"

	"github.com/miekg/dns"

	"etcd-registrar.io/tests/consumers/emit"
)

func main() {
	server := flag.String("server", "127.0.0.1:53", "DNS server host:port")
	name := flag.String("name", "", "DNS name to query, e.g. goods.skydns.local")
	interval := flag.Duration("interval", 100*time.Millisecond, "query interval")
	flag.Parse()
	emit.Require("name", *name)
	fqdn := dns.Fqdn(*name)
	client := &dns.Client{Timeout: time.Second}
	out := emit.New()

	for {
		if eps, details, ok := queryA(client, *server, fqdn); ok {
			out.Set("A", eps, details)
		}
		if eps, details, ok := querySRV(client, *server, fqdn); ok {
			out.Set("SRV", eps, details)
		}
		time.Sleep(*interval)
	}
}

func exchange(client *dns.Client, server, fqdn string, qtype uint16) (*dns.Msg, bool) {
	m := new(dns.Msg)
	m.SetQuestion(fqdn, qtype)
	r, _, err := client.Exchange(m, server)
	if err != nil {
		emit.Logf("%s %s: %v", dns.TypeToString[qtype], fqdn, err)
		return nil, false
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		emit.Logf("%s %s: rcode %s", dns.TypeToString[qtype], fqdn, dns.RcodeToString[r.Rcode])
		return nil, false
	}
	return r, true
}

func queryA(client *dns.Client, server, fqdn string) ([]string, map[string]any, bool) {
	r, ok := exchange(client, server, fqdn, dns.TypeA)
	if !ok {
		return nil, nil, false
	}
	eps := []string{}
	details := map[string]any{}
	for _, rr := range r.Answer {
		if a, isA := rr.(*dns.A); isA {
			ip := a.A.String()
			eps = append(eps, ip)
			details[ip] = map[string]any{"ttl": a.Hdr.Ttl}
		}
	}
	return eps, details, true
}

func querySRV(client *dns.Client, server, fqdn string) ([]string, map[string]any, bool) {
	r, ok := exchange(client, server, fqdn, dns.TypeSRV)
	if !ok {
		return nil, nil, false
	}
	hosts := map[string][]string{}
	for _, rr := range r.Extra {
		if a, isA := rr.(*dns.A); isA {
			hosts[a.Hdr.Name] = append(hosts[a.Hdr.Name], a.A.String())
		}
	}
	eps := []string{}
	details := map[string]any{}
	for _, rr := range r.Answer {
		srv, isSRV := rr.(*dns.SRV)
		if !isSRV {
			continue
		}
		ips := hosts[srv.Target]
		if len(ips) == 0 {
			ips = []string{"unresolved:" + srv.Target}
		}
		for _, ip := range ips {
			ep := net.JoinHostPort(ip, strconv.Itoa(int(srv.Port)))
			eps = append(eps, ep)
			details[ep] = map[string]any{"target": srv.Target, "ttl": srv.Hdr.Ttl, "priority": srv.Priority}
		}
	}
	return eps, details, true
}
