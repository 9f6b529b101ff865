package push_test

import (
	"context"
	"errors"
	"log"
	"time"

	"parley/push"
)

// The node builds one Dispatcher from its config and calls it from the
// notification queue's workers; what it does with the Result is its own
// policy. (Compiled, not run: it names credential files.)
func Example() {
	d, err := push.NewDispatcher(push.Config{
		Timeout: 10 * time.Second,
		FCM:     &push.FCMConfig{ServiceAccountFile: "fcm-service-account.json"},
		APNs: &push.APNsConfig{KeyFile: "AuthKey_ABC123DEFG.p8", KeyID: "ABC123DEFG",
			TeamID: "DEF123GHIJ", Topic: "org.parley.app"},
		WebPush: &push.WebPushConfig{VAPIDKeyFile: "vapid.pem", Subject: "mailto:ops@parley.invalid"},
		Webhook: &push.WebhookConfig{SecretFile: "webhook-secret"},
	})
	if err != nil {
		log.Fatal(err) // names every provider whose credentials did not load
	}
	res, err := d.Send(context.Background(),
		push.Target{Provider: push.ProviderFCM, Token: "registration-token"},
		push.Notification{Title: "Ann", Body: "lunch?", Conv: 7, Seq: 42, Badge: 1,
			CollapseKey: "conv-7", ThreadID: "conv-7", IdempotencyKey: "7/42/device-9"})
	switch {
	case err == nil:
		// delivered to the provider
	case res.Gone:
		// remove the registration
	case res.Retryable:
		_ = res.RetryAfter // requeue no earlier than this
	case errors.Is(err, push.ErrNotConfigured):
		// this node has no credentials for the provider
	default:
		log.Print(err) // drop this message for this device
	}
}
