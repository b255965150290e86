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
    let res: Response;
    try {
      res = await fetch(this.base + path, { method, headers, body, cache: "no-store" });
    } catch {
      throw new ApiFailure(0, { code: "network", message: "The server cannot be reached. Check your connection." });
    }
    let json: unknown = null;
    try {
      json = await res.json();
    } catch {
      json = null;
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
