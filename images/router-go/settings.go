package main

// settings.go owns the router's configuration: the Settings read once from the environment at
// startup, with the same variables, defaults, limits and error texts as the Python router's
// sandbox_router/settings.py. Every value has a safe default; a bad value stops the router with
// a message that names the variable, the offending value and what would be accepted.
//
// The messages quote values the way Python's repr() does and numbers are parsed with Python's
// int()/float() grammar, so that both routers accept exactly the same environments and explain
// a refusal with the same words (operators and tests compare the texts).

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/big"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"
)

// Settings are all tunables of the router; images/router/README.md ("Configuration") describes
// each. Durations are Python's float seconds, rounded to the nanosecond.
type Settings struct {
	Host string
	Port int

	AuthToken            string
	AuthEnabled          bool // a token is required (AuthToken is set)
	AllowUnauthenticated bool // no token, explicitly allowed (development only)

	ClusterDomain string

	ProxyTimeout, ConnectTimeout time.Duration

	AllowedPodCIDRs    []netip.Prefix // masked; empty = any address the policy allows
	AllowLoopbackPodIP bool
	OwnAddresses       []string // ROUTER_POD_IP, canonical text

	MaxRequestBodyBytes, MaxResponseBodyBytes int64

	MaxHeaderBytes, MaxHeaderCount int

	MaxConnections, MaxConnectionsPerClient int

	HeaderTimeout, KeepaliveTimeout time.Duration

	UpstreamMaxIdlePerTarget int
	UpstreamIdle             time.Duration

	WebsocketIdleTimeout, WebsocketMaxLifetime time.Duration

	MetricsRequireAuth bool

	ServerTiming bool // a Server-Timing header on every relayed response (timing.go)

	LogLevel string // DEBUG INFO WARNING ERROR CRITICAL

	Resolver               string   // "watch" or "dns"
	SandboxNamespaces      []string // empty = any namespace (dns mode only)
	SandboxPorts           []int    // nil = any port (dns mode without ROUTER_SANDBOX_PORTS)
	SandboxWait            time.Duration
	RouteUnclaimedPoolPods bool

	KubeHost          string
	KubePort          int
	ServiceAccountDir string
}

// SettingsError is an environment variable holding a value the router cannot use. Its text is
// the text of the Python router's SettingsError for the same environment.
type SettingsError struct {
	Message string
}

func (e *SettingsError) Error() string { return e.Message }

const (
	defaultServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	defaultSandboxPort       = 8888
	// pythonMaxIntDigits is CPython's int_max_str_digits: int() refuses longer decimal strings.
	pythonMaxIntDigits = 4300
)

// defaultSettings are the defaults of the Python RouterSettings dataclass (what a Settings
// built in code, as the tests do, starts from). LoadSettings overrides every field it reads;
// a few of its defaults differ (ROUTER_SANDBOX_WAIT_SECONDS is 10 there, 3 here).
func defaultSettings() *Settings {
	return &Settings{
		Host: "0.0.0.0", Port: 8080,
		ClusterDomain: "cluster.local",
		ProxyTimeout:  180 * time.Second, ConnectTimeout: 5 * time.Second,
		MaxRequestBodyBytes: 1 << 30, MaxResponseBodyBytes: 4 << 30,
		MaxHeaderBytes: 64 * 1024, MaxHeaderCount: 128,
		MaxConnections: 4096, MaxConnectionsPerClient: 512,
		HeaderTimeout: 15 * time.Second, KeepaliveTimeout: 75 * time.Second,
		UpstreamMaxIdlePerTarget: 64, UpstreamIdle: 4 * time.Second,
		WebsocketIdleTimeout: 3600 * time.Second, WebsocketMaxLifetime: 86400 * time.Second,
		MetricsRequireAuth: true,
		LogLevel:           "INFO",
		Resolver:           "watch",
		SandboxPorts:       []int{defaultSandboxPort},
		SandboxWait:        3 * time.Second,
		KubePort:           443,
		ServiceAccountDir:  defaultServiceAccountDir,
	}
}

