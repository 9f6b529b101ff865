package main

import (
	"flag"

	"parley/push"
)

// pushFlags are the push providers' credentials: a provider is used when
// its key file is given.
type pushFlags struct {
	fcmKey, fcmProject, fcmEndpoint                  *string
	apnsKey, apnsKeyID, apnsTeam, apnsTopic, apnsURL *string
	vapidKey, vapidSubject                           *string
	webhookSecret                                    *string
	allowPrivate                                     *bool
}

func definePushFlags() *pushFlags {
	return &pushFlags{
		fcmKey:        flag.String("push-fcm-key", "", "FCM: the service account's JSON key file (enables FCM)"),
		fcmProject:    flag.String("push-fcm-project", "", "FCM: the Firebase project ID (default: the key's project_id)"),
		fcmEndpoint:   flag.String("push-fcm-endpoint", "", "FCM: the API's origin (default: Google's; tests point it at a fake)"),
		apnsKey:       flag.String("push-apns-key", "", "APNs: the .p8 signing key file (enables APNs)"),
		apnsKeyID:     flag.String("push-apns-key-id", "", "APNs: the key's ID"),
		apnsTeam:      flag.String("push-apns-team", "", "APNs: the developer team ID"),
		apnsTopic:     flag.String("push-apns-topic", "", "APNs: the app's bundle ID"),
		apnsURL:       flag.String("push-apns-endpoint", "", "APNs: the API's origin (default: production; "+push.APNsSandboxEndpoint+" for development builds)"),
		vapidKey:      flag.String("push-vapid-key", "", "Web Push: the VAPID private key file, PEM or base64url (enables Web Push)"),
		vapidSubject:  flag.String("push-vapid-subject", "", "Web Push: the VAPID contact, mailto: or https: URL"),
		webhookSecret: flag.String("push-webhook-secret", "", "webhooks: the signing secret file, whsec_ + base64 (enables webhook targets)"),
		allowPrivate:  flag.Bool("push-allow-private", false, "Web Push and webhooks may reach loopback and private addresses (tests, receivers on the operator's network)"),
	}
}

func (f *pushFlags) config() push.Config {
	var c push.Config
	if *f.fcmKey != "" {
		c.FCM = &push.FCMConfig{ServiceAccountFile: *f.fcmKey, ProjectID: *f.fcmProject, Endpoint: *f.fcmEndpoint}
	}
	if *f.apnsKey != "" {
		c.APNs = &push.APNsConfig{KeyFile: *f.apnsKey, KeyID: *f.apnsKeyID, TeamID: *f.apnsTeam, Topic: *f.apnsTopic, Endpoint: *f.apnsURL}
	}
	if *f.vapidKey != "" {
		c.WebPush = &push.WebPushConfig{VAPIDKeyFile: *f.vapidKey, Subject: *f.vapidSubject, AllowPrivateNetworks: *f.allowPrivate}
	}
	if *f.webhookSecret != "" {
		c.Webhook = &push.WebhookConfig{SecretFile: *f.webhookSecret, AllowPrivateNetworks: *f.allowPrivate}
	}
	return c
}
