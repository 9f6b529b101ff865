package wire

// AdminUser is GET /v1/admin/users/{user}.
type AdminUser struct {
	ID        uint64        `json:"id"`
	Username  string        `json:"username"`
	CreatedAt int64         `json:"created_at"`
	LastSeen  int64         `json:"last_seen,omitempty"`
	Suspended bool          `json:"suspended"`
	Deleted   bool          `json:"deleted,omitempty"`
	Devices   []AdminDevice `json:"devices"`
}

// AdminDevice is one of a user's devices in AdminUser.
type AdminDevice struct {
	ID        uint64 `json:"id"`
	Name      string `json:"name"`
	CreatedAt int64  `json:"created_at"`
	Revoked   bool   `json:"revoked,omitempty"`
}

// AuditEntry is one administrative action of GET /v1/admin/audit.
type AuditEntry struct {
	Index     uint64 `json:"idx"`
	N         uint64 `json:"n"`
	Ts        int64  `json:"ts"`
	Action    string `json:"action"` // "suspend", "reset_password", "revoke_device"
	User      uint64 `json:"user"`
	Device    uint64 `json:"device,omitempty"`
	Suspended bool   `json:"suspended,omitempty"` // suspend: true, unsuspend: false
	Who       string `json:"who"`
	What      string `json:"what,omitempty"` // cluster actions: what was done
}

// AuditPage is a page of the audit log, oldest first.
type AuditPage struct {
	Entries []AuditEntry `json:"entries"`
	More    bool         `json:"more"`
	Next    string       `json:"next,omitempty"` // pass back as ?after=
}
