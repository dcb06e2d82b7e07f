// What a signed-in member's tab knows: their account, the conversation list and requests, the
// receipts seen, moderation notices, and the one live stream every page shares. In memory only:
// nothing here is written to storage, and a reload starts from the server again.

import { api } from "../api";
import { feedStreamEvent } from "../e2ee/runtime";
import { memberSession, type Session } from "../session";
import { Stream, StreamReplyError, type StreamEvent, type StreamStatus } from "../stream";
import type { CodecSession } from "./codec";
import { Outbox } from "./outbox";
import { type Account, type Conversation, type Messaging, type Page, REPORT_CATEGORIES, type ServerMessage, type Support } from "./types";

export interface Toast {
  id: number;
  text: string;
  href?: string;
  linkText?: string;
  tone: "info" | "warning";
}

export interface ReceiptMark {
  delivered: number;
  read: number;
}

type ConversationListener = (event: StreamEvent) => void;

const PAGE = 30;
/** Why the last session ended, shown on the sign-in page (memory only). */
export let endedReason: string | null = null;
export function clearEndedReason(): void {
  endedReason = null;
}

export class MemberState {
  readonly session: Session;
  readonly stream: Stream;
  account: Account | null = null;
  messaging: Messaging | null = null;
  accountError: unknown = null;

  conversations = new Map<number, Conversation>();
  listNextBefore: number | null = null;
  listLoaded = false;
  listError: unknown = null;
  listLoadingMore = false;

  requests = new Map<number, Conversation>();
  requestsLoaded = false;
  requestsError: unknown = null;

  /** conversation id → member → the highest ids they got and read. */
  receipts = new Map<number, Map<string, ReceiptMark>>();
  toasts: Toast[] = [];
  /** Moderation notices, report outcomes and reviews that arrived on the stream this session. */
  moderationEvents: StreamEvent[] = [];
  /** The conversation on screen (its new messages do not count as unread). */
  openConversation: number | null = null;
  streamStatus: StreamStatus = "connecting";
  /** The stream was ended by the server for the account (4403): why. */
  refusedReason: string | null = null;

  /** Sends not confirmed yet (see outbox.ts). */
  readonly outbox: Outbox;
  /** The support notice of my last send about self-harm, per conversation. */
  support = new Map<number, Support>();

  version = 0;
  private listeners = new Set<() => void>();
  private conversationListeners = new Map<number, Set<ConversationListener>>();
  private gone = new Set<number>();
  private fetching = new Set<number>();
  private removedAt = new Map<number, number>();
  private receiptSent = new Map<string, number>();
  private receiptPending = new Map<string, { cid: number; kind: "delivered" | "read"; id: number }>();
  private receiptTimer = 0;
  private requestsTimer = 0;
  private devicesTimer = 0;
  private toastId = 1;
  private stopped = false;

  constructor(session: Session) {
    this.session = session;
    this.stream = new Stream({
      token: session.token,
      since: 0,
      onEnd: (end) => {
        if (end.code === 4401) {
          endedReason = `You were signed out: ${end.reason}. Log in again.`;
          this.stop();
          memberSession.set(null);
        } else {
          this.refusedReason = end.reason;
          this.toast(`This account may not use Keyhold now: ${end.reason}`, "warning", "/standing", "See your standing");
          this.changed();
        }
      },
    });
    this.outbox = new Outbox({
      token: () => this.session.token,
      changed: () => this.changed(),
      delivered: (cid, message) => {
        this.emitTo(cid, { type: "local.sent", conversation_id: cid, message });
        this.noteMessage(cid, message);
      },
      support: (cid, support) => {
        this.support.set(cid, support);
        this.changed();
      },
    });
    this.stream.subscribe((event) => this.handle(event));
    // The browser's e2ee device takes its events (to-device room keys, device lists) from sign-in
    // on, before any e2ee conversation is opened; the module is light (no crypto core).
    this.stream.subscribe((event) => feedStreamEvent(event));
    this.stream.onStatus((status) => {
      this.streamStatus = status;
      if (status === "online") this.flushReceipts();
      this.changed();
    });
  }

