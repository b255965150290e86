// The one websocket (SPEC §8): public streams, then `{"type":"auth"}` as the first message when
// signed in (no token in the URL), taps as `bet` messages (§8a), reconnect with backoff.
import type { ClientMsg, ServerMsg } from "./wire";
import { parseServerMsg, WireError } from "./wire";

export interface SocketEvents {
  onMessage(m: ServerMsg): void;
  onState(state: "connecting" | "open" | "reconnecting", attempt: number, retryAt: number | null): void;
  /** Close code 4401: the session is no longer valid. */
  onUnauthorized(): void;
  /** The socket is open (and authenticated if a token was given): re-sync what a drop may have hidden. */
  onOpen(): void;
}

export const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000];

export class TapSocket {
  private ws: WebSocket | null = null;
  private token: string | null = null;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;

  constructor(
    private readonly url: string,
    private readonly ev: SocketEvents,
  ) {}

  start(token: string | null): void {
    this.token = token;
    this.stopped = false;
    this.open();
  }

  /** Re-open with another token (sign in / sign out). */
  restart(token: string | null): void {
    this.token = token;
    this.attempt = 0;
    this.closeCurrent();
    this.open();
  }

  stop(): void {
    this.stopped = true;
    this.closeCurrent();
  }

  get isOpen(): boolean {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Send a message; false (and nothing sent) when the socket is not open. */
  send(m: ClientMsg): boolean {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(m));
    return true;
  }

  /** Drop the connection as the network would (used by the reconnect button and tests). */
  drop(): void {
    this.ws?.close(4000, "dropped by client");
  }

  private closeCurrent(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onclose = ws.onmessage = ws.onerror = null;
      ws.close(1000, "bye");
    }
  }

  private open(): void {
    this.ev.onState(this.attempt === 0 ? "connecting" : "reconnecting", this.attempt, null);
    const ws = new WebSocket(this.url);
    this.ws = ws;
    let ready = false;
    const becomeReady = () => {
      ready = true;
      this.attempt = 0;
      this.ev.onState("open", 0, null);
      this.ev.onOpen();
    };
    ws.onopen = () => {
      // Signed in: the token goes as the first message (never in the URL) and the socket counts as
      // open — taps allowed — once the server says `auth:ok`. Signed out: public streams at once.
      if (this.token) ws.send(JSON.stringify({ type: "auth", token: this.token } satisfies ClientMsg));
      else becomeReady();
    };
    ws.onmessage = (e: MessageEvent) => {
      if (typeof e.data !== "string") return;
      try {
        const m = parseServerMsg(e.data);
        if (m.type === "auth:ok" && !ready) becomeReady();
        this.ev.onMessage(m);
      } catch (err) {
        if (!(err instanceof WireError)) throw err;
        console.warn("ignored a server message:", err.message);
      }
    };
    ws.onclose = (e: CloseEvent) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (e.code === 4401) {
        this.ev.onUnauthorized();
        this.token = null;
      }
      if (this.stopped) return;
      const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)] ?? 15000;
      const jitter = Math.floor(delay * 0.2 * Math.random());
      this.attempt += 1;
      const retryAt = Date.now() + delay + jitter;
      this.ev.onState("reconnecting", this.attempt, retryAt);
      this.timer = setTimeout(() => this.open(), delay + jitter);
    };
  }
}
