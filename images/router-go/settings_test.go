package main

// Tests of settings.go: the cases of tests/unit/test_router_settings.py (secure defaults and
// clear configuration errors), plus the exact message texts, which were produced by the Python
// router's load_settings for the same environments.

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func mustLoad(t *testing.T, env map[string]string) *Settings {
	t.Helper()
	s, err := LoadSettings(env)
	if err != nil {
		t.Fatalf("LoadSettings(%v): %v", env, err)
	}
	return s
}

func loadError(t *testing.T, env map[string]string) string {
	t.Helper()
	s, err := LoadSettings(env)
	if err == nil {
		t.Fatalf("LoadSettings(%v) = %+v, want an error", env, s)
	}
	var settingsErr *SettingsError
	if !errors.As(err, &settingsErr) {
		t.Fatalf("LoadSettings(%v): error %T, want *SettingsError", env, err)
	}
	return err.Error()
}

func with(base map[string]string, changes ...string) map[string]string {
	env := make(map[string]string, len(base)+len(changes)/2)
	for k, v := range base {
		env[k] = v
	}
	for i := 0; i+1 < len(changes); i += 2 {
		env[changes[i]] = changes[i+1]
	}
	return env
}

func TestRefusesToStartWithoutToken(t *testing.T) {
	if msg := loadError(t, map[string]string{}); !strings.Contains(msg, "ROUTER_AUTH_TOKEN") {
		t.Fatalf("message %q does not name ROUTER_AUTH_TOKEN", msg)
	}
}

func TestExplicitDevOptOutDisablesAuth(t *testing.T) {
	s := mustLoad(t, map[string]string{"ALLOW_UNAUTHENTICATED_ROUTER": "true", "ROUTER_RESOLVER": "dns"})
	if s.AuthEnabled || !s.AllowUnauthenticated {
		t.Fatalf("AuthEnabled=%v AllowUnauthenticated=%v", s.AuthEnabled, s.AllowUnauthenticated)
	}
}

func TestTokenWinsOverOptOutAndDefaultsAreSafe(t *testing.T) {
	s := mustLoad(t, map[string]string{"ROUTER_AUTH_TOKEN": "s3cret-token", "ALLOW_UNAUTHENTICATED_ROUTER": "true",
		"ROUTER_RESOLVER": "dns"})
	if !s.AuthEnabled || s.AllowUnauthenticated || s.AuthToken != "s3cret-token" {
		t.Fatalf("auth: %+v", s)
	}
	if s.Port != 8080 || s.Host != "0.0.0.0" || s.AllowLoopbackPodIP || s.ClusterDomain != "cluster.local" ||
		!s.MetricsRequireAuth {
		t.Fatalf("defaults: %+v", s)
	}
}

func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("from-file-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s := mustLoad(t, map[string]string{"ROUTER_AUTH_TOKEN_FILE": file, "ROUTER_RESOLVER": "dns"}); s.AuthToken != "from-file-token" {
		t.Fatalf("token %q", s.AuthToken)
	}
	missing := filepath.Join(dir, "missing")
	msg := loadError(t, map[string]string{"ROUTER_AUTH_TOKEN_FILE": missing})
	want := "ROUTER_AUTH_TOKEN_FILE='" + missing + "' cannot be read ([Errno 2] No such file or directory: '" +
		missing + "'); mount the token Secret there or set ROUTER_AUTH_TOKEN"
	if msg != want {
		t.Fatalf("message\n %q\nwant\n %q", msg, want)
	}
	msg = loadError(t, map[string]string{"ROUTER_AUTH_TOKEN_FILE": dir})
	if want := "ROUTER_AUTH_TOKEN_FILE='" + dir + "' cannot be read ([Errno 21] Is a directory: '" + dir +
		"'); mount the token Secret there or set ROUTER_AUTH_TOKEN"; msg != want {
		t.Fatalf("message\n %q\nwant\n %q", msg, want)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if msg := loadError(t, map[string]string{"ROUTER_AUTH_TOKEN_FILE": empty}); msg !=
		"ROUTER_AUTH_TOKEN_FILE='"+empty+"' is empty; put the token in it" {
		t.Fatalf("message %q", msg)
	}
}