// LoadSettings builds Settings from env (the process environment as a map). It checks the
// variables in the order settings.py does, so the first bad value reported is the same one.
// The error is a *SettingsError, among others for a missing token without the explicit
// ALLOW_UNAUTHENTICATED_ROUTER=true opt-out.
func LoadSettings(env map[string]string) (*Settings, error) {
	r := &envReader{env: env}
	s := defaultSettings()

	token, hasToken := r.token()
	allowUnauthenticated := r.flag("ALLOW_UNAUTHENTICATED_ROUTER", false)
	if !hasToken && !allowUnauthenticated {
		r.fail("ROUTER_AUTH_TOKEN is not set: the router refuses to run without authentication. " +
			"Set ROUTER_AUTH_TOKEN (or ROUTER_AUTH_TOKEN_FILE) to a secret bearer token, or set " +
			"ALLOW_UNAUTHENTICATED_ROUTER=true for local development only.")
	}
	if hasToken && strings.IndexFunc(token, func(c rune) bool { return c < 0x21 || c > 0x7e }) >= 0 {
		// Invalid UTF-8 decodes to U+FFFD here, so it is refused like any non-ASCII byte.
		r.fail("ROUTER_AUTH_TOKEN contains whitespace or non-printable characters; " +
			"use a printable ASCII token (e.g. `openssl rand -hex 32`)")
	}
	domain := strings.ToLower(strings.Trim(r.text("CLUSTER_DOMAIN", "cluster.local"), "."))
	if r.err == nil && !validDomain(domain) {
		raw, ok := env["CLUSTER_DOMAIN"]
		r.fail("CLUSTER_DOMAIN=%s is not a DNS domain; use e.g. cluster.local", pyReprOptional(raw, ok))
	}
	level := strings.ToUpper(r.text("ROUTER_LOG_LEVEL", "INFO"))
	switch level {
	case "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL":
	default:
		r.fail("ROUTER_LOG_LEVEL=%s is not a log level; use DEBUG, INFO, WARNING or ERROR", pyRepr(level))
	}
	proxyTimeout := r.seconds("PROXY_TIMEOUT_SECONDS", 180, 7*86400)

	s.Host = r.text("ROUTER_HOST", "0.0.0.0")
	s.Port = int(r.integer("ROUTER_PORT", 8080, 0, 65535))
	s.AuthToken, s.AuthEnabled = token, hasToken
	s.AllowUnauthenticated = allowUnauthenticated && !hasToken
	s.ClusterDomain = domain
	s.ProxyTimeout = secondsDuration(proxyTimeout)
	s.ConnectTimeout = secondsDuration(min(r.seconds("ROUTER_CONNECT_TIMEOUT_SECONDS", 5, 7*86400), proxyTimeout))
	s.AllowedPodCIDRs = r.cidrs("ROUTER_ALLOWED_POD_CIDRS")
	s.AllowLoopbackPodIP = r.flag("ROUTER_ALLOW_LOOPBACK_POD_IP", false)
	s.OwnAddresses = r.addresses("ROUTER_POD_IP")
	s.MaxRequestBodyBytes = r.integer("ROUTER_MAX_REQUEST_BODY_BYTES", 1<<30, 0, 1<<40)
	s.MaxResponseBodyBytes = r.integer("ROUTER_MAX_RESPONSE_BODY_BYTES", 4<<30, 0, 1<<44)
	s.MaxHeaderBytes = int(r.integer("ROUTER_MAX_HEADER_BYTES", 64*1024, 1024, 1<<20))
	s.MaxHeaderCount = int(r.integer("ROUTER_MAX_HEADER_COUNT", 128, 8, 4096))
	s.MaxConnections = int(r.integer("ROUTER_MAX_CONNECTIONS", 4096, 1, 1<<20))
	s.MaxConnectionsPerClient = int(r.integer("ROUTER_MAX_CONNECTIONS_PER_CLIENT", 512, 1, 1<<20))
	s.HeaderTimeout = secondsDuration(r.seconds("ROUTER_HEADER_TIMEOUT_SECONDS", 15, 7*86400))
	s.KeepaliveTimeout = secondsDuration(r.seconds("ROUTER_KEEPALIVE_TIMEOUT_SECONDS", 75, 7*86400))
	s.UpstreamMaxIdlePerTarget = int(r.integer("MAX_KEEPALIVE_CONNECTIONS", 64, 0, 100000))
	s.UpstreamIdle = secondsDuration(r.seconds("ROUTER_UPSTREAM_IDLE_SECONDS", 4, 7*86400))
	s.WebsocketIdleTimeout = secondsDuration(r.seconds("WEBSOCKET_IDLE_TIMEOUT_SECONDS", 3600, 7*86400))
	s.WebsocketMaxLifetime = secondsDuration(r.seconds("WEBSOCKET_MAX_LIFETIME_SECONDS", 86400, 30*86400))
	s.MetricsRequireAuth = r.flag("ROUTER_METRICS_REQUIRE_AUTH", true)
	s.ServerTiming = r.flag("ROUTER_SERVER_TIMING", true)
	s.LogLevel = level

	// Resolution last: a bad value above is reported first, even when watch mode is incomplete.
	resolver := strings.ToLower(r.text("ROUTER_RESOLVER", "watch"))
	if resolver == "" {
		resolver = "watch"
	}
	if r.err == nil && resolver != "watch" && resolver != "dns" {
		raw, ok := env["ROUTER_RESOLVER"]
		r.fail("ROUTER_RESOLVER=%s is not a resolver; use watch (sandbox pods from the Kubernetes API, "+
			"the default) or dns (local tests only)", pyReprOptional(raw, ok))
	}
	s.Resolver = resolver
	s.SandboxPorts = r.ports("ROUTER_SANDBOX_PORTS")
	if resolver == "watch" {
		r.watchSettings(s)
		if s.SandboxPorts == nil {
			s.SandboxPorts = []int{defaultSandboxPort}
		}
	} else {
		s.SandboxNamespaces = r.namespaces("ROUTER_SANDBOX_NAMESPACES")
	}
	if raw := pyStrip(env["ROUTER_SANDBOX_WAIT_SECONDS"]); raw == "0" || raw == "0.0" {
		s.SandboxWait = 0
	} else {
		s.SandboxWait = secondsDuration(r.seconds("ROUTER_SANDBOX_WAIT_SECONDS", 10, 60))
	}
	s.RouteUnclaimedPoolPods = r.flag("ROUTER_ROUTE_UNCLAIMED_POOL_PODS", false)
	if r.err != nil {
		return nil, r.err
	}
	return s, nil
}

