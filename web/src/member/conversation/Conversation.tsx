// A conversation: the "who can read this" banner, live messages (stream + history scrolling
// up), receipts, sends through the outbox (idempotency keys), and what may be done in it.
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { api } from "../../api";
import type { StreamEvent } from "../../stream";
import { Button, ErrorText } from "../../ui/components";
import { formatDuration, isStatus, problemText } from "../../ui/format";
import { CodecUnavailable, codecFor, type ConversationCodec, type OpenedMessage, standardCodec } from "../codec";
import { useMember, usePage } from "../context";
import { conversationName } from "../pages/Chats";
import { Link, navigate } from "../router";
import type { MemberState } from "../state";
import type { Conversation, HistoryPage, ServerMessage } from "../types";
import { WhoCanRead } from "./Banner";
import { Composer } from "./Composer";
import { ManageConversation } from "./Manage";
import { MessageItem, PendingItem } from "./MessageItem";

const PAGE = 50;

/** The e2ee chunk's components (devices that can read, safety numbers), loaded with the codec. */
type E2eeUi = typeof import("../../e2ee/codec");

export function ConversationPage({ id }: { id: number }) {
  const state = useMember();
  const conversation = state.find(id);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    setError(null);
    state.openConversation = id;
    const asked = performance.now();
    api<Conversation>("GET", `/conversations/${id}`, { token: state.session.token })
      .then((c) => state.put(c, asked))
      .catch((err) => {
        if (isStatus(err, 404)) state.remove(id);
        setError(err);
      });
    return () => {
      if (state.openConversation === id) state.openConversation = null;
    };
  }, [id]);
  if (!conversation) {
    if (error) {
      return (
        <div class="conversation-missing">
          <h1>Conversation not available</h1>
          <ErrorText error={isStatus(error, 404) ? "This conversation does not exist, or you are no longer in it." : error} />
          <p>
            <Link href="/">Back to your chats</Link>
          </p>
        </div>
      );
    }
    return <p class="muted">Loading the conversation…</p>;
  }
  return <ConversationView key={id} conversation={conversation} state={state} />;
}

function maxId(store: Map<number, ServerMessage>): number {
  let max = 0;
  for (const id of store.keys()) if (id > max) max = id;
  return max;
}

