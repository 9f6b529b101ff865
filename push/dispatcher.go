package push

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Config names the credentials of each provider the node uses; a nil
// section leaves that provider unconfigured, and sends to it fail with
// ErrNotConfigured. It is a plain struct so cmd/ can fill it from flags.
type Config struct {
	// Timeout is given to every provider whose own Timeout is zero.
	Timeout time.Duration
	FCM     *FCMConfig
	APNs    *APNsConfig
	WebPush *WebPushConfig
	Webhook *WebhookConfig
}

// Dispatcher is the Sender the node calls: it routes each Target to the
// Sender for its Provider. It is safe for concurrent use; the map is written
// only while it is built.
type Dispatcher struct {
	senders map[string]Sender
	vapid   string
}

var _ Sender = (*Dispatcher)(nil)

// NewDispatcher builds a Sender for each configured provider. It reports
// every provider that failed to load, not only the first, so an operator
// fixes a config in one round.
func NewDispatcher(cfg Config) (*Dispatcher, error) {
	d := &Dispatcher{senders: make(map[string]Sender)}
	var errs []error
	if c := cfg.FCM; c != nil {
		cc := *c
		cc.Timeout = orDefault(cc.Timeout, cfg.Timeout)
		if s, err := NewFCM(cc); err != nil {
			errs = append(errs, err)
		} else {
			d.senders[ProviderFCM] = s
		}
	}
	if c := cfg.APNs; c != nil {
		cc := *c
		cc.Timeout = orDefault(cc.Timeout, cfg.Timeout)
		if s, err := NewAPNs(cc); err != nil {
			errs = append(errs, err)
		} else {
			d.senders[ProviderAPNs] = s
		}
	}
	if c := cfg.WebPush; c != nil {
		cc := *c
		cc.Timeout = orDefault(cc.Timeout, cfg.Timeout)
		if s, err := NewWebPush(cc); err != nil {
			errs = append(errs, err)
		} else {
			d.senders[ProviderWebPush] = s
			d.vapid = s.PublicKey()
		}
	}
	if c := cfg.Webhook; c != nil {
		cc := *c
		cc.Timeout = orDefault(cc.Timeout, cfg.Timeout)
		if s, err := NewWebhook(cc); err != nil {
			errs = append(errs, err)
		} else {
			d.senders[ProviderWebhook] = s
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return d, nil
}

// NewDispatcherWith routes to the given Senders by provider name; tests use
// it with pushtest.Recorder.
func NewDispatcherWith(senders map[string]Sender) *Dispatcher {
	d := &Dispatcher{senders: make(map[string]Sender, len(senders))}
	for k, v := range senders {
		d.senders[k] = v
	}
	return d
}

func orDefault(d, fallback time.Duration) time.Duration {
	if d != 0 {
		return d
	}
	return fallback
}

// Configured reports whether provider has a Sender.
func (d *Dispatcher) Configured(provider string) bool {
	_, ok := d.senders[provider]
	return ok
}

// VAPIDPublicKey is the applicationServerKey web clients subscribe with, ""
// when Web Push is not configured.
func (d *Dispatcher) VAPIDPublicKey() string { return d.vapid }

// Send routes to t.Provider's Sender. An unconfigured or unknown provider is
// an error that is neither Gone nor Retryable: during a rolling upgrade a
// node may see a provider it does not know yet, and must not delete the
// registration for it.
func (d *Dispatcher) Send(ctx context.Context, t Target, n Notification) (Result, error) {
	s, ok := d.senders[t.Provider]
	if !ok {
		switch t.Provider {
		case ProviderFCM, ProviderAPNs, ProviderWebPush, ProviderWebhook:
			return Result{}, fmt.Errorf("push: %s: %w", t.Provider, ErrNotConfigured)
		}
		return Result{}, fmt.Errorf("push: unknown provider %q", t.Provider)
	}
	return s.Send(ctx, t, n)
}
