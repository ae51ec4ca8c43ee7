package main

// Tests of policy.go: the address policy cases of tests/unit/test_router_routing.py, the strict
// pod-IP and timeout parsing, and the router's own endpoints.

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

func prefixes(texts ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, text := range texts {
		out = append(out, netip.MustParsePrefix(text))
	}
	return out
}

func refusalOf(p *AddressPolicy, address string, port int) string {
	return p.Refusal(netip.MustParseAddr(address), port)
}

func TestAddressPolicyRefusesDangerousAddresses(t *testing.T) {
	policy := NewAddressPolicy(nil, false, []string{"10.9.9.9"})
	for _, c := range [][2]string{
		{"0.0.0.0", "unspecified"}, {"::", "unspecified"}, {"0.1.2.3", "unspecified"},
		{"127.0.0.1", "loopback"}, {"127.9.9.9", "loopback"}, {"::1", "loopback"}, {"::ffff:127.0.0.1", "loopback"},
		{"169.254.169.254", "link-local"}, {"fe80::1", "link-local"}, {"::ffff:169.254.169.254", "link-local"},
		{"224.0.0.1", "multicast"}, {"ff02::1", "multicast"}, {"255.255.255.255", "broadcast"},
		{"240.0.0.1", "reserved"}, {"fec0::1", "reserved"},
		{"fd00:ec2::254", "metadata"}, {"100.100.100.200", "metadata"}, {"168.63.129.16", "metadata"},
		{"10.9.9.9", "own address"},
		// Issue 11 item 8: metadata and special-purpose ranges that used to be accepted.
		{"fd20:ce::254", "metadata"},
		{"2002:a9fe:a9fe::", "IPv4"}, {"2002:a9fe:a9fe::1", "IPv4"}, // 6to4 of 169.254.169.254
		{"2002:a00:1::1", "IPv4"},                        // any 6to4: reaches IPv4 through a relay
		{"64:ff9b::a9fe:a9fe", "IPv4"},                   // NAT64 of 169.254.169.254
		{"64:ff9b:1::a9fe:a9fe", "IPv4"},                 // local-use NAT64 prefix
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", "IPv4"}, // Teredo
		{"::a9fe:a9fe", "reserved"},                      // IPv4-compatible (deprecated) form
		{"100.64.0.1", "shared address space"}, {"100.127.255.254", "shared address space"},
		{"192.0.0.1", "special-purpose"}, {"192.0.0.170", "special-purpose"},
		{"198.18.0.1", "benchmarking"}, {"198.19.255.254", "benchmarking"},
		{"0.255.255.255", "unspecified"}, {"240.0.0.0", "reserved"}, {"255.255.255.254", "reserved"},
		{"192.0.2.1", "documentation"}, {"198.51.100.7", "documentation"}, {"203.0.113.9", "documentation"},
		{"2001:db8::1", "documentation"}, {"100::1", "discard"},
		// What Python's ipaddress calls reserved beyond the named ranges.
		{"4000::1", "reserved"}, {"fe00::1", "reserved"},
	} {
		if got := refusalOf(policy, c[0], 8888); got == "" || !strings.Contains(got, c[1]) {
			t.Errorf("%s: refusal %q, want one about %q", c[0], got, c[1])
		}
	}
}

func TestRefusalTextsAreThePythonRoutersTexts(t *testing.T) {
	policy := NewAddressPolicy(prefixes("10.0.0.0/8"), false, []string{"10.9.9.9"})
	policy.AddOwnEndpoint(netip.MustParseAddr("10.1.1.1"), 8080)
	for address, want := range map[string]string{
		"10.1.1.1":             "it is the router itself",
		"0.0.0.0":              "it is unspecified",
		"224.0.0.1":            "it is multicast",
		"255.255.255.255":      "it is broadcast",
		"169.254.169.254":      "it is link-local (metadata endpoints live there)",
		"fd00:ec2::254":        "it is a cloud metadata endpoint",
		"64:ff9b::a9fe:a9fe":   "it embeds an IPv4 address (6to4, NAT64 or Teredo)",
		"127.0.0.1":            "it is loopback",
		"100.64.0.1":           "it is shared address space (carrier-grade NAT)",
		"198.18.0.1":           "it is the benchmarking range",
		"192.0.0.170":          "it is special-purpose (IETF protocol assignments)",
		"203.0.113.9":          "it is a documentation range",
		"100::1":               "it is the discard-only range",
		"240.0.0.1":            "it is reserved",
		"fec0::1":              "it is reserved (site-local)",
		"::a9fe:a9fe":          "it is reserved",
		"10.9.9.9":             "it is the router's own address",
		"8.8.8.8":              "it is outside the configured pod CIDRs",
		"10.2.3.4":             "",
		"::ffff:10.2.3.4":      "",
		"::ffff:10.9.9.9":      "it is the router's own address",
		"fd00:10:244::5":       "it is outside the configured pod CIDRs",
		"::ffff:255.255.255.0": "it is reserved",
	} {
		if got := refusalOf(policy, address, 8080); got != want {
			t.Errorf("%s: %q, want %q", address, got, want)
		}
	}
}