function ConversationView({ conversation, state }: { conversation: Conversation; state: MemberState }) {
  const me = state.username;
  const cid = conversation.id;
  const token = state.session.token;
  const name = conversationName(conversation, me);
  const heading = usePage(name);
  const isRequest = state.isRequest(cid);

  // The codec: standard at once; e2ee loaded on first use.
  const [codec, setCodec] = useState<ConversationCodec | null>(conversation.encryption === "e2ee" ? null : standardCodec);
  const [codecError, setCodecError] = useState<string | null>(null);
  const [ui, setUi] = useState<E2eeUi | null>(null);
  const [verifyOpen, setVerifyOpen] = useState(false);
  // The contact whose devices the Verify panel offers to verify with SAS (emoji or numbers).
  const [sasOpen, setSasOpen] = useState<string | null>(null);
  useEffect(() => {
    if (conversation.encryption !== "e2ee") return;
    let live = true;
    let loaded: ConversationCodec | null = null;
    codecFor(conversation, state.codecSession())
      .then((c) => {
        loaded = c;
        if (live) setCodec(c);
        else c.close?.();
        // The same chunk: already fetched by codecFor.
        import("../../e2ee/codec")
          .then((module) => live && setUi(module))
          .catch(() => undefined);
      })
      .catch((err) => {
        if (live) setCodecError(err instanceof CodecUnavailable ? err.message : problemText(err));
      });
    return () => {
      live = false;
      loaded?.close?.();
    };
  }, [cid]);

  // Messages by id: the history pages and the stream merge here, so nothing shows twice.
  const store = useRef(new Map<number, ServerMessage>());
  const deleted = useRef(new Set<number>());
  const opened = useRef(new Map<number, { deleted: boolean; result: OpenedMessage }>());
  const [, setTick] = useState(0);
  const bump = () => setTick((n) => n + 1);
  const [older, setOlder] = useState<number | null | undefined>(undefined);
  const [historyError, setHistoryError] = useState<unknown>(null);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [announcement, setAnnouncement] = useState("");
  const [manageOpen, setManageOpen] = useState(false);
  const [draft, setDraft] = useState("");
  const list = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  const restore = useRef<{ height: number; top: number } | null>(null);
  const pinned = useRef<number | null>(null);

  // Until the newest page is in, live (or replayed) messages wait; after, only those at or after
  // its start are shown: older ones come with "load older", in order, not from a replay.
  const loaded = useRef(false);
  const early = useRef<ServerMessage[]>([]);
  const oldestShown = useRef<number | null>(null);
  const olderRef = useRef<number | null | undefined>(undefined);
  olderRef.current = older;

  function mergeLive(message: ServerMessage): boolean {
    if (!loaded.current) {
      early.current.push(message);
      return false;
    }
    if (olderRef.current !== null && oldestShown.current !== null && message.id < oldestShown.current && !store.current.has(message.id)) {
      return false;
    }
    merge([message]);
    return true;
  }

  function merge(messages: ServerMessage[]) {
    for (let message of messages) {
      if (deleted.current.has(message.id) && !message.deleted) {
        message = { ...message, deleted: true, text: null, attachment: null, event: null };
      }
      const known = store.current.get(message.id);
      // A tombstone never turns back into a message; a held one keeps its status until reviewed.
      if (known?.deleted && !message.deleted) continue;
      store.current.set(message.id, known?.support && !message.support ? { ...message, support: known.support } : message);
    }
    bump();
  }

  function markRead() {
    if (document.visibilityState !== "visible") return;
    const newest = maxId(store.current);
    if (newest) state.markReceipt(cid, "read", newest);
    state.markOpenRead(cid);
  }

  async function loadLatest() {
    try {
      const page = await api<HistoryPage>("GET", `/conversations/${cid}/messages`, { token, query: { limit: PAGE } });
      merge(page.items);
      oldestShown.current = page.items.length ? page.items[0].id : null;
      olderRef.current = page.next_before;
      loaded.current = true;
      const waiting = early.current;
      early.current = [];
      for (const message of waiting) mergeLive(message);
      setOlder(page.next_before);
      setHistoryError(null);
      stick.current = true;
      markRead();
    } catch (err) {
      setHistoryError(err);
    }
  }

  async function catchUp() {
    let after = maxId(store.current);
    if (!after) return loadLatest();
    try {
      for (let pages = 0; pages < 20; pages++) {
        const page = await api<HistoryPage>("GET", `/conversations/${cid}/messages`, { token, query: { after, limit: 200 } });
        merge(page.items);
        if (page.items.length < 200 || page.next_after === null) break;
        after = page.next_after;
      }
      markRead();
    } catch {
      // The stream's replay covers what this would have fetched.
    }
  }

  async function loadOlder() {
    if (older === null || older === undefined || loadingOlder) return;
    setLoadingOlder(true);
    const el = list.current;
    if (el) restore.current = { height: el.scrollHeight, top: el.scrollTop };
    try {
      const page = await api<HistoryPage>("GET", `/conversations/${cid}/messages`, { token, query: { before: older, limit: PAGE } });
      merge(page.items);
      if (page.items.length) oldestShown.current = Math.min(oldestShown.current ?? page.items[0].id, page.items[0].id);
      setOlder(page.next_before);
      setHistoryError(null);
    } catch (err) {
      restore.current = null;
      setHistoryError(err);
    } finally {
      setLoadingOlder(false);
    }
  }

  useEffect(() => {
    const unsubscribe = state.subscribeConversation(cid, (event: StreamEvent) => {
      switch (event.type) {
        case "message.new":
        case "local.sent": {
          const message = event.message as ServerMessage;
          const fresh = !store.current.has(message.id);
          const shown = mergeLive(message);
          if (shown && fresh && message.sender !== me && event.type === "message.new" && state.stream.caughtUp) {
            setAnnouncement(
              `New message from ${message.sender}${message.text ? `: ${message.text.slice(0, 140)}` : ""}`,
            );
          }
          markRead();
          break;
        }
        case "message.deleted": {
          const mid = Number(event.message_id);
          deleted.current.add(mid);
          const known = store.current.get(mid);
          if (known) store.current.set(mid, { ...known, deleted: true, text: null, attachment: null, event: null });
          bump();
          break;
        }
        case "message.review": {
          const mid = Number(event.message_id);
          const known = store.current.get(mid);
          if (known) {
            if (event.outcome === "refused") {
              store.current.set(mid, { ...known, deleted: true, text: null, attachment: null, status: "refused" });
            } else {
              const { status: _status, ...rest } = known;
              store.current.set(mid, rest);
            }
            bump();
          }
          break;
        }
        case "conversation.updated": {
          const change = String(event.change);
          const by = String(event.by ?? "someone");
          const words: Record<string, string> = {
            timer: event.seconds ? `${by} set disappearing messages to ${formatDuration(Number(event.seconds))}` : `${by} turned disappearing messages off`,
            members_added: `${by} added ${Array.isArray(event.members) ? event.members.join(", ") : "members"}`,
            member_left: `${String(event.member)} left`,
            member_removed: `${by} removed ${String(event.member)}`,
            renamed: `${by} renamed the group to ${String(event.title ?? "")}`,
          };
          if (words[change]) setAnnouncement(words[change]);
          break;
        }
        case "ready":
          if (state.stream.readyCount > 1) void catchUp();
          break;
      }
    });
    void loadLatest();
    const onVisible = () => markRead();
    document.addEventListener("visibilitychange", onVisible);
    window.addEventListener("focus", onVisible);
    return () => {
      unsubscribe();
      document.removeEventListener("visibilitychange", onVisible);
      window.removeEventListener("focus", onVisible);
    };
  }, [cid]);

  // Keep the view at the bottom for new messages, and in place when older ones come in above.
  useLayoutEffect(() => {
    const el = list.current;
    if (!el) return;
    if (restore.current) {
      el.scrollTop = el.scrollHeight - restore.current.height + restore.current.top;
      restore.current = null;
      pinned.current = null;
    } else if (stick.current) {
      // Scroll events come a frame late: if the member moved away from where we left the
      // view (and is not near the bottom), they are reading; do not pull them down.
      const moved = pinned.current !== null && Math.abs(el.scrollTop - pinned.current) > 2;
      if (moved && el.scrollHeight - el.scrollTop - el.clientHeight >= 80) {
        stick.current = false;
        pinned.current = null;
        return;
      }
      el.scrollTop = el.scrollHeight;
      pinned.current = el.scrollTop;
    }
  });

  function openOf(message: ServerMessage): OpenedMessage | null {
    if (!codec) return null;
    const cached = opened.current.get(message.id);
    if (cached && cached.deleted === message.deleted) return cached.result;
    const result = codec.open(message);
    if (result instanceof Promise) {
      result
        .then((value) => {
          opened.current.set(message.id, { deleted: message.deleted, result: value });
          bump();
        })
        .catch((err) => {
          opened.current.set(message.id, { deleted: message.deleted, result: { text: null, state: "undecryptable", note: problemText(err) } });
          bump();
        });
      return null;
    }
    opened.current.set(message.id, { deleted: message.deleted, result });
    return result;
  }

  const messages = [...store.current.values()].sort((a, b) => a.id - b.id);
  const pending = state.outbox.list(cid);
  const support = state.support.get(cid);

  let disabledReason: string | null = null;
  if (isRequest) disabledReason = "This is a message request: accept it to answer.";
  else if (!codec) disabledReason = codecError ? `You cannot send here from this browser: ${codecError}` : "Loading end-to-end encryption…";
  const allowFiles = conversation.encryption === "standard" || !!codec?.sealFile;

  return (
    <div class="conversation">
      <header class="conv-header">
        <Link href="/" class="back">
          <span aria-hidden="true">←</span> Chats
        </Link>
        <div class="conv-title">
          <h1 ref={heading} tabIndex={-1}>
            {name}
          </h1>
          <p class="conv-sub">
            {conversation.kind === "group" ? `Group of ${conversation.members.length}` : "1:1"}
            {conversation.disappear_after_seconds
              ? ` · messages disappear after ${formatDuration(conversation.disappear_after_seconds)}`
              : ""}
          </p>
        </div>
        <div class="conv-actions">
        {conversation.encryption === "e2ee" && ui && (
          <Button
            class="small"
            aria-expanded={verifyOpen ? "true" : "false"}
            aria-controls="verify-panel"
            onClick={() => setVerifyOpen(!verifyOpen)}
          >
            Verify
          </Button>
        )}
        <Button
          class="small"
          aria-expanded={manageOpen ? "true" : "false"}
          aria-controls="manage-panel"
          onClick={() => setManageOpen(!manageOpen)}
        >
          {conversation.kind === "group" ? "Members & settings" : "Settings"}
        </Button>
        </div>
      </header>
      <WhoCanRead
        conversation={conversation}
        codec={codec}
        codecError={codecError}
        devices={ui ? <ui.DeviceList conversationId={cid} headingLevel={3} /> : undefined}
      />
      {verifyOpen && ui && (
        <section id="verify-panel" class="card manage" aria-label="Safety numbers">
          <h2>Safety numbers</h2>
          <p class="help">
            Compare these numbers with each contact, in person or on a call: if they match, no one (the server included)
            slipped a key of their own between you.
          </p>
          {conversation.members
            .filter((m) => m !== me)
            .map((member) => (
              <div key={member}>
                <ui.SafetyNumber username={member} headingLevel={3} />
                <p class="help">
                  Or verify a device of {member}'s interactively: both screens show the same emoji (or numbers) if the
                  keys are real.
                </p>
                {sasOpen === member ? (
                  <ui.VerifyDevice username={member} headingLevel={3} />
                ) : (
                  <Button class="small" data-testid="verify-sas-open" onClick={() => setSasOpen(member)}>
                    Verify {member} with emoji or numbers
                  </Button>
                )}
              </div>
            ))}
        </section>
      )}
      {manageOpen && <ManageConversation id="manage-panel" conversation={conversation} state={state} />}
      {isRequest && <RequestBar conversation={conversation} state={state} />}
      <div
        class="messages"
        ref={list}
        tabIndex={0}
        role="region"
        aria-label={`Messages with ${name}`}
        onScroll={() => {
          const el = list.current;
          if (!el) return;
          stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
          pinned.current = stick.current ? el.scrollTop : null;
          if (el.scrollTop < 40) void loadOlder();
        }}
      >
        {older !== null && older !== undefined && (
          <p class="older">
            <Button class="small" busy={loadingOlder} onClick={() => void loadOlder()}>
              {loadingOlder ? "Loading older messages…" : "Load older messages"}
            </Button>
          </p>
        )}
        {older === null && messages.length > 0 && <p class="muted start">This is the start of the conversation.</p>}
        {older === undefined && !historyError && <p class="muted">Loading messages…</p>}
        <ErrorText error={historyError} />
        {older !== undefined && messages.length === 0 && pending.length === 0 && (
          <p class="muted start">No messages yet. Say hello.</p>
        )}
        <ol class="msg-list">
          {messages.map((message) => (
            <MessageItem
              key={message.id}
              message={message}
              opened={openOf(message)}
              conversation={conversation}
              state={state}
              codec={codec}
              onChanged={(m) => {
                if (m.deleted) deleted.current.add(m.id);
                store.current.set(m.id, m);
                bump();
              }}
            />
          ))}
          {pending.map((p) => (
            <PendingItem key={p.key} pending={p} state={state} onEdit={setDraft} />
          ))}
        </ol>
      </div>
      <p class="sr-only" aria-live="polite" aria-atomic="true">
        {announcement}
      </p>
      {support && (
        <aside class="notice support" aria-label="Where to find help">
          <p>{support.text}</p>
          <p>
            <a href={support.url} target="_blank" rel="noopener noreferrer">
              {support.url}
            </a>
          </p>
          <Button
            class="small"
            onClick={() => {
              state.support.delete(cid);
              state.changed();
            }}
          >
            Dismiss
          </Button>
        </aside>
      )}
      <Composer
        disabled={!!disabledReason}
        disabledReason={disabledReason}
        allowFiles={allowFiles}
        draft={draft}
        setDraft={setDraft}
        onSend={(text, file) => {
          if (!codec) return;
          stick.current = true;
          state.outbox.send(cid, codec, text, file);
        }}
      />
    </div>
  );
}

