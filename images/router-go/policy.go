package main

// policy.go owns the address policy: which IP addresses (and address:port pairs) the router may
// open a connection to, the strict parsing of X-Sandbox-Pod-IP and X-Sandbox-Timeout, and the
// discovery of the router's own interface addresses. It is the Go twin of AddressPolicy,
// parse_pod_ip and parse_timeout in sandbox_router/routing.py and of sandbox_router/netinfo.py;
// the refusal texts are the same, because they reach callers inside the 400 answer's detail.

import (
	"cmp"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Cloud metadata and platform endpoints that are not link-local and so need naming explicitly.
var metadataNetworks = []netip.Prefix{
	netip.MustParsePrefix("fd00:ec2::254/128"),  // AWS IMDS over IPv6
	netip.MustParsePrefix("fd20:ce::254/128"),   // GCP metadata server over IPv6
	netip.MustParsePrefix("100.100.100.200/32"), // Alibaba Cloud metadata
	netip.MustParsePrefix("168.63.129.16/32"),   // Azure WireServer
}

// IPv6 prefixes whose packets end up at an IPv4 address (6to4 relays, NAT64 gateways, Teredo):
// judging the IPv6 address alone would let 2002:a9fe:a9fe:: reach 169.254.169.254. No pod has
// such an address, so they are refused outright rather than by the IPv4 they embed.
var ipv4EmbeddingNetworks = []netip.Prefix{
	netip.MustParsePrefix("2002::/16"),      // 6to4
	netip.MustParsePrefix("64:ff9b::/96"),   // NAT64 well-known prefix
	netip.MustParsePrefix("64:ff9b:1::/48"), // NAT64 local-use prefix
	netip.MustParsePrefix("2001::/32"),      // Teredo
}

// specialNetwork is a special-purpose range (IANA registries) that is never a sandbox pod.
// overridable ranges are also used as pod ranges by some clusters (e.g. EKS custom networking
// in 100.64.0.0/10), so they are allowed when - and only when - ROUTER_ALLOWED_POD_CIDRS names
// a subnet of them.
type specialNetwork struct {
	network     netip.Prefix
	reason      string
	overridable bool
}

var specialNetworks = []specialNetwork{
	{netip.MustParsePrefix("100.64.0.0/10"), "it is shared address space (carrier-grade NAT)", true},
	{netip.MustParsePrefix("198.18.0.0/15"), "it is the benchmarking range", true},
	{netip.MustParsePrefix("192.0.0.0/24"), "it is special-purpose (IETF protocol assignments)", false},
	{netip.MustParsePrefix("192.0.2.0/24"), "it is a documentation range", false},
	{netip.MustParsePrefix("198.51.100.0/24"), "it is a documentation range", false},
	{netip.MustParsePrefix("203.0.113.0/24"), "it is a documentation range", false},
	{netip.MustParsePrefix("2001:db8::/32"), "it is a documentation range", false},
	{netip.MustParsePrefix("100::/64"), "it is the discard-only range", false},
	{netip.MustParsePrefix("240.0.0.0/4"), "it is reserved", false},
	{netip.MustParsePrefix("fec0::/10"), "it is reserved (site-local)", false},
	{netip.MustParsePrefix("::/8"), "it is reserved", false}, // IPv4-compatible and other legacy forms
}

// The categories of Python's ipaddress module (3.11) that the policy relies on, spelled out so
// that both routers draw exactly the same lines.
var (
	thisNetwork      = netip.MustParsePrefix("0.0.0.0/8")
	ipv4Broadcast    = netip.MustParseAddr("255.255.255.255")
	ipv4Multicast    = netip.MustParsePrefix("224.0.0.0/4")
	ipv6Multicast    = netip.MustParsePrefix("ff00::/8")
	ipv4LinkLocal    = netip.MustParsePrefix("169.254.0.0/16")
	ipv6LinkLocal    = netip.MustParsePrefix("fe80::/10")
	ipv4Loopback     = netip.MustParsePrefix("127.0.0.0/8")
	ipv6Loopback     = netip.IPv6Loopback()
	ipv4Reserved     = netip.MustParsePrefix("240.0.0.0/4")
	ipv6ReservedNets = []netip.Prefix{ // ipaddress.IPv6Address.is_reserved
		netip.MustParsePrefix("::/8"), netip.MustParsePrefix("100::/8"), netip.MustParsePrefix("200::/7"),
		netip.MustParsePrefix("400::/6"), netip.MustParsePrefix("800::/5"), netip.MustParsePrefix("1000::/4"),
		netip.MustParsePrefix("4000::/3"), netip.MustParsePrefix("6000::/3"), netip.MustParsePrefix("8000::/3"),
		netip.MustParsePrefix("a000::/3"), netip.MustParsePrefix("c000::/3"), netip.MustParsePrefix("e000::/4"),
		netip.MustParsePrefix("f000::/5"), netip.MustParsePrefix("f800::/6"), netip.MustParsePrefix("fe00::/9"),
	}
)

// endpoint is one address:port the router itself listens on.
type endpoint struct {
	addr netip.Addr
	port int
}

// AddressPolicy decides whether the router may open a connection to an IP address.
//
// Refused always: unspecified, 0.0.0.0/8, multicast, broadcast, link-local (this includes
// 169.254.169.254 metadata), reserved, site-local, known cloud metadata addresses, IPv6 prefixes
// that lead to IPv4, special-purpose ranges and the router's own addresses and listening
// endpoints. Loopback is refused unless explicitly allowed for local tests. When pod CIDRs are
// configured, every address (loopback included) must be inside one of them. IPv4-mapped IPv6
// is judged as the IPv4 address it maps.
//
// Refusal is safe for concurrent use at any time; AddOwnEndpoint may run concurrently with it.
type AddressPolicy struct {
	allowed       []netip.Prefix
	allowLoopback bool
	own           map[netip.Addr]struct{} // read-only after NewAddressPolicy

	mu   sync.Mutex                            // serialises AddOwnEndpoint
	self atomic.Pointer[map[endpoint]struct{}] // copy-on-write: Refusal reads without a lock
}

// NewAddressPolicy builds the policy from the configured pod CIDRs, the loopback test flag and
// the router's own addresses (ROUTER_POD_IP plus LocalAddresses, as text). own entries are
// already validated (LoadSettings, LocalAddresses): one that is not an IP address is a
// programming error and panics rather than silently weakening the policy.
func NewAddressPolicy(allowed []netip.Prefix, allowLoopback bool, own []string) *AddressPolicy {
	p := &AddressPolicy{allowLoopback: allowLoopback, own: make(map[netip.Addr]struct{}, len(own))}
	for _, network := range allowed {
		p.allowed = append(p.allowed, network.Masked())
	}
	for _, text := range own {
		address, ok := parsePyAddr(text)
		if !ok {
			panic("sandbox router: own address " + strconv.Quote(text) + " is not an IP address")
		}
		// Unmapped, so that ROUTER_POD_IP=::ffff:10.0.0.5 protects 10.0.0.5 (Refusal judges
		// mapped addresses as IPv4; the Python policy compares the mapped form and misses it).
		p.own[unmapKeepingZone(address)] = struct{}{}
	}
	return p
}

// AddOwnEndpoint records a listening endpoint of the router, which is then refused as a target
// ("it is the router itself") so that a request cannot make the router call itself. A wildcard
// address (0.0.0.0 or ::) stands for loopback (127.0.0.1 and ::1) and every own address on that
// port, as the Python app's _set_self_endpoints does. A zone is dropped, as Python drops the
// "%scope" of the socket name.
func (p *AddressPolicy) AddOwnEndpoint(addr netip.Addr, port int) {
	addr = addr.WithZone("").Unmap()
	p.mu.Lock()
	defer p.mu.Unlock()
	next := make(map[endpoint]struct{})
	if current := p.self.Load(); current != nil {
		for e := range *current {
			next[e] = struct{}{}
		}
	}
	if addr.IsUnspecified() {
		next[endpoint{netip.AddrFrom4([4]byte{127, 0, 0, 1}), port}] = struct{}{}
		next[endpoint{netip.IPv6Loopback(), port}] = struct{}{}
		for own := range p.own {
			next[endpoint{own, port}] = struct{}{}
		}
	} else {
		next[endpoint{addr, port}] = struct{}{}
	}
	p.self.Store(&next)
}

// Refusal returns why addr:port is refused (the text goes into "Invalid target IP address:
// <reason>."), or "" when the router may connect to it. It allocates nothing.
func (p *AddressPolicy) Refusal(addr netip.Addr, port int) string {
	if !addr.IsValid() {
		return "it is unspecified" // the zero Addr: nothing to connect to
	}
	addr = unmapKeepingZone(addr)
	if self := p.self.Load(); self != nil {
		if _, ok := (*self)[endpoint{addr, port}]; ok {
			return "it is the router itself"
		}
	}
	// Python ignores the zone when testing membership of a network; netip would never match.
	a := addr.WithZone("")
	v4 := a.Is4()
	switch {
	case a.IsUnspecified() || thisNetwork.Contains(a):
		return "it is unspecified"
	case ipv4Multicast.Contains(a) || ipv6Multicast.Contains(a):
		return "it is multicast"
	case a == ipv4Broadcast:
		return "it is broadcast"
	case ipv4LinkLocal.Contains(a) || ipv6LinkLocal.Contains(a):
		return "it is link-local (metadata endpoints live there)"
	case containsAddr(metadataNetworks, a):
		return "it is a cloud metadata endpoint"
	case !v4 && containsAddr(ipv4EmbeddingNetworks, a):
		return "it embeds an IPv4 address (6to4, NAT64 or Teredo)"
	}
	if ipv4Loopback.Contains(a) || a == ipv6Loopback {
		if !p.allowLoopback {
			return "it is loopback"
		}
	} else if reason := p.special(a); reason != "" {
		return reason
	}
	if _, ok := p.own[addr]; ok {
		return "it is the router's own address"
	}
	if len(p.allowed) > 0 && !containsAddr(p.allowed, a) {
		return "it is outside the configured pod CIDRs"
	}
	return ""
}

// special is the special-purpose range a is in (unless an allowed pod CIDR inside an
// overridable range covers it), else "it is reserved" for what Python's ipaddress calls
// reserved, else "".
func (p *AddressPolicy) special(a netip.Addr) string {
	for i := range specialNetworks {
		s := &specialNetworks[i]
		if !s.network.Contains(a) {
			continue
		}
		if s.overridable {
			for _, network := range p.allowed {
				if network.Contains(a) && subnetOf(network, s.network) {
					return ""
				}
			}
		}
		return s.reason
	}
	if ipv4Reserved.Contains(a) || (!a.Is4() && containsAddr(ipv6ReservedNets, a)) {
		return "it is reserved"
	}
	return ""
}

// containsAddr reports whether one of networks contains a (IPv4 never matches an IPv6 network
// and vice versa).
func containsAddr(networks []netip.Prefix, a netip.Addr) bool {
	for _, network := range networks {
		if network.Contains(a) {
			return true
		}
	}
	return false
}

// subnetOf reports whether inner lies entirely within outer (Python's subnet_of).
func subnetOf(inner, outer netip.Prefix) bool {
	return inner.Addr().BitLen() == outer.Addr().BitLen() && inner.Bits() >= outer.Bits() &&
		outer.Contains(inner.Addr())
}

// unmapKeepingZone is Unmap for an IPv4-mapped address (which has no zone in Python either)
// and the address itself, zone included, otherwise.
func unmapKeepingZone(a netip.Addr) netip.Addr {
	if a.Is4In6() {
		return a.Unmap()
	}
	return a
}

// The shared refusals of the routing headers. Handed out as they are: callers must not modify
// a *RoutingError they receive.
var (
	errInvalidPodIP   = &RoutingError{Status: 400, Detail: "Invalid target IP address format.", Reason: "routing"}
	errInvalidTimeout = &RoutingError{Status: 400, Detail: "Invalid timeout format.", Reason: "routing"}
)

// ParsePodIP parses X-Sandbox-Pod-IP strictly: a bare IPv4/IPv6 literal, no zone, brackets or
// port; IPv4 in dotted-quad form only (no 127.1, hex or leading zeros). An IPv4-mapped IPv6
// address comes back as the IPv4 address it maps. The error is a *RoutingError (400).
func ParsePodIP(raw string) (netip.Addr, error) {
	address, ok := parsePodIP(raw)
	if !ok {
		return netip.Addr{}, errInvalidPodIP
	}
	return address, nil
}

// parsePodIP is ParsePodIP without the error value. The byte checks mirror routing.py, where
// the value is the latin-1 decoding of the header: length in bytes, no '%', no whitespace;
// netip then refuses anything non-ASCII as Python's ipaddress does.
func parsePodIP(raw string) (netip.Addr, bool) {
	if raw == "" || len(raw) > 45 {
		return netip.Addr{}, false
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c == '%' || isLatin1Space(c) {
			return netip.Addr{}, false
		}
	}
	address, err := netip.ParseAddr(raw)
	if err != nil {
		return netip.Addr{}, false
	}
	return address.Unmap(), true
}

// isLatin1Space is str.isspace for a latin-1 decoded byte.
func isLatin1Space(c byte) bool {
	return (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= ' ') || c == 0x85 || c == 0xa0
}

// ParseTimeout parses X-Sandbox-Timeout (positive seconds) and caps it at maximum, the router's
// own proxy timeout. Accepted are up to 12 digits with up to 9 decimals ("30", "2.5", ".5") and
// small negative-exponent forms ("1e-05"), as routing.py's pattern; the result is at least 1ns.
func ParseTimeout(raw string, maximum time.Duration) (time.Duration, *RoutingError) {
	if !timeoutSyntax(raw) {
		return 0, errInvalidTimeout
	}
	value, err := strconv.ParseFloat(raw, 64)
	if err != nil || math.IsInf(value, 0) || math.IsNaN(value) || value <= 0 {
		return 0, errInvalidTimeout
	}
	if value >= maximum.Seconds() {
		return maximum, nil
	}
	return secondsDuration(value), nil
}

// timeoutSyntax is a full match of routing.py's pattern
// [0-9]{1,12}(\.[0-9]{1,9})? | \.[0-9]{1,9} | [0-9](\.[0-9]+)?[eE]-[0-9]{1,2}
// (ASCII digits only, as Python's [0-9]).
func timeoutSyntax(s string) bool {
	digits := func(s string) int { // the length of the leading run of ASCII digits
		n := 0
		for n < len(s) && s[n] >= '0' && s[n] <= '9' {
			n++
		}
		return n
	}
	whole := digits(s)
	rest := s[whole:]
	if rest == "" {
		return whole >= 1 && whole <= 12
	}
	if rest[0] == '.' {
		fraction := digits(rest[1:])
		after := rest[1+fraction:]
		if after == "" {
			return whole <= 12 && fraction >= 1 && fraction <= 9
		}
		rest = after
		if whole != 1 || fraction == 0 {
			return false
		}
	} else if whole != 1 {
		return false
	}
	// The exponent branch: one digit, an optional fraction (checked above), then e-NN.
	if len(rest) < 3 || (rest[0] != 'e' && rest[0] != 'E') || rest[1] != '-' {
		return false
	}
	exponent := digits(rest[2:])
	return exponent >= 1 && exponent <= 2 && 2+exponent == len(rest)
}

// LocalAddresses returns this host's (or pod's) interface addresses, loopback excluded, sorted
// as text: addresses the router must never proxy to, since a crafted X-Sandbox-Pod-IP could
// otherwise make it call itself or anything else listening in its network namespace. They are
// read from the kernel (no DNS lookups); a failure to list them yields none, as in Python.
// Unlike netinfo.py, which reads one IPv4 address per interface, every IPv4 address is listed.
func LocalAddresses() []netip.Addr {
	interfaceAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var found []netip.Addr
	for _, ia := range interfaceAddrs {
		var ip net.IP
		switch v := ia.(type) {
		case *net.IPNet:
			ip = v.IP
		case *net.IPAddr:
			ip = v.IP
		default:
			continue
		}
		address, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		address = address.Unmap()
		if ipv4Loopback.Contains(address) || address == ipv6Loopback || slices.Contains(found, address) {
			continue
		}
		found = append(found, address)
	}
	slices.SortFunc(found, func(a, b netip.Addr) int { return cmp.Compare(a.String(), b.String()) })
	return found
}