func TestLoopbackFlagAllowsLoopbackButNotTheRouterItself(t *testing.T) {
	policy := NewAddressPolicy(nil, true, nil)
	policy.AddOwnEndpoint(netip.MustParseAddr("127.0.0.1"), 8080)
	if got := refusalOf(policy, "127.0.0.1", 8888); got != "" {
		t.Errorf("127.0.0.1:8888 refused: %q", got)
	}
	if got := refusalOf(policy, "127.0.0.1", 8080); !strings.Contains(got, "router itself") {
		t.Errorf("127.0.0.1:8080: %q", got)
	}
	if got := refusalOf(policy, "::ffff:127.0.0.1", 8080); !strings.Contains(got, "router itself") {
		t.Errorf("::ffff:127.0.0.1:8080: %q", got)
	}
}

func TestWildcardListenerStandsForLoopbackAndOwnAddresses(t *testing.T) {
	// _set_self_endpoints: a socket bound to 0.0.0.0 is reachable on 127.0.0.1, ::1 and
	// every own address.
	policy := NewAddressPolicy(nil, true, []string{"10.0.0.7", "fd00::7"})
	policy.AddOwnEndpoint(netip.IPv4Unspecified(), 8080)
	for _, address := range []string{"127.0.0.1", "::1", "10.0.0.7", "fd00::7"} {
		if got := refusalOf(policy, address, 8080); got != "it is the router itself" {
			t.Errorf("%s:8080: %q", address, got)
		}
	}
	if got := refusalOf(policy, "127.0.0.2", 8080); got != "" {
		t.Errorf("127.0.0.2:8080: %q", got)
	}
	if got := refusalOf(policy, "10.0.0.7", 9000); got != "it is the router's own address" {
		t.Errorf("10.0.0.7:9000: %q", got)
	}
}

func TestPodCIDRsRestrictEveryAddress(t *testing.T) {
	policy := NewAddressPolicy(prefixes("10.244.0.0/16", "fd00:10::/64"), true, nil)
	for address, want := range map[string]string{"10.244.3.4": "", "fd00:10::7": "",
		"10.245.0.1": "outside", "8.8.8.8": "outside", "127.0.0.1": "outside"} {
		got := refusalOf(policy, address, 1)
		if (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("%s: %q, want %q", address, got, want)
		}
	}
}

func TestSharedAndBenchmarkRangesAreAllowedOnlyInsideConfiguredPodCIDRs(t *testing.T) {
	// Some clusters (e.g. EKS custom networking) put pods in 100.64.0.0/10: naming the range in
	// ROUTER_ALLOWED_POD_CIDRS is the explicit opt-in; metadata and link-local stay refused.
	policy := NewAddressPolicy(prefixes("100.64.0.0/16", "198.18.0.0/24"), false, nil)
	if got := refusalOf(policy, "100.64.3.4", 8888); got != "" {
		t.Errorf("100.64.3.4: %q", got)
	}
	if got := refusalOf(policy, "198.18.0.9", 8888); got != "" {
		t.Errorf("198.18.0.9: %q", got)
	}
	if got := refusalOf(policy, "100.65.0.1", 8888); !strings.Contains(got, "shared address space") {
		t.Errorf("100.65.0.1: %q", got)
	}
	wide := NewAddressPolicy(prefixes("0.0.0.0/0", "::/0"), false, nil)
	for _, address := range []string{"169.254.169.254", "100.100.100.200", "fd20:ce::254", "2002:a9fe:a9fe::", "192.0.0.1",
		"100.64.0.1"} {
		if got := refusalOf(wide, address, 8888); got == "" {
			t.Errorf("%s allowed by a pod CIDR that is not a subnet of its range", address)
		}
	}
}

func TestPublicAddressAllowedWithoutCIDRs(t *testing.T) {
	if got := refusalOf(NewAddressPolicy(nil, false, nil), "10.1.2.3", 8888); got != "" {
		t.Fatalf("10.1.2.3: %q", got)
	}
}