function RequestBar({ conversation, state }: { conversation: Conversation; state: MemberState }) {
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const token = state.session.token;
  async function run(what: string, call: () => Promise<unknown>, after: () => void) {
    setBusy(what);
    setError(null);
    try {
      await call();
      after();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(null);
    }
  }
  return (
    <section class="request-bar" aria-label="Message request">
      <p>
        This is a message request from someone who is not your friend. They do not see whether you read it. Report a
        message with its Report button.
      </p>
      <div class="row">
        <Button
          class="primary"
          busy={busy === "accept"}
          onClick={() => void run("accept", () => api("POST", `/requests/${conversation.id}/accept`, { token }), () => state.accepted(conversation.id))}
        >
          Accept
        </Button>
        <Button
          busy={busy === "delete"}
          onClick={() =>
            void run("delete", () => api("DELETE", `/requests/${conversation.id}`, { token }), () => {
              state.remove(conversation.id);
              navigate("/requests");
            })
          }
        >
          Delete
        </Button>
        <Button
          class="danger"
          busy={busy === "block"}
          onClick={() =>
            void run("block", () => api("POST", `/requests/${conversation.id}/block`, { token }), () => {
              state.remove(conversation.id);
              navigate("/requests");
            })
          }
        >
          Block sender
        </Button>
      </div>
      <ErrorText error={error} />
    </section>
  );
}