// watchSettings reads what watch mode needs: sandbox namespaces and the in-cluster API (checked
// up front so a misconfigured router exits with a clear message instead of refusing every
// request).
func (r *envReader) watchSettings(s *Settings) {
	s.SandboxNamespaces = r.namespaces("ROUTER_SANDBOX_NAMESPACES")
	if r.err != nil {
		return
	}
	if len(s.SandboxNamespaces) == 0 {
		r.fail("ROUTER_SANDBOX_NAMESPACES is not set: in ROUTER_RESOLVER=watch mode (the default) the " +
			"router proxies only to sandbox pods of the namespaces named there; set it to e.g. " +
			"agent-sandbox-demo (or ROUTER_RESOLVER=dns for local tests only)")
		return
	}
	host := pyStrip(r.env["KUBERNETES_SERVICE_HOST"])
	if host == "" || pyStrip(r.env["KUBERNETES_SERVICE_PORT"]) == "" {
		r.fail("KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set: ROUTER_RESOLVER=watch reads " +
			"sandbox pods from the Kubernetes API and must run in a pod (or set ROUTER_RESOLVER=dns " +
			"for local tests only)")
		return
	}
	if _, ok := parsePyAddr(host); !ok {
		for _, part := range strings.Split(strings.ToLower(host), ".") {
			if !isDNS1123Label(part) {
				r.fail("KUBERNETES_SERVICE_HOST=%s is neither an IP address nor a host name", pyRepr(host))
				return
			}
		}
	}
	port := r.integer("KUBERNETES_SERVICE_PORT", 443, 1, 65535)
	dir := pyStrip(r.env["ROUTER_SERVICEACCOUNT_DIR"])
	if dir == "" {
		dir = defaultServiceAccountDir
	}
	for _, name := range []string{"token", "ca.crt"} {
		path := pyPathJoin(dir, name)
		// os.Stat follows symlinks, as os.path.isfile does (the kubelet mounts them as links).
		if info, err := os.Stat(path); err != nil || !info.Mode().IsRegular() {
			r.fail("%s does not exist: ROUTER_RESOLVER=watch authenticates to the Kubernetes API with "+
				"the pod's service-account token; mount it (automountServiceAccountToken: true) or set "+
				"ROUTER_SERVICEACCOUNT_DIR", path)
			return
		}
	}
	s.KubeHost, s.KubePort, s.ServiceAccountDir = host, int(port), dir
}

