package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// DefaultTimeout bounds one request to a provider, connection included. A
// push that has not been accepted in this time is better retried by the
// queue than waited for by a worker.
const DefaultTimeout = 15 * time.Second

// maxErrorBody caps how much of a provider's error answer is read: the reason
// fits in a few hundred bytes and a hostile webhook receiver must not be able
// to make us buffer megabytes.
const maxErrorBody = 64 << 10

// newHTTPClient returns a client with a total timeout that does not follow
// redirects: a provider never redirects a send, a POST turned into a GET by a
// 302 would be reported as delivered, and a redirect could walk a webhook to
// an address the dial guard would have refused.
//
// With publicOnly, the client refuses to connect to loopback, private,
// link-local, CGNAT and multicast addresses, checked on the resolved address
// at dial time (so DNS answers cannot bypass it). Webhook URLs and Web Push
// endpoints come from users; without the guard a registration could make the
// server POST into its own network. The guarded client ignores proxy
// variables, since the proxy's own address would be what gets checked.
func newHTTPClient(timeout time.Duration, publicOnly bool) *http.Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = true
	if publicOnly {
		dialer.ControlContext = refusePrivateAddress
		tr.Proxy = nil
	}
	tr.DialContext = dialer.DialContext
	return &http.Client{
		Timeout:       timeout,
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// withoutRedirects returns a copy of a caller-supplied client that does not
// follow redirects either, for the same reasons as newHTTPClient.
func withoutRedirects(c *http.Client) *http.Client {
	cp := *c
	cp.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cp
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// ErrPrivateAddress is wrapped in the error of a send whose URL resolved to
// an address the guarded client refuses. The Result says Gone: the
// registration points somewhere this server will never deliver to.
var ErrPrivateAddress = errors.New("push: refusing to connect to a non-public address")

func refusePrivateAddress(_ context.Context, network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("push: dial %s: %w", address, err)
	}
	ip := ap.Addr().Unmap()
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() || cgnat.Contains(ip) {
		return fmt.Errorf("%w %s", ErrPrivateAddress, ip)
	}
	return nil
}

// readLimited reads at most maxErrorBody bytes of body and discards the rest
// up to the same limit so the connection can be reused.
func readLimited(body io.Reader) []byte {
	b, _ := io.ReadAll(io.LimitReader(body, maxErrorBody))
	io.Copy(io.Discard, io.LimitReader(body, maxErrorBody))
	return b
}

// classify fills the Result for a non-success status with the rules all four
// providers share: 429 and 5xx are retryable with the Retry-After hint.
// Provider-specific Gone rules are applied by the caller.
// deliveryFailure is transportFailure for user-supplied URLs (webhooks, Web
// Push endpoints), where a refused private address is Gone.
func deliveryFailure(ctx context.Context, err error) (Result, error) {
	if errors.Is(err, ErrPrivateAddress) {
		return Result{Gone: true}, err
	}
	return transportFailure(ctx, err)
}

func classify(resp *http.Response, now time.Time) Result {
	r := Result{Status: resp.StatusCode}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		r.Retryable = true
		r.RetryAfter = retryAfter(resp.Header, now)
	}
	return r
}
