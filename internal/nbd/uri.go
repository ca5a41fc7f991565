package nbd

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// DefaultPort is the IANA port of NBD.
const DefaultPort = "10809"

// Address is where an export is: a network ("tcp" or "unix"), an address
// for net.Dial, and the export's name ("" is the server's default export).
type Address struct {
	Network string
	Addr    string
	Export  string
	URI     string // as given
}

func (a Address) String() string { return a.URI }

// IsURI reports whether s is meant as an NBD URI (nbd:, nbds:, nbd+unix: ...)
// rather than a file name.
func IsURI(s string) bool {
	scheme, _, ok := strings.Cut(s, "://")
	return ok && (scheme == "nbd" || strings.HasPrefix(scheme, "nbd+") ||
		scheme == "nbds" || strings.HasPrefix(scheme, "nbds+"))
}

// ParseURI parses an NBD URI as the NBD URI standard (doc/uri.md) writes
// them: nbd://HOST[:PORT]/EXPORT over TCP, nbd+unix:///EXPORT?socket=PATH
// over a Unix socket. TLS (nbds) and vsock are refused.
func ParseURI(s string) (Address, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Address{}, fmt.Errorf("NBD URI %q: %w", s, err)
	}
	a := Address{Export: strings.TrimPrefix(u.Path, "/"), URI: s}
	q := u.Query()
	bad := func(format string, args ...any) (Address, error) {
		return Address{}, fmt.Errorf("NBD URI %q: "+format, append([]any{s}, args...)...)
	}
	for k := range q {
		if k != "socket" {
			return bad("unsupported parameter %q", k)
		}
	}
	switch u.Scheme {
	case "nbd", "nbd+tcp":
		if u.Host == "" {
			return bad("no host; write nbd://HOST[:PORT]/EXPORT")
		}
		if q.Has("socket") {
			return bad("socket= belongs to nbd+unix:///EXPORT?socket=PATH")
		}
		host, port := u.Hostname(), u.Port()
		if port == "" {
			port = DefaultPort
		}
		a.Network, a.Addr = "tcp", net.JoinHostPort(host, port)
	case "nbd+unix":
		if u.Host != "" {
			return bad("a Unix socket URI has no host; write nbd+unix:///EXPORT?socket=PATH")
		}
		if q.Get("socket") == "" {
			return bad("no socket; write nbd+unix:///EXPORT?socket=PATH")
		}
		a.Network, a.Addr = "unix", q.Get("socket")
	case "nbds", "nbds+tcp", "nbds+unix":
		return bad("TLS (nbds) is not supported; use an nbd:// or nbd+unix:// export")
	default:
		return bad("unsupported scheme %q; use nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH", u.Scheme)
	}
	if u.User != nil {
		return bad("user names are not supported")
	}
	return a, nil
}
