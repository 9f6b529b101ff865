// Frame and value types of the Parley protocol, version 1 (docs/PROTOCOL.md).
// Integers are JavaScript numbers: the server keeps them below 2^53.

/** The `limits` map of hello (§4.1). */
export interface Limits {
  max_frame: number;
  max_body: number;
  rate: number;
  burst: number;
  max_reply: number;
  reads: number;
}

/** The first frame on every connection (§4.1). */
export interface Hello {
  v: number;
  user: number;
  dev: number;
  node: string;
  idx: number;
  ping_ms: number;
  limits: Limits;
  /** The server's Web Push public key (base64url), absent without Web Push. */
  vapid?: string;
}

export type EventKind =
  | "message"
  | "created"
  | "member_added"
  | "member_removed"
  | "member_left"
  | "admin_changed"
  | "renamed"
  | "deleted";

/** A durable change of a conversation (§4.3). */
export interface Event {
  conv: number;
  seq: number;
  idx: number;
  ts: number;
  kind: EventKind | string;
  from: number;
  dev?: number;
  cmid?: string;
  body?: string;
  reply_to?: number;
  users?: number[];
  name?: string;
  admin?: boolean;
  /** `deleted`: the seq of the message deleted; a deleted message: the seq of its `deleted` event. */
  target?: number;
  /** A message deleted for everyone: no body, no att. */
  deleted?: boolean;
  att?: Attachment[];
}

/** A file of a message (§9.2). */
export interface Attachment {
  id: string;
  [key: string]: unknown;
}

/** A conversation as the asking user sees it (§4.3). */
export interface ConvInfo {
  id: number;
  kind: "direct" | "group";
  name?: string;
  members?: number[];
  admins?: number[];
  member_count?: number;
  last_seq?: number;
  last_idx?: number;
  created_at?: number;
  delivered?: number;
  read?: number;
  unread?: number;
  muted_until?: number;
  peer_delivered?: number;
  peer_read?: number;
  more?: boolean;
  next?: number;
}

/** One conversation of a sync page (§4.3). */
export interface ConvSync {
  info: ConvInfo;
  events?: Event[];
  more?: boolean;
  gone?: boolean;
}

export interface DeviceInfo {
  id: number;
  name: string;
  created_at: number;
  revoked?: boolean;
  current?: boolean;
}

export interface UserInfo {
  id: number;
  username: string;
  last_seen?: number;
  hide_last_seen?: boolean;
  group_add?: string;
  preview?: boolean;
  dnd?: boolean;
}

export interface Presence {
  user: number;
  online: boolean;
  last_seen?: number;
}

export interface TypingSignal {
  conv: number;
  user: number;
  on: boolean;
  ttl_ms?: number;
}

export interface Receipt {
  conv: number;
  user: number;
  dev?: number;
  delivered?: number;
  read?: number;
  idx?: number;
}

export interface ReadCountItem {
  seq: number;
  from: number;
  read: number;
  delivered: number;
  members: number;
}

export interface ReadCounts {
  conv: number;
  items: ReadCountItem[];
}

/** The `ok` reply of a send: the ack (§4.2). */
export interface SendAck {
  conv: number;
  seq: number;
  ts: number;
  idx: number;
  cmid: string;
  dup?: boolean;
}

export interface HistoryPage {
  events: Event[];
  more: boolean;
}

export interface ReadersPage {
  conv: number;
  seq: number;
  read_count: number;
  delivered_count: number;
  member_count: number;
  readers: number[];
  more: boolean;
  next: number;
}

/** Any frame from the server: hello, ok, error, ev, typing, presence, receipt, read_counts. */
export interface ServerFrame {
  t: string;
  id?: number;
  code?: string;
  msg?: string;
  /** On `busy` from a write: wait at least this long before the retry (§5). */
  retry_ms?: number;
  [key: string]: unknown;
}
