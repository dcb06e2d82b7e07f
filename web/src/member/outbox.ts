// Sends that have not been confirmed yet. Each message gets its own idempotency key
// (crypto.randomUUID) when it is written, and keeps it through every retry: the server stores
// the first and answers every retry with that same message, so a retry never duplicates.
// The outbox lives with the session, not the view: leaving a conversation does not drop a send.
import { api, ApiError } from "../api";
import { problemText } from "../ui/format";
import type { ConversationCodec } from "./codec";
import { safeFileName, uploadAttachment } from "./files";
import type { ServerMessage, Support } from "./types";

export type PendingState = "sending" | "uploading" | "retrying" | "failed" | "refused";

export interface PendingSend {
  key: string;
  cid: number;
  text: string;
  file: File | null;
  state: PendingState;
  error: string | null;
  /** The refusal's problem type (…/blocked for the safety policy). */
  problemType: string | null;
  progress: number | null;
  attempts: number;
  attachmentId: string | null;
  fields: Record<string, unknown> | null;
  createdAt: number;
}

export interface OutboxHost {
  token(): string;
  changed(): void;
  delivered(cid: number, message: ServerMessage): void;
  support(cid: number, support: Support): void;
}

const MAX_AUTOMATIC = 20;

/** problemType of a send the e2ee device refused to seal (keys changed or failed a check). */
export const KEY_REFUSAL = "keyhold:e2ee-key-refusal";

/** The errors `seal` throws when it will not encrypt to a contact's keys (e2ee/keylog.ts,
 * e2ee/machine.ts), told by name: this module must not load the e2ee chunk. */
function keyRefusal(error: unknown): boolean {
  return error instanceof Error && (error.name === "KeyTransparencyError" || error.name === "IdentityChangedError");
}

function keyRefusalWords(error: Error): string {
  const why = error.message.replace(/^not sent:\s*/i, "").replace(/\.\s*Compare safety numbers.*$/s, "");
  const what =
    error.name === "KeyTransparencyError"
      ? `Not sent: a device's keys failed the key-transparency check (${why}).`
      : `Not sent: ${why}.`;
  return `${what} Nothing was encrypted to the new keys. Open "Verify" at the top of this conversation, compare the safety number (or verify the device with emoji) with your contact, then send again.`;
}

function newKey(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Outbox {
  private items = new Map<number, PendingSend[]>();
  private codecs = new Map<string, ConversationCodec>();
  private timers = new Map<string, number>();
  private lastProgress = 0;

  constructor(private readonly host: OutboxHost) {}

  list(cid: number): PendingSend[] {
    return this.items.get(cid) ?? [];
  }

  send(cid: number, codec: ConversationCodec, text: string, file: File | null): PendingSend {
    const pending: PendingSend = {
      key: newKey(),
      cid,
      text,
      file,
      state: file ? "uploading" : "sending",
      error: null,
      problemType: null,
      progress: file ? 0 : null,
      attempts: 0,
      attachmentId: null,
      fields: null,
      createdAt: Date.now(),
    };
    this.items.set(cid, [...this.list(cid), pending]);
    this.codecs.set(pending.key, codec);
    this.host.changed();
    void this.deliver(pending);
    return pending;
  }

  /** Send again, with the same idempotency key. */
  retry(key: string): void {
    const pending = this.find(key);
    if (!pending) return;
    window.clearTimeout(this.timers.get(key));
    pending.attempts = 0;
    void this.deliver(pending);
  }

  discard(key: string): void {
    const pending = this.find(key);
    if (!pending) return;
    window.clearTimeout(this.timers.get(key));
    this.drop(pending);
  }

  stop(): void {
    for (const timer of this.timers.values()) window.clearTimeout(timer);
    this.timers.clear();
  }

  private find(key: string): PendingSend | undefined {
    for (const list of this.items.values()) {
      const found = list.find((p) => p.key === key);
      if (found) return found;
    }
    return undefined;
  }

  private drop(pending: PendingSend): void {
    this.items.set(
      pending.cid,
      this.list(pending.cid).filter((p) => p.key !== pending.key),
    );
    this.codecs.delete(pending.key);
    this.timers.delete(pending.key);
    this.host.changed();
  }

  private async deliver(pending: PendingSend): Promise<void> {
    const codec = this.codecs.get(pending.key);
    if (!codec) return;
    pending.attempts += 1;
    pending.error = null;
    pending.problemType = null;
    const token = this.host.token();
    try {
      if (!pending.fields) {
        if (pending.file && !pending.attachmentId) {
          pending.state = "uploading";
          this.host.changed();
          if (codec.sealFile) {
            const sealed = await codec.sealFile(pending.file, pending.text);
            const info = await uploadAttachment(pending.cid, token, sealed.upload, "", "application/octet-stream", (f) =>
              this.progress(pending, f),
            );
            pending.attachmentId = info.id;
            pending.fields = await sealed.seal(info.id);
          } else {
            const info = await uploadAttachment(
              pending.cid,
              token,
              pending.file,
              safeFileName(pending.file.name),
              pending.file.type || "application/octet-stream",
              (f) => this.progress(pending, f),
            );
            pending.attachmentId = info.id;
          }
        }
        if (!pending.fields) {
          const sealed = await codec.seal(pending.text);
          pending.fields = pending.attachmentId ? { ...sealed, attachment_id: pending.attachmentId } : sealed;
        }
      }
      pending.state = "sending";
      this.host.changed();
      const message = await api<ServerMessage>("POST", `/conversations/${pending.cid}/messages`, {
        token,
        body: { ...pending.fields, idempotency_key: pending.key },
      });
      this.drop(pending);
      this.host.delivered(pending.cid, message);
      if (message.support) this.host.support(pending.cid, message.support);
    } catch (error) {
      if (keyRefusal(error)) {
        // The e2ee device refused to encrypt: a contact's keys changed or failed the
        // key-transparency check. Not a network failure: retrying would refuse again.
        window.clearTimeout(this.timers.get(pending.key));
        pending.state = "refused";
        pending.problemType = KEY_REFUSAL;
        pending.error = keyRefusalWords(error as Error);
        this.host.changed();
        return;
      }
      const status = error instanceof ApiError ? error.status : 0;
      const retryable = status === 0 || status === 408 || status === 429 || status >= 500;
      pending.error = problemText(error);
      pending.problemType = error instanceof ApiError ? (error.problem.type ?? null) : null;
      if (retryable && pending.attempts < MAX_AUTOMATIC) {
        pending.state = "retrying";
        const after = error instanceof ApiError && typeof error.problem.retry_after === "number" ? error.problem.retry_after * 1000 : 0;
        const delay = Math.max(after, Math.min(500 * 2 ** (pending.attempts - 1), 5000));
        this.timers.set(
          pending.key,
          window.setTimeout(() => void this.deliver(pending), delay),
        );
      } else {
        pending.state = retryable ? "failed" : "refused";
      }
      this.host.changed();
    }
  }

  private progress(pending: PendingSend, fraction: number): void {
    pending.progress = fraction;
    const now = Date.now();
    if (fraction >= 1 || now - this.lastProgress > 100) {
      this.lastProgress = now;
      this.host.changed();
    }
  }
}