// envReader reads typed values from the environment. The first bad value is remembered and
// every later read is skipped, which reproduces Python's "raise at the first bad value" while
// LoadSettings stays a straight list of reads in settings.py's order.
type envReader struct {
	env map[string]string
	err error
}

func (r *envReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = &SettingsError{Message: fmt.Sprintf(format, args...)}
	}
}

// text is the stripped value, or def when the variable is not set.
func (r *envReader) text(key, def string) string {
	if raw, ok := r.env[key]; ok {
		return pyStrip(raw)
	}
	return def
}

func (r *envReader) flag(key string, def bool) bool {
	raw, ok := r.env[key]
	if !ok || r.err != nil {
		return def
	}
	switch strings.ToLower(pyStrip(raw)) {
	case "1", "true", "yes", "on":
		return true
	case "", "0", "false", "no", "off":
		return false
	}
	r.fail("%s=%s is not a boolean; use true or false", key, pyRepr(raw))
	return def
}

func (r *envReader) integer(key string, def, minimum, maximum int64) int64 {
	raw, ok := r.env[key]
	if !ok || r.err != nil || pyStrip(raw) == "" {
		return def
	}
	value, ok := pyInt(pyStrip(raw))
	if !ok {
		r.fail("%s=%s is not an integer; use a whole number between %d and %d", key, pyRepr(raw), minimum, maximum)
		return def
	}
	if !value.IsInt64() || value.Int64() < minimum || value.Int64() > maximum {
		r.fail("%s=%s is out of range; use a value between %d and %d", key, value.String(), minimum, maximum)
		return def
	}
	return value.Int64()
}

func (r *envReader) seconds(key string, def, maximum float64) float64 {
	raw, ok := r.env[key]
	if !ok || r.err != nil || pyStrip(raw) == "" {
		return def
	}
	value, ok := pyFloat(pyStrip(raw))
	if !ok {
		r.fail("%s=%s is not a number of seconds; use e.g. 30 or 2.5", key, pyRepr(raw))
		return def
	}
	if math.IsInf(value, 0) || math.IsNaN(value) || value <= 0 || value > maximum {
		// %g is Python's format(maximum, "g") for these round maxima (604800, 60, 2.592e+06).
		r.fail("%s=%s must be a positive number of seconds up to %g", key, pyRepr(raw), maximum)
		return def
	}
	return value
}

// listItems splits a comma- (or semicolon-) separated list, dropping blank items.
func listItems(raw string) []string {
	var items []string
	for _, item := range strings.Split(strings.ReplaceAll(raw, ";", ","), ",") {
		if item = pyStrip(item); item != "" {
			items = append(items, item)
		}
	}
	return items
}

func (r *envReader) cidrs(key string) []netip.Prefix {
	if r.err != nil {
		return nil
	}
	var networks []netip.Prefix
	for _, item := range listItems(r.env[key]) {
		network, ok := parsePyNetwork(item)
		if !ok {
			r.fail("%s contains %s, which is not a CIDR; use a comma-separated list like "+
				"10.244.0.0/16,fd00:10:244::/56", key, pyRepr(item))
			return nil
		}
		networks = append(networks, network)
	}
	return networks
}

func (r *envReader) addresses(key string) []string {
	if r.err != nil {
		return nil
	}
	var found []string
	for _, item := range listItems(r.env[key]) {
		address, ok := parsePyAddr(item)
		if !ok {
			r.fail("%s contains %s, which is not an IP address; use a comma-separated list of addresses",
				key, pyRepr(item))
			return nil
		}
		found = append(found, pyAddrString(address))
	}
	return found
}

func (r *envReader) namespaces(key string) []string {
	if r.err != nil {
		return nil
	}
	var found []string
	for _, item := range listItems(r.env[key]) {
		if !isDNS1123Label(item) {
			r.fail("%s contains %s, which is not a namespace name; use a comma-separated list like "+
				"agent-sandbox-demo,team-a", key, pyRepr(item))
			return nil
		}
		if !containsString(found, item) {
			found = append(found, item)
		}
	}
	return found
}