func TestBadValuesNameTheVariable(t *testing.T) {
	for _, c := range [][2]string{
		{"ROUTER_PORT", "http"}, {"ROUTER_PORT", "70000"}, {"PROXY_TIMEOUT_SECONDS", "-1"},
		{"PROXY_TIMEOUT_SECONDS", "nan"}, {"ROUTER_ALLOWED_POD_CIDRS", "10.0.0.0/33"},
		{"ROUTER_ALLOW_LOOPBACK_POD_IP", "maybe"}, {"ROUTER_POD_IP", "not-an-ip"},
		{"ROUTER_MAX_CONNECTIONS_PER_CLIENT", "0"}, {"CLUSTER_DOMAIN", "a..b"}, {"ROUTER_AUTH_TOKEN", "has space"},
	} {
		msg := loadError(t, map[string]string{"ROUTER_AUTH_TOKEN": "good-token-123", c[0]: c[1]})
		if !strings.Contains(msg, c[0]) {
			t.Errorf("%s=%q: message %q does not name the variable", c[0], c[1], msg)
		}
	}
}

// The texts of the Python router's SettingsError for the same environments (dns mode, a good
// token, one variable changed).
func TestErrorTextsAreThePythonRoutersTexts(t *testing.T) {
	base := map[string]string{"ROUTER_AUTH_TOKEN": "good-token-123", "ROUTER_RESOLVER": "dns"}
	for _, c := range []struct{ key, value, want string }{
		{"ROUTER_PORT", "http", "ROUTER_PORT='http' is not an integer; use a whole number between 0 and 65535"},
		{"ROUTER_PORT", "70000", "ROUTER_PORT=70000 is out of range; use a value between 0 and 65535"},
		{"ROUTER_PORT", "-1", "ROUTER_PORT=-1 is out of range; use a value between 0 and 65535"},
		{"ROUTER_PORT", "1__0", "ROUTER_PORT='1__0' is not an integer; use a whole number between 0 and 65535"},
		{"ROUTER_PORT", "0x10", "ROUTER_PORT='0x10' is not an integer; use a whole number between 0 and 65535"},
		{"ROUTER_PORT", strings.Repeat("9", 30), "ROUTER_PORT=" + strings.Repeat("9", 30) +
			" is out of range; use a value between 0 and 65535"},
		{"ROUTER_PORT", "1e3", "ROUTER_PORT='1e3' is not an integer; use a whole number between 0 and 65535"},
		{"ROUTER_PORT", "²", "ROUTER_PORT='²' is not an integer; use a whole number between 0 and 65535"},
		{"PROXY_TIMEOUT_SECONDS", "-1", "PROXY_TIMEOUT_SECONDS='-1' must be a positive number of seconds up to 604800"},
		{"PROXY_TIMEOUT_SECONDS", "nan", "PROXY_TIMEOUT_SECONDS='nan' must be a positive number of seconds up to 604800"},
		{"PROXY_TIMEOUT_SECONDS", "1e400", "PROXY_TIMEOUT_SECONDS='1e400' must be a positive number of seconds up to 604800"},
		{"PROXY_TIMEOUT_SECONDS", "1e-400", "PROXY_TIMEOUT_SECONDS='1e-400' must be a positive number of seconds up to 604800"},
		{"PROXY_TIMEOUT_SECONDS", "-inf", "PROXY_TIMEOUT_SECONDS='-inf' must be a positive number of seconds up to 604800"},
		{"PROXY_TIMEOUT_SECONDS", "abc", "PROXY_TIMEOUT_SECONDS='abc' is not a number of seconds; use e.g. 30 or 2.5"},
		{"ROUTER_ALLOWED_POD_CIDRS", "10.0.0.0/33", "ROUTER_ALLOWED_POD_CIDRS contains '10.0.0.0/33', which is not a " +
			"CIDR; use a comma-separated list like 10.244.0.0/16,fd00:10:244::/56"},
		{"ROUTER_ALLOW_LOOPBACK_POD_IP", "maybe", "ROUTER_ALLOW_LOOPBACK_POD_IP='maybe' is not a boolean; use true or false"},
		{"ROUTER_POD_IP", "1.2.3.4/32", "ROUTER_POD_IP contains '1.2.3.4/32', which is not an IP address; use a " +
			"comma-separated list of addresses"},
		{"ROUTER_POD_IP", "010.0.0.1", "ROUTER_POD_IP contains '010.0.0.1', which is not an IP address; use a " +
			"comma-separated list of addresses"},
		{"ROUTER_MAX_CONNECTIONS_PER_CLIENT", "1048577", "ROUTER_MAX_CONNECTIONS_PER_CLIENT=1048577 is out of range; " +
			"use a value between 1 and 1048576"},
		{"CLUSTER_DOMAIN", "a..b", "CLUSTER_DOMAIN='a..b' is not a DNS domain; use e.g. cluster.local"},
		{"CLUSTER_DOMAIN", ".", "CLUSTER_DOMAIN='.' is not a DNS domain; use e.g. cluster.local"},
		{"ROUTER_AUTH_TOKEN", "has space", "ROUTER_AUTH_TOKEN contains whitespace or non-printable characters; use a " +
			"printable ASCII token (e.g. `openssl rand -hex 32`)"},
		{"ROUTER_AUTH_TOKEN", "tök", "ROUTER_AUTH_TOKEN contains whitespace or non-printable characters; use a " +
			"printable ASCII token (e.g. `openssl rand -hex 32`)"},
		{"ROUTER_LOG_LEVEL", "verbose", "ROUTER_LOG_LEVEL='VERBOSE' is not a log level; use DEBUG, INFO, WARNING or ERROR"},
		{"ROUTER_RESOLVER", "magic", "ROUTER_RESOLVER='magic' is not a resolver; use watch (sandbox pods from the " +
			"Kubernetes API, the default) or dns (local tests only)"},
		{"ROUTER_SANDBOX_PORTS", "070", "ROUTER_SANDBOX_PORTS contains '070', which is not a port; use a " +
			"comma-separated list of ports 1-65535 like 8888"},
		{"ROUTER_SANDBOX_PORTS", ",", "ROUTER_SANDBOX_PORTS=',' names no port; use e.g. 8888"},
		{"ROUTER_SANDBOX_NAMESPACES", "Bad_NS", "ROUTER_SANDBOX_NAMESPACES contains 'Bad_NS', which is not a namespace " +
			"name; use a comma-separated list like agent-sandbox-demo,team-a"},
		{"ROUTER_SANDBOX_WAIT_SECONDS", "00", "ROUTER_SANDBOX_WAIT_SECONDS='00' must be a positive number of seconds up to 60"},
		{"ROUTER_ROUTE_UNCLAIMED_POOL_PODS", "perhaps", "ROUTER_ROUTE_UNCLAIMED_POOL_PODS='perhaps' is not a boolean; use true or false"},
		{"WEBSOCKET_MAX_LIFETIME_SECONDS", "2592001", "WEBSOCKET_MAX_LIFETIME_SECONDS='2592001' must be a positive " +
			"number of seconds up to 2.592e+06"},
		{"ROUTER_MAX_REQUEST_BODY_BYTES", "1099511627777", "ROUTER_MAX_REQUEST_BODY_BYTES=1099511627777 is out of " +
			"range; use a value between 0 and 1099511627776"},
		{"ROUTER_ALLOW_LOOPBACK_POD_IP", "it's", `ROUTER_ALLOW_LOOPBACK_POD_IP="it's" is not a boolean; use true or false`},
		{"ROUTER_ALLOW_LOOPBACK_POD_IP", "a\tb\xff", `ROUTER_ALLOW_LOOPBACK_POD_IP='a\tb\udcff' is not a boolean; use true or false`},
	} {
		if msg := loadError(t, with(base, c.key, c.value)); msg != c.want {
			t.Errorf("%s=%q:\n got %q\nwant %q", c.key, c.value, msg, c.want)
		}
	}
	// The first bad value in settings.py's order is the one reported.
	msg := loadError(t, with(base, "ROUTER_SANDBOX_PORTS", "0", "ROUTER_PORT", "x", "CLUSTER_DOMAIN", "a..b"))
	if !strings.HasPrefix(msg, "CLUSTER_DOMAIN=") {
		t.Errorf("reported %q first", msg)
	}
}

