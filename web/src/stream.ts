// The member's WebSocket (`/api/v1/stream`): first-frame authentication (browsers cannot set
// headers, and tokens never go in URLs), replay from the last `seq` handled, reconnection with
// backoff, and request/reply frames (`send`, `receipt`, `ping`) matched by `ref`.
//
// No loss: every event carries the member's `seq`; we keep the last one handled and reconnect
// with `since=<it>`, so the server replays exactly what we missed. No doubles: an event whose
// `seq` we already handled is dropped here (and messages are deduplicated by id above us).

import type { Problem } from "./api";

export type StreamStatus = "connecting" | "online" | "offline" | "ended";

export interface StreamEvent {
  type: string;
  seq?: number;
  [field: string]: unknown;
}

export interface StreamEnd {
  /** The close code: 4401 the session ended, 4403 the account may not act any more. */
  code: number;
  reason: string;
}

export class StreamReplyError extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail ?? problem.title ?? "refused");
  }
}

type EventListener = (event: StreamEvent) => void;
type StatusListener = (status: StreamStatus) => void;

interface Waiting {
  resolve(reply: StreamEvent): void;
  reject(error: Error): void;
  timer: number;
}

const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 5000];
const PING_EVERY_MS = 25_000;
const REPLY_TIMEOUT_MS = 15_000;

export interface StreamOptions {
  token: string;
  /** The last seq handled before (0: replay everything stored for me). */
  since?: number;
  /** Called once when the server ends the stream for good (4401, 4403). */
  onEnd?: (end: StreamEnd) => void;
  /** Override the URL (tests); default: this origin's `/api/v1/stream`. */
  url?: string;
}

export class Stream {
  status: StreamStatus = "connecting";
  /** The last `seq` handled: the `since` of the next connection. */
  lastSeq: number;
  /** True once the first `ready` arrived (the first replay is done). */
  caughtUp = false;
  /** How many times a connection became ready (1 after the first). */
  readyCount = 0;
  end: StreamEnd | null = null;
  /** The close code of the last connection while reconnecting; `4429`: the member already has
   * as many streams open as the server allows (other tabs, other devices). */
  lastCloseCode: number | null = null;

  private socket: WebSocket | null = null;
  private attempt = 0;
  private retryTimer = 0;
  private pingTimer = 0;
  private nextRef = 1;
  private waiting = new Map<string, Waiting>();
  private eventListeners = new Set<EventListener>();
  private statusListeners = new Set<StatusListener>();
  private stopped = false;
  private readonly onOnline = () => {
    if (this.status === "offline") this.reconnectNow();
  };

  constructor(private readonly options: StreamOptions) {
    this.lastSeq = options.since ?? 0;
  }

  start(): void {
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    this.connect();
  }