// ports reads a port list; nil when the variable is unset or blank (any port in dns mode, the
// default port in watch mode).
func (r *envReader) ports(key string) []int {
	raw, ok := r.env[key]
	if !ok || r.err != nil || pyStrip(raw) == "" {
		return nil
	}
	var found []int
	for _, item := range listItems(raw) {
		// settings.py: item.isdigit(), 1 <= int(item) <= 65535, no leading ASCII "0". int()
		// reads any Unicode decimal digit, so "８８８８" (full-width) is port 8888 there too.
		value, ok := pyDecimal(item)
		if !ok || item[0] == '0' || !value.IsInt64() || value.Int64() < 1 || value.Int64() > 65535 {
			r.fail("%s contains %s, which is not a port; use a comma-separated list of ports 1-65535 like 8888",
				key, pyRepr(item))
			return nil
		}
		if port := int(value.Int64()); !containsInt(found, port) {
			found = append(found, port)
		}
	}
	if len(found) == 0 {
		r.fail("%s=%s names no port; use e.g. 8888", key, pyRepr(raw))
		return nil
	}
	return found
}

// token is ROUTER_AUTH_TOKEN, else the content of ROUTER_AUTH_TOKEN_FILE; ok is false when
// neither gives one.
func (r *envReader) token() (string, bool) {
	if token := pyStrip(r.env["ROUTER_AUTH_TOKEN"]); token != "" {
		return token, true
	}
	file := pyStrip(r.env["ROUTER_AUTH_TOKEN_FILE"])
	if file == "" {
		return "", false
	}
	content, err := os.ReadFile(file)
	if err != nil {
		r.fail("ROUTER_AUTH_TOKEN_FILE=%s cannot be read (%s); mount the token Secret there or set "+
			"ROUTER_AUTH_TOKEN", pyRepr(file), pyOSError(err, file))
		return "", false
	}
	// Python reads the file as UTF-8 text and crashes on invalid UTF-8; here such bytes are
	// kept and refused by the printable-ASCII check of the token instead.
	token := pyStrip(string(content))
	if token == "" {
		r.fail("ROUTER_AUTH_TOKEN_FILE=%s is empty; put the token in it", pyRepr(file))
		return "", false
	}
	return token, true
}

// validDomain is settings.py's CLUSTER_DOMAIN check: non-empty, no empty label, labels of at
// most 63 characters.
func validDomain(domain string) bool {
	if domain == "" {
		return false
	}
	for _, part := range strings.Split(domain, ".") {
		if part == "" || utf8.RuneCountInString(part) > 63 {
			return false
		}
	}
	return true
}

// secondsDuration converts Python float seconds to a Duration. A positive value below one
// nanosecond (Python accepts e.g. 1e-12) becomes 1ns rather than 0, which would mean "none".
func secondsDuration(seconds float64) time.Duration {
	d := time.Duration(math.Round(seconds * float64(time.Second)))
	if d <= 0 && seconds > 0 {
		return time.Nanosecond
	}
	return d
}

func containsString(list []string, s string) bool {
	for _, item := range list {
		if item == s {
			return true
		}
	}
	return false
}

func containsInt(list []int, n int) bool {
	for _, item := range list {
		if item == n {
			return true
		}
	}
	return false
}

// --- Python semantics the messages and the accepted values depend on ---------------------------

// pyIsSpace is Python's str.isspace for one character: Unicode White_Space plus the ASCII
// information separators U+001C..U+001F, which Python also counts.
func pyIsSpace(c rune) bool {
	return unicode.IsSpace(c) || (c >= 0x1c && c <= 0x1f)
}

// pyStrip is Python's str.strip() without arguments.
func pyStrip(s string) string { return strings.TrimFunc(s, pyIsSpace) }

// pyRepr quotes s as Python's repr() of a str does. Environment bytes that are not UTF-8 are
// shown as Python's surrogateescape decoding shows them ('\udcXX').
func pyRepr(s string) string {
	quote := byte('\'')
	if strings.IndexByte(s, '\'') >= 0 && strings.IndexByte(s, '"') < 0 {
		quote = '"'
	}
	var b strings.Builder
	b.WriteByte(quote)
	for i := 0; i < len(s); {
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			fmt.Fprintf(&b, `\udc%02x`, s[i])
			i++
			continue
		}
		i += size
		switch {
		case c == rune(quote) || c == '\\':
			b.WriteByte('\\')
			b.WriteRune(c)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, c)
		case c < 0x7f || unicode.IsPrint(c):
			b.WriteRune(c)
		case c <= 0xff:
			fmt.Fprintf(&b, `\x%02x`, c)
		case c <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, c)
		default:
			fmt.Fprintf(&b, `\U%08x`, c)
		}
	}
	b.WriteByte(quote)
	return b.String()
}