func TestListsAreParsed(t *testing.T) {
	s := mustLoad(t, map[string]string{"ROUTER_AUTH_TOKEN": strings.Repeat("x", 16),
		"ROUTER_ALLOWED_POD_CIDRS": "10.244.0.0/16, fd00::/64", "ROUTER_RESOLVER": "dns",
		"ROUTER_POD_IP": "10.0.0.5", "ROUTER_CONNECT_TIMEOUT_SECONDS": "500", "PROXY_TIMEOUT_SECONDS": "60"})
	var cidrs []string
	for _, p := range s.AllowedPodCIDRs {
		cidrs = append(cidrs, p.String())
	}
	if !reflect.DeepEqual(cidrs, []string{"10.244.0.0/16", "fd00::/64"}) {
		t.Errorf("cidrs %v", cidrs)
	}
	if !reflect.DeepEqual(s.OwnAddresses, []string{"10.0.0.5"}) {
		t.Errorf("own addresses %v", s.OwnAddresses)
	}
	if s.ConnectTimeout != 60*time.Second {
		t.Errorf("connect timeout %v", s.ConnectTimeout)
	}
}

func TestNetworkAndAddressForms(t *testing.T) {
	// ip_network(strict=False) forms: host bits cleared, netmask and hostmask, leading zeros.
	s := mustLoad(t, map[string]string{"ROUTER_AUTH_TOKEN": "good-token-123", "ROUTER_RESOLVER": "dns",
		"ROUTER_ALLOWED_POD_CIDRS": "10.0.0.1/8;10.1.0.0/255.255.0.0,10.2.0.0/0.0.255.255, 10.3.0.0/016,fd00::1/64,1.2.3.4",
		"ROUTER_POD_IP":            "::ffff:10.0.0.5, fe80::1%eth0"})
	var cidrs []string
	for _, p := range s.AllowedPodCIDRs {
		cidrs = append(cidrs, p.String())
	}
	want := []string{"10.0.0.0/8", "10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16", "fd00::/64", "1.2.3.4/32"}
	if !reflect.DeepEqual(cidrs, want) {
		t.Errorf("cidrs %v, want %v", cidrs, want)
	}
	// str() of Python's addresses: a mapped address in hexadecimal, the zone kept.
	if !reflect.DeepEqual(s.OwnAddresses, []string{"::ffff:a00:5", "fe80::1%eth0"}) {
		t.Errorf("own addresses %v", s.OwnAddresses)
	}
	for _, bad := range []string{"10.0.0.0/255.0.255.0", "fd00::/ffff::", "10.0.0.0/8/8", "10.0.0.0/", "fd00::/129"} {
		if _, ok := parsePyNetwork(bad); ok {
			t.Errorf("%q accepted as a network", bad)
		}
	}
}