  /** Close for good (logout): no reconnection. */
  stop(): void {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    window.clearTimeout(this.retryTimer);
    window.clearInterval(this.pingTimer);
    this.failWaiting(new Error("the stream was closed"));
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onclose = null;
      socket.close(1000);
    }
    this.setStatus("ended");
  }

  subscribe(listener: EventListener): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  onStatus(listener: StatusListener): () => void {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  /** Send a client frame and wait for its reply (`ack`, `pong`); an `error` frame rejects
   * with StreamReplyError; a closed socket rejects with Error (resend later). */
  request(frame: Record<string, unknown>): Promise<StreamEvent> {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN || this.status !== "online") {
      return Promise.reject(new Error("not connected"));
    }
    const ref = `r${this.nextRef++}`;
    return new Promise((resolve, reject) => {
      const timer = window.setTimeout(() => {
        this.waiting.delete(ref);
        reject(new Error("no reply from the server"));
      }, REPLY_TIMEOUT_MS);
      this.waiting.set(ref, { resolve, reject, timer });
      socket.send(JSON.stringify({ ...frame, ref }));
    });
  }

  /** Drop the current connection and connect again at once (with `since`). */
  reconnectNow(): void {
    if (this.stopped || this.end) return;
    window.clearTimeout(this.retryTimer);
    this.attempt = 0;
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onclose = null;
      socket.close(1000);
    }
    this.connect();
  }

  private connect(): void {
    if (this.stopped || this.end) return;
    this.setStatus(this.readyCount === 0 && this.attempt === 0 ? "connecting" : "offline");
    const url =
      this.options.url ??
      `${window.location.protocol === "https:" ? "wss:" : "ws:"}//${window.location.host}/api/v1/stream`;
    let socket: WebSocket;
    try {
      socket = new WebSocket(url);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      socket.send(JSON.stringify({ type: "auth", token: this.options.token, since: this.lastSeq }));
    };
    socket.onmessage = (message) => {
      if (this.socket !== socket || typeof message.data !== "string") return;
      let frame: StreamEvent;
      try {
        frame = JSON.parse(message.data) as StreamEvent;
      } catch {
        return;
      }
      this.handle(frame);
    };
    socket.onclose = (close) => {
      if (this.socket !== socket) return;
      this.socket = null;
      window.clearInterval(this.pingTimer);
      this.failWaiting(new Error("the connection was lost"));
      if (close.code === 4401 || close.code === 4403) {
        this.end = { code: close.code, reason: close.reason || (close.code === 4401 ? "the session ended" : "the account may not act") };
        this.setStatus("ended");
        this.options.onEnd?.(this.end);
        return;
      }
      if (close.code === 4400) {
        // `since` refused: start over from what the server has for us.
        this.lastSeq = 0;
      }
      // Already offline (a retry refused): the status does not change, but the banner says
      // why (4429 or not), so the listeners are told.
      const retold = this.status === "offline" && this.lastCloseCode !== close.code;
      this.lastCloseCode = close.code;
      this.scheduleRetry();
      if (retold) this.notifyStatus();
    };
  }

  private handle(frame: StreamEvent): void {
    const ref = frame.ref;
    if ((frame.type === "ack" || frame.type === "pong" || frame.type === "error") && ref != null) {
      const waiting = this.waiting.get(String(ref));
      if (waiting) {
        this.waiting.delete(String(ref));
        window.clearTimeout(waiting.timer);
        if (frame.type === "error") waiting.reject(new StreamReplyError(frame.problem as Problem));
        else waiting.resolve(frame);
        return;
      }
    }
    if (frame.type === "ack" || frame.type === "pong") return;
    if (frame.type === "error") {
      // An error frame without a ref: a refused connection, followed by a close.
      this.emit(frame);
      return;
    }
    if (frame.type === "ready") {
      const seq = typeof frame.seq === "number" ? frame.seq : this.lastSeq;
      // A restored server clamps `since` to its newest seq: follow it, or we would drop what comes.
      this.lastSeq = seq;
      this.attempt = 0;
      this.lastCloseCode = null;
      this.caughtUp = true;
      this.readyCount += 1;
      this.setStatus("online");
      window.clearInterval(this.pingTimer);
      this.pingTimer = window.setInterval(() => this.ping(), PING_EVERY_MS);
      this.emit(frame);
      return;
    }
    if (typeof frame.seq === "number") {
      // e2ee.key_counts comes right after `ready` with ready's seq: device-only and idempotent.
      if (frame.seq <= this.lastSeq && frame.type !== "e2ee.key_counts") return;
      this.lastSeq = Math.max(this.lastSeq, frame.seq);
    }
    this.emit(frame);
  }

  private ping(): void {
    this.request({ type: "ping" }).catch(() => {
      // No pong in time: the connection is dead even if the browser has not noticed.
      if (this.status === "online") this.reconnectNow();
    });
  }

  private scheduleRetry(): void {
    if (this.stopped || this.end) return;
    this.setStatus("offline");
    const base = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    const delay = base / 2 + Math.random() * base;
    window.clearTimeout(this.retryTimer);
    this.retryTimer = window.setTimeout(() => this.connect(), delay);
  }

  private failWaiting(error: Error): void {
    for (const waiting of this.waiting.values()) {
      window.clearTimeout(waiting.timer);
      waiting.reject(error);
    }
    this.waiting.clear();
  }

  private emit(event: StreamEvent): void {
    for (const listener of [...this.eventListeners]) {
      try {
        listener(event);
      } catch (error) {
        console.error("stream listener failed", error);
      }
    }
  }

  private setStatus(status: StreamStatus): void {
    if (this.status === status) return;
    this.status = status;
    this.notifyStatus();
  }

  private notifyStatus(): void {
    for (const listener of [...this.statusListeners]) listener(this.status);
  }
}