// pyReprOptional is repr(env.get(key)): None for an unset variable.
func pyReprOptional(s string, ok bool) string {
	if !ok {
		return "None"
	}
	return pyRepr(s)
}

// pyDigit is the value of a Unicode decimal digit (category Nd), which Python's int() and
// float() accept in place of ASCII digits. Nd digits come in runs of whole 0..9 blocks, so the
// value is the offset from the start of the run.
func pyDigit(c rune) (int, bool) {
	if c >= '0' && c <= '9' {
		return int(c - '0'), true
	}
	if c < 0x80 || !unicode.Is(unicode.Nd, c) {
		return 0, false
	}
	start := c
	for unicode.Is(unicode.Nd, start-1) {
		start--
	}
	return int(c-start) % 10, true
}

func isPyDigit(c rune) bool {
	_, ok := pyDigit(c)
	return ok
}

// pyDigitPart reads Python's digitpart (digit (["_"] digit)*) from the start of s into ascii,
// returning the rest of s and whether at least one digit was read.
func pyDigitPart(s string, ascii *strings.Builder) (string, bool) {
	read := false
	for s != "" {
		c, size := utf8.DecodeRuneInString(s)
		if d, ok := pyDigit(c); ok {
			ascii.WriteByte(byte('0' + d))
			s, read = s[size:], true
			continue
		}
		if c == '_' && read { // an underscore only between two digits
			if next, _ := utf8.DecodeRuneInString(s[1:]); isPyDigit(next) {
				s = s[1:]
				continue
			}
		}
		break
	}
	return s, read
}

// pyDecimal is a string of Unicode decimal digits only (no sign, no underscores), as int()
// reads it.
func pyDecimal(s string) (*big.Int, bool) {
	var ascii strings.Builder
	for _, c := range s {
		d, ok := pyDigit(c)
		if !ok {
			return nil, false
		}
		ascii.WriteByte(byte('0' + d))
	}
	if ascii.Len() == 0 || ascii.Len() > pythonMaxIntDigits {
		return nil, false
	}
	value, ok := new(big.Int).SetString(ascii.String(), 10)
	return value, ok
}

// pyInt parses s (already stripped) as Python's int(s) does: an optional sign, then digits with
// single underscores between them, at most pythonMaxIntDigits of them.
func pyInt(s string) (*big.Int, bool) {
	var ascii strings.Builder
	sign := 0
	if s != "" && (s[0] == '+' || s[0] == '-') {
		ascii.WriteByte(s[0])
		s, sign = s[1:], 1
	}
	rest, ok := pyDigitPart(s, &ascii)
	if !ok || rest != "" || ascii.Len()-sign > pythonMaxIntDigits {
		return nil, false
	}
	return new(big.Int).SetString(ascii.String(), 10)
}