func TestPythonNumberGrammar(t *testing.T) {
	for in, want := range map[string]float64{"30": 30, "2.5": 2.5, ".5": 0.5, "5.": 5, "1_0.5": 10.5, "1e3": 1000,
		"１０": 10, "+1": 1, "1E-2": 0.01} {
		if got, ok := pyFloat(in); !ok || got != want {
			t.Errorf("pyFloat(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	for _, in := range []string{"inf", "-Infinity", "NaN", "1e400"} {
		if got, ok := pyFloat(in); !ok || !(math.IsInf(got, 0) || math.IsNaN(got)) {
			t.Errorf("pyFloat(%q) = %v, %v; want a non-finite value", in, got, ok)
		}
	}
	for _, in := range []string{"", ".", "1__0", "_1", "1_", "0x10", "1e", "abc", "1.2.3", "infinit", "\u212anf"} {
		if got, ok := pyFloat(in); ok {
			t.Errorf("pyFloat(%q) = %v, want invalid", in, got)
		}
	}
	for in, want := range map[string]string{"8080": "8080", "+80": "80", "-0": "0", "1_000": "1000", "０８": "8"} {
		if got, ok := pyInt(in); !ok || got.String() != want {
			t.Errorf("pyInt(%q) = %v, %v; want %s", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "1.0", "1__0", "²", "0x10", strings.Repeat("1", pythonMaxIntDigits+1)} {
		if got, ok := pyInt(in); ok {
			t.Errorf("pyInt(%q) = %v, want invalid", in, got)
		}
	}
}

func serviceAccount(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "sa")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"token": "sa-token", "ca.crt": "-----BEGIN CERTIFICATE-----\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func watchEnv(t *testing.T, changes ...string) map[string]string {
	return with(map[string]string{"ROUTER_AUTH_TOKEN": "good-token-123",
		"ROUTER_SANDBOX_NAMESPACES": "agent-sandbox-demo, team-b",
		"KUBERNETES_SERVICE_HOST":   "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
		"ROUTER_SERVICEACCOUNT_DIR": serviceAccount(t)}, changes...)
}

func TestWatchIsTheDefaultResolverWithTheSandboxPortOnly(t *testing.T) {
	s := mustLoad(t, watchEnv(t))
	if s.Resolver != "watch" {
		t.Errorf("resolver %q", s.Resolver)
	}
	if !reflect.DeepEqual(s.SandboxNamespaces, []string{"agent-sandbox-demo", "team-b"}) {
		t.Errorf("namespaces %v", s.SandboxNamespaces)
	}
	if !reflect.DeepEqual(s.SandboxPorts, []int{8888}) {
		t.Errorf("ports %v", s.SandboxPorts)
	}
	if s.KubeHost != "10.96.0.1" || s.KubePort != 443 {
		t.Errorf("kube %s:%d", s.KubeHost, s.KubePort)
	}
	if s.SandboxWait != 10*time.Second || s.RouteUnclaimedPoolPods {
		t.Errorf("wait %v unclaimed %v", s.SandboxWait, s.RouteUnclaimedPoolPods)
	}
}

func TestWatchPortsAndWaitAreConfigurable(t *testing.T) {
	s := mustLoad(t, watchEnv(t, "ROUTER_SANDBOX_PORTS", "8888, 9000", "ROUTER_SANDBOX_WAIT_SECONDS", "0"))
	if !reflect.DeepEqual(s.SandboxPorts, []int{8888, 9000}) || s.SandboxWait != 0 {
		t.Fatalf("ports %v wait %v", s.SandboxPorts, s.SandboxWait)
	}
	// Duplicates are dropped, and int() reads full-width digits as settings.py does.
	s = mustLoad(t, watchEnv(t, "ROUTER_SANDBOX_PORTS", "9000;8888,9000,８８８８", "ROUTER_SANDBOX_NAMESPACES", "a,b,a"))
	if !reflect.DeepEqual(s.SandboxPorts, []int{9000, 8888}) || !reflect.DeepEqual(s.SandboxNamespaces, []string{"a", "b"}) {
		t.Fatalf("ports %v namespaces %v", s.SandboxPorts, s.SandboxNamespaces)
	}
}

func TestDNSModeKeepsAnyPortUnlessPortsAreGiven(t *testing.T) {
	base := map[string]string{"ROUTER_AUTH_TOKEN": "good-token-123", "ROUTER_RESOLVER": "dns"}
	if s := mustLoad(t, base); s.SandboxPorts != nil {
		t.Errorf("ports %v, want nil (any)", s.SandboxPorts)
	}
	if s := mustLoad(t, with(base, "ROUTER_SANDBOX_PORTS", "8888")); !reflect.DeepEqual(s.SandboxPorts, []int{8888}) {
		t.Errorf("ports %v", s.SandboxPorts)
	}
}

func TestWatchModeRefusesToStartIncomplete(t *testing.T) {
	for _, drop := range []string{"ROUTER_SANDBOX_NAMESPACES", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"} {
		env := watchEnv(t)
		delete(env, drop)
		msg := loadError(t, env)
		if !strings.Contains(msg, drop) || !strings.Contains(msg, "ROUTER_RESOLVER=dns") {
			t.Errorf("without %s: %q", drop, msg)
		}
	}
}

func TestWatchModeNeedsTheServiceAccountToken(t *testing.T) {
	env := watchEnv(t)
	token := filepath.Join(env["ROUTER_SERVICEACCOUNT_DIR"], "token")
	if err := os.Remove(token); err != nil {
		t.Fatal(err)
	}
	msg := loadError(t, env)
	if !strings.Contains(msg, "automountServiceAccountToken") || !strings.HasPrefix(msg, token+" does not exist") {
		t.Fatalf("message %q", msg)
	}
}

func TestBadResolutionValuesNameTheVariable(t *testing.T) {
	for _, c := range [][2]string{
		{"ROUTER_RESOLVER", "magic"}, {"ROUTER_SANDBOX_PORTS", "0"}, {"ROUTER_SANDBOX_PORTS", "http"},
		{"ROUTER_SANDBOX_PORTS", "070"}, {"ROUTER_SANDBOX_NAMESPACES", "Bad_NS"},
		{"ROUTER_SANDBOX_WAIT_SECONDS", "600"}, {"ROUTER_ROUTE_UNCLAIMED_POOL_PODS", "perhaps"},
		{"KUBERNETES_SERVICE_HOST", "Bad_Host"}, {"KUBERNETES_SERVICE_PORT", "https"},
	} {
		if msg := loadError(t, watchEnv(t, c[0], c[1])); !strings.Contains(msg, c[0]) {
			t.Errorf("%s=%q: message %q does not name the variable", c[0], c[1], msg)
		}
	}
}

func TestPyRepr(t *testing.T) {
	for in, want := range map[string]string{
		"abc": `'abc'`, "a'b": `"a'b"`, `a"b`: `'a"b'`, `a'"b`: `'a\'"b'`, `a\b`: `'a\\b'`,
		"\t\n\r\x00\x7f": `'\t\n\r\x00\x7f'`, "é": `'é'`, "\u00a0": `'\xa0'`, "\u200b": `'\u200b'`,
		"\U0001F600": "'\U0001F600'", "\xe9": `'\udce9'`, "\u0085": `'\x85'`, "\u2028": `'\u2028'`, "\x1f": `'\x1f'`,
	} {
		if got := pyRepr(in); got != want {
			t.Errorf("pyRepr(%q) = %s, want %s", in, got, want)
		}
	}
}