func TestRefusalIgnoresZonesForRangesButNotForOwnAddresses(t *testing.T) {
	policy := NewAddressPolicy(prefixes("fd00::/8"), false, []string{"fd00::9%eth0"})
	if got := refusalOf(policy, "fe80::1%eth0", 1); !strings.Contains(got, "link-local") {
		t.Errorf("fe80::1%%eth0: %q", got)
	}
	if got := refusalOf(policy, "fd00::1%eth0", 1); got != "" {
		t.Errorf("fd00::1%%eth0 (inside the pod CIDR): %q", got)
	}
	if got := refusalOf(policy, "fd00::9%eth0", 1); got != "it is the router's own address" {
		t.Errorf("fd00::9%%eth0: %q", got)
	}
	if got := refusalOf(policy, "fd00::9", 1); got != "" { // Python compares the scope too
		t.Errorf("fd00::9: %q", got)
	}
	if got := policy.Refusal(netip.Addr{}, 1); got == "" {
		t.Error("the zero Addr is allowed")
	}
}

func TestParsePodIP(t *testing.T) {
	for in, want := range map[string]string{"10.244.1.7": "10.244.1.7", "fd00:10:244::5": "fd00:10:244::5",
		"::ffff:10.0.0.1": "10.0.0.1", "::FFFF:1.2.3.4": "1.2.3.4", "1:2:3:4:5:6:7::": "1:2:3:4:5:6:7:0"} {
		got, err := ParsePodIP(in)
		if err != nil || got.String() != want {
			t.Errorf("ParsePodIP(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "[::1]", "127.1", "0x7f.0.0.1", "127.000.0.1", "010.0.0.1", "127.0.0.1:8080",
		"127.0.0.0/8", "127.0.0.1 8", " 127.0.0.1", "127.0.0.1\t", "fe80::1%eth0", "10.0.0.1%eth0", "http://127.0.0.1",
		"localhost", "not-an-ip", "1.2.3", "::ffff:01.2.3.4", "١.2.3.4", "1.2.3.4\xa0", strings.Repeat("0", 46)} {
		got, err := ParsePodIP(in)
		if err == nil {
			t.Errorf("ParsePodIP(%q) = %v, want invalid", in, got)
			continue
		}
		re, ok := err.(*RoutingError)
		if !ok || re.Status != 400 || re.Detail != "Invalid target IP address format." || re.Reason != "routing" {
			t.Errorf("ParsePodIP(%q): error %#v", in, err)
		}
	}
}

func TestParseTimeout(t *testing.T) {
	for in, want := range map[string]time.Duration{"1e-05": 10 * time.Microsecond, ".5": 500 * time.Millisecond,
		"2.5": 2500 * time.Millisecond, "7": 7 * time.Second, "600": 10 * time.Second, "1.5E-3": 1500 * time.Microsecond,
		"0.000000001": time.Nanosecond, "1e-99": time.Nanosecond, "999999999999": 10 * time.Second} {
		got, err := ParseTimeout(in, 10*time.Second)
		if err != nil || got != want {
			t.Errorf("ParseTimeout(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "abc", "-5", "0", "0.0", "0e-5", "nan", "inf", "1e400", "1e309", "5s", "+5", " 5",
		"1e5", "1e-100", "12e-3", "1.", ".", "9999999999999", "1.1234567890", "１", "1_0"} {
		if got, err := ParseTimeout(in, 10*time.Second); err == nil {
			t.Errorf("ParseTimeout(%q) = %v, want invalid", in, got)
		} else if err.Status != 400 || err.Detail != "Invalid timeout format." {
			t.Errorf("ParseTimeout(%q): %#v", in, err)
		}
	}
}

func TestLocalAddressesExcludeLoopback(t *testing.T) {
	addresses := LocalAddresses()
	for i, a := range addresses {
		if a.IsLoopback() || !a.IsValid() || a.Is4In6() {
			t.Errorf("LocalAddresses lists %v", a)
		}
		if i > 0 && addresses[i-1].String() >= a.String() {
			t.Errorf("not sorted or not unique: %v", addresses)
		}
	}
}

func TestPolicyIsSafeForConcurrentUse(t *testing.T) {
	policy := NewAddressPolicy(prefixes("10.0.0.0/8"), false, []string{"10.9.9.9"})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 500 {
				if i == 0 {
					policy.AddOwnEndpoint(netip.AddrFrom4([4]byte{10, 1, byte(j >> 8), byte(j)}), 8080)
				} else if got := refusalOf(policy, "169.254.169.254", 80); got == "" {
					t.Error("metadata allowed")
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := refusalOf(policy, "10.1.1.243", 8080); got != "it is the router itself" {
		t.Fatalf("after concurrent AddOwnEndpoint: %q", got)
	}
}

func BenchmarkRefusal(b *testing.B) {
	policy := NewAddressPolicy(prefixes("10.244.0.0/16"), false, []string{"10.9.9.9"})
	policy.AddOwnEndpoint(netip.MustParseAddr("10.244.0.9"), 8080)
	address := netip.MustParseAddr("10.244.1.5")
	for b.Loop() {
		if policy.Refusal(address, 8888) != "" {
			b.Fatal("refused")
		}
	}
}