// pyFloat parses s (already stripped) as Python's float(s) does: decimal digits with
// underscores between them, an optional fraction and exponent, or inf/infinity/nan in any case;
// no hexadecimal. Like Python it gives ±Inf for overflow and 0 for underflow.
func pyFloat(s string) (float64, bool) {
	var ascii strings.Builder
	if s != "" && (s[0] == '+' || s[0] == '-') {
		ascii.WriteByte(s[0])
		s = s[1:]
	}
	switch strings.ToLower(s) {
	case "inf", "infinity", "nan":
		if !isASCII(s) { // strings.ToLower also folds e.g. the Kelvin sign; Python does not
			return 0, false
		}
		v, err := strconv.ParseFloat(ascii.String()+s, 64)
		return v, err == nil
	}
	rest, whole := pyDigitPart(s, &ascii)
	fraction := false
	if strings.HasPrefix(rest, ".") {
		ascii.WriteByte('.')
		rest, fraction = pyDigitPart(rest[1:], &ascii)
	}
	if !whole && !fraction {
		return 0, false
	}
	if rest != "" && (rest[0] == 'e' || rest[0] == 'E') {
		ascii.WriteByte('e')
		rest = rest[1:]
		if rest != "" && (rest[0] == '+' || rest[0] == '-') {
			ascii.WriteByte(rest[0])
			rest = rest[1:]
		}
		var ok bool
		if rest, ok = pyDigitPart(rest, &ascii); !ok {
			return 0, false
		}
	}
	if rest != "" {
		return 0, false
	}
	v, err := strconv.ParseFloat(ascii.String(), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, false
	}
	return v, true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// parsePyAddr parses an IP address as Python's ipaddress.ip_address does. netip agrees with it
// on IPv4 (four decimal octets, no leading zeros) and IPv6 syntax; only the zone ("scope id")
// rules differ: Python wants a non-empty zone without a second '%', and no '/' anywhere.
func parsePyAddr(s string) (netip.Addr, bool) {
	if strings.IndexByte(s, '/') >= 0 {
		return netip.Addr{}, false
	}
	if i := strings.IndexByte(s, '%'); i >= 0 {
		if zone := s[i+1:]; zone == "" || strings.IndexByte(zone, '%') >= 0 {
			return netip.Addr{}, false
		}
	}
	address, err := netip.ParseAddr(s)
	return address, err == nil
}

// pyAddrString is str() of a Python ipaddress address: netip's text (RFC 5952, as Python's),
// except that Python shows an IPv4-mapped address in hexadecimal (::ffff:a00:5, not
// ::ffff:10.0.0.5).
func pyAddrString(a netip.Addr) string {
	if !a.Is4In6() {
		return a.String()
	}
	b := a.Unmap().As4()
	text := fmt.Sprintf("::ffff:%x:%x", uint16(b[0])<<8|uint16(b[1]), uint16(b[2])<<8|uint16(b[3]))
	if zone := a.Zone(); zone != "" {
		text += "%" + zone
	}
	return text
}

// parsePyNetwork parses a network as Python's ipaddress.ip_network(s, strict=False) does: an
// address with an optional "/prefix" (leading zeros allowed), for IPv4 also "/netmask" or
// "/hostmask"; host bits are cleared. An IPv6 zone is accepted and dropped (Python keeps it but
// ignores it when testing membership).
func parsePyNetwork(s string) (netip.Prefix, bool) {
	parts := strings.Split(s, "/")
	if len(parts) > 2 {
		return netip.Prefix{}, false
	}
	address, ok := parsePyAddr(parts[0])
	if !ok {
		return netip.Prefix{}, false
	}
	address = address.WithZone("")
	bits := address.BitLen()
	if len(parts) == 2 {
		mask := parts[1]
		n, digits := asciiNumber(mask)
		switch {
		case digits && n <= address.BitLen():
			bits = n
		case address.Is4():
			if bits, ok = ipv4MaskBits(mask); !ok {
				return netip.Prefix{}, false
			}
		default:
			return netip.Prefix{}, false
		}
	}
	return netip.PrefixFrom(address, bits).Masked(), true
}

// asciiNumber is the value of a non-empty string of ASCII digits (capped, to avoid overflow).
func asciiNumber(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = min(n*10+int(s[i]-'0'), 1<<20)
	}
	return n, true
}

// ipv4MaskBits reads an IPv4 netmask (255.255.0.0) or hostmask (0.0.255.255) as a prefix length.
func ipv4MaskBits(s string) (int, bool) {
	mask, err := netip.ParseAddr(s)
	if err != nil || !mask.Is4() {
		return 0, false
	}
	b := mask.As4()
	value := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	for _, m := range []uint32{value, ^value} { // netmask first, then hostmask, as Python tries
		ones := 0
		for ones < 32 && m&(1<<(31-ones)) != 0 {
			ones++
		}
		if ones == 32 || m<<ones == 0 {
			return ones, true
		}
	}
	return 0, false
}

// pyPathJoin is os.path.join(dir, name) for a relative name: no cleaning of the path, so the
// message shows the directory as it was configured.
func pyPathJoin(dir, name string) string {
	if dir == "" || strings.HasSuffix(dir, "/") {
		return dir + name
	}
	return dir + "/" + name
}

// pyOSError renders a failed open/read of path as str(OSError) does:
// "[Errno 2] No such file or directory: '/path'".
func pyOSError(err error, path string) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		var pathErr *fs.PathError
		if errors.As(err, &pathErr) {
			return pathErr.Err.Error()
		}
		return err.Error()
	}
	text := errno.Error()
	if text != "" {
		// Go's errno texts are glibc's strerror texts with a lower-case first letter.
		first, size := utf8.DecodeRuneInString(text)
		text = string(unicode.ToUpper(first)) + text[size:]
	}
	return fmt.Sprintf("[Errno %d] %s: %s", int(errno), text, pyRepr(path))
}
