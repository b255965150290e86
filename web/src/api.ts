// HTTP calls to /api/v1 (SPEC §5, §7). Every answer goes through a wire parser; every error
// becomes an ApiFailure with the server's code and message. A 401 calls `onUnauthorized`.
import type { ApiError } from "./wire";
import { parseApiError } from "./wire";

export class ApiFailure extends Error {
  override name = "ApiFailure";
  constructor(
    readonly status: number,
    readonly error: ApiError,
  ) {
    super(error.message);
  }
}

export interface ApiOptions {
  token?: string | null;
  body?: unknown;
  headers?: Record<string, string>;
  /** Give up after this long (the answer's body included): ApiFailure(0, code "timeout"). Without it a
   * server that accepts the request and never answers holds the caller for ever. */
  timeoutMs?: number;
  /** The caller's own cancel (e.g. a poll that is superseded): ApiFailure(0, code "aborted"). */
  signal?: AbortSignal;
}

/** The failures that mean "no answer": the request may or may not have reached the server. */
export function noAnswer(e: unknown): e is ApiFailure {
  return e instanceof ApiFailure && e.status === 0;
}

export class Api {
  constructor(
    private readonly base: string,
    private readonly onUnauthorized: (e: ApiFailure) => void,
  ) {}

  async call<T>(method: string, path: string, parse: (v: unknown) => T, opts: ApiOptions = {}): Promise<T> {
    const headers: Record<string, string> = { Accept: "application/json", ...(opts.headers ?? {}) };
    if (opts.token) headers["Authorization"] = `Bearer ${opts.token}`;
    let body: string | undefined;
    if (opts.body !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.body);
    }
    const ctl = new AbortController();
    let timedOut = false;
    const timer =
      opts.timeoutMs === undefined
        ? null
        : setTimeout(() => {
            timedOut = true;
            ctl.abort();
          }, opts.timeoutMs);
    const cancel = () => ctl.abort();
    if (opts.signal?.aborted) ctl.abort();
    opts.signal?.addEventListener("abort", cancel);
    const gaveUp = (): ApiFailure | null =>
      timedOut
        ? new ApiFailure(0, {
            code: "timeout",
            message: `The server did not answer within ${((opts.timeoutMs ?? 0) / 1000).toFixed(0)} s.`,
          })
        : ctl.signal.aborted
          ? new ApiFailure(0, { code: "aborted", message: "The request was cancelled." })
          : null;
    let res: Response;
    let json: unknown = null;
    try {
      try {
        res = await fetch(this.base + path, { method, headers, body, cache: "no-store", signal: ctl.signal });
      } catch {
        throw gaveUp() ?? new ApiFailure(0, { code: "network", message: "The server cannot be reached. Check your connection." });
      }
      try {
        json = await res.json();
      } catch {
        const e = gaveUp(); // a body that stopped arriving is no answer, not an empty one
        if (e) throw e;
        json = null;
      }
    } finally {
      if (timer !== null) clearTimeout(timer);
      opts.signal?.removeEventListener("abort", cancel);
    }
    if (!res.ok) {
      let err: ApiError;
      try {
        err = parseApiError(json);
      } catch {
        err = { code: `http_${res.status}`, message: `The server answered ${res.status}.` };
      }
      const f = new ApiFailure(res.status, err);
      if (res.status === 401 && opts.token) this.onUnauthorized(f);
      throw f;
    }
    return parse(json);
  }
}
