// When to restart a crashed server. Doubling delays keep a crash loop (a broken model, a bad
// install) from pinning a core; a run that lasted a while resets the count, because the next
// crash is then a new problem, not the same one.

export interface BackoffOptions {
  initialMs: number;   // first delay
  maxMs: number;       // delays stop growing here
  maxAttempts: number; // quick crashes in a row before giving up (the user can restart by hand)
  stableMs: number;    // a run at least this long resets the count
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 1000, maxMs: 30000, maxAttempts: 6, stableMs: 60000 };

export class Backoff {
  private attempts = 0;
  private startedAt: number | undefined;

  constructor(private readonly options: BackoffOptions = DEFAULT_BACKOFF) {}

  /** The server (re)started at `now`. */
  started(now: number): void {
    this.startedAt = now;
  }

  /** The server died at `now`: the delay before the next start in ms, or undefined to give up. */
  nextDelay(now: number): number | undefined {
    if (this.startedAt !== undefined && now - this.startedAt >= this.options.stableMs) {
      this.attempts = 0;
    }
    this.startedAt = undefined;
    if (this.attempts >= this.options.maxAttempts) {
      return undefined;
    }
    const delay = Math.min(this.options.maxMs, this.options.initialMs * 2 ** this.attempts);
    this.attempts += 1;
    return delay;
  }

  /** A deliberate restart (the user asked): start counting afresh. */
  reset(): void {
    this.attempts = 0;
    this.startedAt = undefined;
  }
}
