/**
 * Exponential backoff with full jitter: a random delay in
 * [base*2^attempt/2, base*2^attempt], capped at max. attempt counts from 0.
 * Half of the range is kept so that a retry never comes at once.
 */
export function backoff(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/**
 * The wait before retrying a write refused with `busy` and `retry_ms`
 * (PROTOCOL §5): at least the hint plus a random part of up to half of it,
 * so that the clients refused together do not return together; and never
 * shorter than the client's own backoff.
 */
export function afterHint(hintMs: number, backoffMs: number, random: () => number = Math.random): number {
  if (!(hintMs > 0)) return backoffMs;
  return Math.max(backoffMs, Math.round(hintMs * (1 + random() * 0.5)));
}

/** A delay of at least ms, plus up to 20% jitter (for Retry-After). */
export function jitterAtLeast(ms: number, random: () => number = Math.random): number {
  return Math.round(ms * (1 + random() * 0.2));
}

export function sleep(ms: number, signal?: { aborted: boolean; addEventListener?: (t: "abort", f: () => void) => void }): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    signal?.addEventListener?.("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });
}