  get username(): string {
    return this.session.username;
  }

  /** What an E2EE codec may use. */
  codecSession(): CodecSession {
    return { ...this.session, events: { subscribe: (listener) => this.stream.subscribe(listener) } };
  }

  async start(): Promise<void> {
    const loads = [this.loadAccount(), this.loadConversations(), this.loadRequests()];
    await Promise.allSettled(loads);
    if (!this.stopped) this.stream.start();
  }

  stop(): void {
    this.stopped = true;
    this.outbox.stop();
    window.clearTimeout(this.receiptTimer);
    window.clearTimeout(this.requestsTimer);
    this.stream.stop();
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Events of one conversation (message.new, message.deleted, receipt, conversation.updated,
   * message.review), and `ready` after every (re)connection. */
  subscribeConversation(cid: number, listener: ConversationListener): () => void {
    let set = this.conversationListeners.get(cid);
    if (!set) this.conversationListeners.set(cid, (set = new Set()));
    set.add(listener);
    return () => set!.delete(listener);
  }

  changed(): void {
    this.version += 1;
    for (const listener of [...this.listeners]) listener();
  }

  // -- loading ---------------------------------------------------------------------------

  async loadAccount(): Promise<void> {
    try {
      const [account, messaging] = await Promise.all([
        api<Account>("GET", "/account", { token: this.session.token }),
        api<Messaging>("GET", "/account/messaging", { token: this.session.token }),
      ]);
      this.account = account;
      this.messaging = messaging;
      this.accountError = null;
    } catch (error) {
      this.accountError = error;
    }
    this.changed();
  }

  async loadConversations(more = false): Promise<void> {
    if (more) this.listLoadingMore = true;
    this.changed();
    const started = performance.now();
    try {
      const page = await api<Page<Conversation>>("GET", "/conversations", {
        token: this.session.token,
        query: { limit: PAGE, before: more ? this.listNextBefore : undefined },
      });
      for (const conversation of page.items) {
        if ((this.removedAt.get(conversation.id) ?? -1) > started) continue;
        this.conversations.set(conversation.id, conversation);
      }
      this.listNextBefore = page.next_before;
      this.listLoaded = true;
      this.listError = null;
    } catch (error) {
      this.listError = error;
    } finally {
      this.listLoadingMore = false;
      this.changed();
    }
  }

  async loadRequests(): Promise<void> {
    try {
      const items: Conversation[] = [];
      let before: number | null = null;
      // Requests are few; read them all (at most a few pages).
      for (let pages = 0; pages < 10; pages++) {
        const page: Page<Conversation> = await api<Page<Conversation>>("GET", "/requests", {
          token: this.session.token,
          query: { limit: 100, before: before ?? undefined },
        });
        items.push(...page.items);
        before = page.next_before;
        if (before === null) break;
      }
      this.requests = new Map(items.map((c) => [c.id, c]));
      for (const c of items) this.conversations.delete(c.id);
      this.requestsLoaded = true;
      this.requestsError = null;
    } catch (error) {
      this.requestsError = error;
    }
    this.changed();
  }

  /** My conversations, most recent activity first. */
  sortedConversations(): Conversation[] {
    return [...this.conversations.values()].sort((a, b) => activity(b) - activity(a));
  }

  sortedRequests(): Conversation[] {
    return [...this.requests.values()].sort((a, b) => activity(b) - activity(a));
  }

  find(cid: number): Conversation | undefined {
    return this.conversations.get(cid) ?? this.requests.get(cid);
  }

  isRequest(cid: number): boolean {
    return this.requests.has(cid);
  }

  /** Fetch one conversation again (after a change), and put it where it belongs. */
  async refreshConversation(cid: number): Promise<Conversation | null> {
    if (this.fetching.has(cid)) return this.find(cid) ?? null;
    this.fetching.add(cid);
    const started = performance.now();
    try {
      const conversation = await api<Conversation>("GET", `/conversations/${cid}`, { token: this.session.token });
      if (!this.put(conversation, started)) return null;
      return conversation;
    } catch (error) {
      if (error instanceof Error && "status" in error && (error as { status: number }).status === 404) {
        this.gone.add(cid);
        this.conversations.delete(cid);
        this.requests.delete(cid);
        this.changed();
      }
      return null;
    } finally {
      this.fetching.delete(cid);
    }
  }

  /** A conversation the server just gave us (start, add, rename, timer…). `askedAt`
   * (performance.now() when it was asked for): an answer older than a leave or a removal is
   * dropped, so that a slow refresh does not bring back a conversation just left. */
  put(conversation: Conversation, askedAt?: number): boolean {
    if (askedAt !== undefined && (this.removedAt.get(conversation.id) ?? -1) > askedAt) return false;
    this.gone.delete(conversation.id);
    const known = this.find(conversation.id);
    const merged = { ...conversation };
    // The one on screen is read (its read receipt may still be on its way).
    if (conversation.id === this.openConversation) merged.unread = 0;
    if (known && known.last_message && (!merged.last_message || known.last_message.id > merged.last_message.id)) {
      merged.last_message = known.last_message;
    }
    if (this.requests.has(conversation.id)) this.requests.set(conversation.id, merged);
    else this.conversations.set(conversation.id, merged);
    this.changed();
    return true;
  }

  remove(cid: number): void {
    this.removedAt.set(cid, performance.now());
    this.conversations.delete(cid);
    this.requests.delete(cid);
    this.gone.add(cid);
    this.changed();
  }

  /** A request I accepted: it is one of my conversations now. */
  accepted(cid: number): void {
    const conversation = this.requests.get(cid);
    this.requests.delete(cid);
    if (conversation) this.conversations.set(cid, conversation);
    this.changed();
    void this.refreshConversation(cid);
  }

  markOpenRead(cid: number): void {
    const conversation = this.find(cid);
    if (conversation && conversation.unread) {
      conversation.unread = 0;
      this.changed();
    }
  }

  // -- receipts --------------------------------------------------------------------------

  /** Tell the others I got (or read) everything up to `messageId`: a `receipt` frame,
   * coalesced per conversation, sent when the stream is up. */
  markReceipt(cid: number, kind: "delivered" | "read", messageId: number): void {
    const key = `${cid}:${kind}`;
    if ((this.receiptSent.get(key) ?? 0) >= messageId) return;
    const pending = this.receiptPending.get(key);
    if (pending && pending.id >= messageId) return;
    this.receiptPending.set(key, { cid, kind, id: messageId });
    if (kind === "read") this.markReceipt(cid, "delivered", messageId);
    window.clearTimeout(this.receiptTimer);
    this.receiptTimer = window.setTimeout(() => this.flushReceipts(), 150);
  }

  private flushReceipts(): void {
    if (this.stream.status !== "online") return;
    const pending = [...this.receiptPending.entries()];
    this.receiptPending.clear();
    for (const [key, item] of pending) {
      if ((this.receiptSent.get(key) ?? 0) >= item.id) continue;
      this.stream
        .request({ type: "receipt", conversation_id: item.cid, receipt: item.kind, message_id: item.id })
        .then(() => {
          this.receiptSent.set(key, Math.max(this.receiptSent.get(key) ?? 0, item.id));
        })
        .catch((error) => {
          if (error instanceof StreamReplyError) return; // refused (left, a request…): nothing to retry
          const again = this.receiptPending.get(key);
          if (!again || again.id < item.id) this.receiptPending.set(key, item); // resent on `ready`
        });
    }
  }

  receiptsOf(cid: number): Map<string, ReceiptMark> {
    return this.receipts.get(cid) ?? new Map();
  }

  // -- toasts ----------------------------------------------------------------------------

  toast(text: string, tone: Toast["tone"] = "info", href?: string, linkText?: string): void {
    const id = this.toastId++;
    this.toasts = [...this.toasts.slice(-4), { id, text, tone, href, linkText }];
    this.changed();
    // Information goes away by itself; warnings stay until dismissed.
    if (tone === "info") window.setTimeout(() => this.dismissToast(id), 15_000);
  }

  dismissToast(id: number): void {
    this.toasts = this.toasts.filter((t) => t.id !== id);
    this.changed();
  }

  // -- the stream ------------------------------------------------------------------------

  private emitTo(cid: number, event: StreamEvent): void {
    for (const listener of [...(this.conversationListeners.get(cid) ?? [])]) listener(event);
  }

  /** True while the stream replays what is stored for me before its first `ready` (it opens
   * with since=0 so that no e2ee to-device event is lost): those events happened before this
   * sign-in, so they update state (receipts, Standing's list) but raise no toast. Events
   * replayed after a reconnection (since=<last seq>) were missed while offline: they do. */
  private get replaying(): boolean {
    return !this.stream.caughtUp;
  }

  private handle(event: StreamEvent): void {
    const cid = typeof event.conversation_id === "number" ? event.conversation_id : null;
    switch (event.type) {
      case "ready":
        for (const set of this.conversationListeners.values()) for (const listener of [...set]) listener(event);
        this.changed();
        return;
      case "message.new": {
        const message = event.message as ServerMessage | null;
        if (!message || cid === null) return;
        this.emitTo(cid, event);
        this.noteMessage(cid, message);
        return;
      }
      case "message.deleted": {
        if (cid === null) return;
        this.emitTo(cid, event);
        const conversation = this.find(cid);
        if (conversation?.last_message && conversation.last_message.id === event.message_id) {
          conversation.last_message = { ...conversation.last_message, preview: null, deleted: true };
          this.changed();
        }
        return;
      }
      case "receipt": {
        if (cid === null) return;
        const user = String(event.user);
        const id = Number(event.message_id);
        let marks = this.receipts.get(cid);
        if (!marks) this.receipts.set(cid, (marks = new Map()));
        const mark = marks.get(user) ?? { delivered: 0, read: 0 };
        if (event.receipt === "read") {
          mark.read = Math.max(mark.read, id);
          mark.delivered = Math.max(mark.delivered, id);
        } else {
          mark.delivered = Math.max(mark.delivered, id);
        }
        marks.set(user, mark);
        this.emitTo(cid, event);
        this.changed();
        return;
      }
      case "conversation.updated": {
        if (cid === null) return;
        this.emitTo(cid, event);
        if (event.change === "member_left" && event.member === this.username) {
          this.remove(cid);
          return;
        }
        if (event.change === "member_removed" && event.member === this.username) {
          this.remove(cid);
          return;
        }
        this.scheduleRequestsRefresh();
        if (!this.gone.has(cid) || event.change === "created" || event.change === "members_added") {
          window.setTimeout(() => void this.refreshConversation(cid), 350);
        }
        return;
      }
      case "message.review": {
        if (cid !== null) this.emitTo(cid, event);
        this.moderationEvents = [...this.moderationEvents, event];
        const outcome = event.outcome === "released" ? "released (delivered)" : "refused";
        if (this.replaying) {
          this.changed();
          return;
        }
        this.toast(`A moderator reviewed your held message: ${outcome}.${event.note ? ` Note: ${event.note}` : ""}`, event.outcome === "released" ? "info" : "warning", cid !== null ? `/c/${cid}` : undefined, "Open the conversation");
        return;
      }
      case "moderation.action":
      case "moderation.strike":
      case "report.outcome": {
        this.moderationEvents = [...this.moderationEvents, event];
        if (this.replaying) {
          this.changed();
          return;
        }
        this.toast(noticeWords(event), event.type === "report.outcome" ? "info" : "warning", "/standing", "See your standing");
        return;
      }
      case "e2ee.device_lists": {
        // A member published or removed device keys: the open e2ee conversation's readable_by
        // (it counts the devices) changed.
        const open = this.openConversation !== null ? this.find(this.openConversation) : undefined;
        if (open && open.encryption === "e2ee") {
          const cid = open.id;
          window.clearTimeout(this.devicesTimer);
          this.devicesTimer = window.setTimeout(() => void this.refreshConversation(cid), 300);
        }
        return;
      }
      case "access.visible":
        if (this.replaying) return;
        this.toast("A staff access to your data is now visible in your access history.", "info", "/access", "Open access history");
        return;
      case "guardian.link":
      case "guardian.unlinked":
      case "guardian.setting":
        if (this.replaying) return;
        this.toast(guardianWords(event), "info", "/settings", "Open settings");
        return;
      default:
        return;
    }
  }

  private noteMessage(cid: number, message: ServerMessage): void {
    const conversation = this.find(cid);
    const mine = message.sender === this.username;
    if (!mine) this.markReceipt(cid, "delivered", message.id);
    if (!conversation) {
      if (this.gone.has(cid)) return;
      // A conversation not on the pages loaded: fetch it if this message is newer than them.
      const lastIds = [...this.conversations.values()].map((c) => c.last_message?.id ?? 0);
      const oldestShown = this.listNextBefore === null ? 0 : Math.min(...lastIds, Number.MAX_SAFE_INTEGER);
      if (message.id > oldestShown) {
        this.scheduleRequestsRefresh();
        void this.refreshConversation(cid);
      }
      return;
    }
    if (conversation.last_message && conversation.last_message.id >= message.id) return;
    conversation.last_message = {
      id: message.id,
      sender: message.sender,
      sent_at: message.sent_at,
      preview: message.text ? message.text.slice(0, 80) : null,
      deleted: message.deleted,
    };
    if (!mine && this.openConversation !== cid && message.status !== "pending_review") {
      conversation.unread = (conversation.unread ?? 0) + 1;
    }
    this.changed();
  }

  private scheduleRequestsRefresh(): void {
    window.clearTimeout(this.requestsTimer);
    this.requestsTimer = window.setTimeout(() => void this.loadRequests(), 300);
  }
}

function activity(conversation: Conversation): number {
  const at = conversation.last_message?.sent_at ?? conversation.created_at;
  return new Date(at).getTime() || 0;
}

export function noticeWords(event: StreamEvent | Record<string, unknown>): string {
  const action = String(event.action ?? "");
  const actionWords: Record<string, string> = {
    no_violation: "no violation was found",
    warn: "a warning",
    remove_message: "the message was removed",
    suspend: "a suspension",
    ban: "a ban",
    escalate_legal: "handed to the legal team",
  };
  switch (event.type) {
    case "report.outcome":
      return `Your report (case ${event.case_id}) was decided: ${actionWords[action] ?? action}.`;
    case "moderation.action": {
      const until = event.until ? ` until ${new Date(String(event.until)).toLocaleString()}` : "";
      const auto = event.automatic ? " (automatic, after repeated strikes)" : "";
      return `A moderation decision about you${auto}: ${actionWords[action] ?? action}${until}.${event.can_appeal ? " You can appeal it once." : ""}`;
    }
    case "moderation.strike": {
      const category = String(event.category ?? "");
      const words = REPORT_CATEGORIES.find(([value]) => value === category)?.[1] ?? category.replace(/_/g, " ");
      return `You received a strike (${words.toLowerCase()}); active strikes: ${event.active_strikes ?? "?"}.`;
    }
    default:
      return String(event.type);
  }
}

function guardianWords(event: StreamEvent): string {
  switch (event.type) {
    case "guardian.link":
      return `${event.by} asked for, or accepted, a guardian link with you.`;
    case "guardian.unlinked":
      return `${event.by} ended a guardian link with you.`;
    default:
      return "Your guardian changed who may message you.";
  }
}
