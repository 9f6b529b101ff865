/** The stable error codes of §6, plus the client's own `disconnected`. */
export type ErrorCode =
  | "bad_frame"
  | "unknown_type"
  | "too_large"
  | "invalid"
  | "unauthorized"
  | "forbidden"
  | "not_member"
  | "not_found"
  | "conflict"
  | "username_taken"
  | "rate_limited"
  | "busy"
  | "unavailable"
  | "timeout"
  | "storage_full"
  | "internal"
  /** The connection dropped before the reply came (the outcome is unknown). */
  | "disconnected"
  /** The client was closed. */
  | "closed";

/** An error reply, an HTTP error, or a failure of the client itself. */
export class ParleyError extends Error {
  readonly code: ErrorCode | string;
  /** HTTP status for the accounts API; 0 otherwise. */
  readonly status: number;
  /** From a Retry-After header, or a `busy` reply's `retry_ms`, in milliseconds; 0 when absent. */
  readonly retryAfterMs: number;

  constructor(code: ErrorCode | string, message: string, status = 0, retryAfterMs = 0) {
    super(message ? `${code}: ${message}` : code);
    this.name = "ParleyError";
    this.code = code;
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }
}

const retryable = new Set<string>([
  "rate_limited",
  "busy",
  "unavailable",
  "timeout",
  "storage_full",
  "internal",
  "disconnected",
]);

/** Whether a request that failed with this error may be retried (§6). */
export function isRetryable(err: unknown): boolean {
  return err instanceof ParleyError && retryable.has(err.code);
}
