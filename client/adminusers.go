package client

import (
	"context"
	"net/url"
	"strconv"

	"parley/wire"
)

// User looks a user up by id or username: their account, whether they are
// suspended, and their devices.
func (a *Admin) User(ctx context.Context, who string) (*wire.AdminUser, error) {
	var u wire.AdminUser
	if err := a.do(ctx, "GET", "users/"+url.PathEscape(who), nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// Suspend suspends a user (on) or lifts it: a suspended user's connections
// close and their logins and connections are refused (403 forbidden).
func (a *Admin) Suspend(ctx context.Context, who string, on bool) error {
	action := "suspend"
	if !on {
		action = "unsuspend"
	}
	return a.do(ctx, "POST", "users/"+url.PathEscape(who)+"/"+action, struct{}{}, nil)
}

// ResetPassword sets a user's password and revokes all their devices.
func (a *Admin) ResetPassword(ctx context.Context, who, password string) error {
	return a.do(ctx, "POST", "users/"+url.PathEscape(who)+"/password", map[string]string{"password": password}, nil)
}

// DeleteUser deletes an account: its name is free again, its devices are
// revoked, it leaves its groups; its messages stay, from a deleted
// account (docs/OPERATIONS.md).
func (a *Admin) DeleteUser(ctx context.Context, who string) error {
	return a.do(ctx, "POST", "users/"+url.PathEscape(who)+"/delete", struct{}{}, nil)
}

// RevokeDevice revokes one of a user's devices.
func (a *Admin) RevokeDevice(ctx context.Context, who string, device uint64) error {
	return a.do(ctx, "POST", "users/"+url.PathEscape(who)+"/devices/"+strconv.FormatUint(device, 10)+"/revoke", struct{}{}, nil)
}

// Audit returns a page of the audit log after after (a previous page's
// Next; "" for the first page).
func (a *Admin) Audit(ctx context.Context, after string, limit int) (*wire.AuditPage, error) {
	q := url.Values{}
	if after != "" {
		q.Set("after", after)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var p wire.AuditPage
	if err := a.do(ctx, "GET", "audit?"+q.Encode(), nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}
