package ratelimit

import (
	"net/netip"
	"strings"
)

// ClientAddr is the address a request comes from, for counting: peer, unless peer is a trusted
// proxy; then the nearest address of X-Forwarded-For (forwardedFor, its header values in order)
// that is not a trusted proxy itself, read from the right, since only the entries the trusted
// proxies appended can be believed. An entry that is not an address ends the walk at the last
// trusted hop.
func ClientAddr(peer netip.Addr, forwardedFor []string, trusted func(netip.Addr) bool) netip.Addr {
	addr := peer.Unmap()
	if !trusted(addr) {
		return addr
	}
	for i := len(forwardedFor) - 1; i >= 0; i-- {
		rest := forwardedFor[i]
		for rest != "" {
			var entry string
			if j := strings.LastIndexByte(rest, ','); j >= 0 {
				entry, rest = rest[j+1:], rest[:j]
			} else {
				entry, rest = rest, ""
			}
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			a, ok := parseForwarded(entry)
			if !ok {
				return addr
			}
			addr = a
			if !trusted(addr) {
				return addr
			}
		}
	}
	return addr
}

// parseForwarded reads one X-Forwarded-For entry: an address, with or without a port
// ("203.0.113.9:4711", "[2001:db8::1]:4711").
func parseForwarded(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// AddrKey names a client address for counting: an IPv4 address as itself, an IPv6 address by
// its /64 network, since one subscriber or host usually holds a whole /64 and could otherwise
// take a fresh address for every attempt.
func AddrKey(a netip.Addr) string {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.WithZone("").Prefix(64)
		return p.String()
	}
	return a.String()
}

// PrincipalKeys is the AuthFailureKey scope of principal keys, which the admin API and the token
// endpoints check alike and so count together.
const PrincipalKeys = "principal"

// AuthFailureKey is the Failures key of failed authentications from client in scope
// (PrincipalKeys, or "service:<name>" for a service's credentials): "auth:<scope>:<AddrKey>".
func AuthFailureKey(scope string, client netip.Addr) string {
	return "auth:" + scope + ":" + AddrKey(client)
}
