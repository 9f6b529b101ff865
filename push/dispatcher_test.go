package push_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"parley/push"
	"parley/push/pushtest"
)

// One dispatcher with all four providers pointed at their fakes: each target
// reaches its own provider.
func TestDispatcherRoutesByProvider(t *testing.T) {
	fcm, apns, wp, hook := pushtest.NewFCM(t), pushtest.NewAPNs(t), pushtest.NewWebPush(t), pushtest.NewWebhookReceiver(t)
	d, err := push.NewDispatcher(push.Config{
		FCM:     &push.FCMConfig{ServiceAccountFile: fcm.ServiceAccountFile, Endpoint: fcm.URL, HTTPClient: fcm.Client()},
		APNs:    &push.APNsConfig{KeyFile: apns.KeyFile, KeyID: apns.KeyID, TeamID: apns.TeamID, Topic: apns.Topic, Endpoint: apns.URL, HTTPClient: apns.Client()},
		WebPush: &push.WebPushConfig{VAPIDKeyFile: wp.VAPIDKeyFile, Subject: "mailto:ops@parley.invalid", HTTPClient: wp.Client()},
		Webhook: &push.WebhookConfig{SecretFile: hook.SecretFile, HTTPClient: hook.Client()},
	})
	if err != nil {
		t.Fatal(err)
	}
	if d.VAPIDPublicKey() != wp.VAPIDPublic {
		t.Errorf("VAPIDPublicKey %q", d.VAPIDPublicKey())
	}
	sub := wp.Subscribe(t)
	n := push.Notification{Body: "hi", Conv: 1, Seq: 2, IdempotencyKey: "m2-d"}
	for _, tg := range []push.Target{
		{Provider: push.ProviderFCM, Token: "fcm-token"},
		{Provider: push.ProviderAPNs, Token: deviceA},
		target(sub),
		{Provider: push.ProviderWebhook, Token: hook.URL + "/h"},
	} {
		if _, err := d.Send(context.Background(), tg, n); err != nil {
			t.Errorf("%s: %v", tg.Provider, err)
		}
	}
	if len(fcm.Messages()) != 1 || len(apns.Notifications()) != 1 || len(wp.Messages()) != 1 || len(hook.Delivered()) != 1 {
		t.Fatalf("fcm %d apns %d webpush %d webhook %d, want one each",
			len(fcm.Messages()), len(apns.Notifications()), len(wp.Messages()), len(hook.Delivered()))
	}
}

func TestDispatcherUnconfiguredAndUnknown(t *testing.T) {
	d, err := push.NewDispatcher(push.Config{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := d.Send(context.Background(), push.Target{Provider: push.ProviderAPNs, Token: deviceA}, push.Notification{Body: "x"})
	if !errors.Is(err, push.ErrNotConfigured) || res.Gone || res.Retryable {
		t.Errorf("unconfigured: %+v %v", res, err)
	}
	res, err = d.Send(context.Background(), push.Target{Provider: "pigeon"}, push.Notification{Body: "x"})
	if err == nil || !strings.Contains(err.Error(), "pigeon") || res.Gone {
		t.Errorf("unknown: %+v %v", res, err)
	}
}

func TestNewDispatcherReportsEveryBrokenProvider(t *testing.T) {
	dir := t.TempDir()
	_, err := push.NewDispatcher(push.Config{
		FCM:     &push.FCMConfig{ServiceAccountFile: dir + "/sa.json"},
		APNs:    &push.APNsConfig{KeyFile: dir + "/k.p8", KeyID: "K", TeamID: "T", Topic: "x"},
		WebPush: &push.WebPushConfig{VAPIDKeyFile: dir + "/v.pem", Subject: "mailto:a@b.invalid"},
		Webhook: &push.WebhookConfig{SecretFile: dir + "/whsec"},
	})
	for _, want := range []string{"fcm", "apns", "webpush", "webhook"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}

func TestRecorderScripts(t *testing.T) {
	var r pushtest.Recorder
	r.Script("dead", pushtest.Scripted{Result: push.Result{Gone: true, Status: 410}, Err: errors.New("gone")})
	d := push.NewDispatcherWith(map[string]push.Sender{push.ProviderFCM: &r})
	if res, err := d.Send(context.Background(), push.Target{Provider: push.ProviderFCM, Token: "dead"}, push.Notification{}); !res.Gone || err == nil {
		t.Errorf("%+v %v", res, err)
	}
	if res, err := d.Send(context.Background(), push.Target{Provider: push.ProviderFCM, Token: "ok"}, push.Notification{}); res.Status != 200 || err != nil {
		t.Errorf("%+v %v", res, err)
	}
	if len(r.Sends()) != 2 {
		t.Errorf("%d sends recorded", len(r.Sends()))
	}
}
