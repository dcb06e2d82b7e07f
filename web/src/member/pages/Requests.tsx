// Message requests: conversations and group adds from people who are not my friends.
import { useState } from "preact/hooks";
import { api } from "../../api";
import { Badge, Button, ErrorText, StatusText } from "../../ui/components";
import { formatTime } from "../../ui/format";
import { useMember, usePage } from "../context";
import { Link } from "../router";
import type { MemberState } from "../state";
import { type Conversation, type HistoryPage, REPORT_CATEGORIES } from "../types";
import { conversationName, previewText } from "./Chats";

export function Requests() {
  const heading = usePage("Message requests");
  const state = useMember();
  const requests = state.sortedRequests();
  const [status, setStatus] = useState<string | null>(null);
  return (
    <div>
      <h1 ref={heading} tabIndex={-1}>
        Message requests
      </h1>
      <p class="help">
        People who are not your friends (you do not follow each other) land here. You can read what they sent — they see
        no read or delivery receipts from you — and accept, delete (they are not told), block, or report. Until you
        accept, they can send at most 3 messages, no files and no links, and you cannot answer.
      </p>
      {status && <StatusText>{status}</StatusText>}
      <ErrorText error={state.requestsError} />
      {!state.requestsLoaded && !state.requestsError && <p class="muted">Loading requests…</p>}
      {state.requestsLoaded && requests.length === 0 && <p class="muted">No message requests.</p>}
      <ul class="request-list">
        {requests.map((c) => (
          <RequestItem key={c.id} conversation={c} state={state} onDone={setStatus} />
        ))}
      </ul>
    </div>
  );
}

function RequestItem({ conversation, state, onDone }: { conversation: Conversation; state: MemberState; onDone: (s: string) => void }) {
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [reporting, setReporting] = useState(false);
  const name = conversationName(conversation, state.username);
  const token = state.session.token;
  async function run(what: string, call: () => Promise<unknown>, after: () => void, done: string) {
    setBusy(what);
    setError(null);
    try {
      await call();
      after();
      onDone(done);
    } catch (err) {
      setError(err);
      setBusy(null);
    }
  }
  const from = conversation.kind === "group" ? `group “${name}”` : name;
  return (
    <li class="card request">
      <h2 class="request-name">
        {name} <Badge model={conversation.encryption} />
      </h2>
      <p class="conv-preview">
        {previewText(conversation, state.username)}
        {conversation.last_message && <span class="muted"> · {formatTime(conversation.last_message.sent_at)}</span>}
      </p>
      <div class="row">
        <Link class="button" href={`/c/${conversation.id}`}>
          Read
        </Link>
        <Button
          class="primary"
          busy={busy === "accept"}
          onClick={() =>
            void run(
              "accept",
              () => api("POST", `/requests/${conversation.id}/accept`, { token }),
              () => state.accepted(conversation.id),
              `Accepted: ${from} is in your conversations.`,
            )
          }
        >
          Accept
        </Button>
        <Button
          busy={busy === "delete"}
          onClick={() =>
            void run(
              "delete",
              () => api("DELETE", `/requests/${conversation.id}`, { token }),
              () => state.remove(conversation.id),
              `Deleted the request from ${from}. They are not told.`,
            )
          }
        >
          Delete
        </Button>
        <Button
          class="danger"
          busy={busy === "block"}
          onClick={() =>
            void run(
              "block",
              () => api("POST", `/requests/${conversation.id}/block`, { token }),
              () => state.remove(conversation.id),
              `Deleted the request and blocked its sender.`,
            )
          }
        >
          Block
        </Button>
        <Button aria-expanded={reporting ? "true" : "false"} onClick={() => setReporting(!reporting)}>
          Report
        </Button>
      </div>
      <ErrorText error={error} />
      {reporting && <RequestReport conversation={conversation} state={state} onClose={() => setReporting(false)} />}
    </li>
  );
}

function RequestReport({ conversation, state, onClose }: { conversation: Conversation; state: MemberState; onClose: () => void }) {
  const [category, setCategory] = useState("spam");
  const [comment, setComment] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [done, setDone] = useState<string | null>(null);
  const token = state.session.token;
  async function submit(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const page = await api<HistoryPage>("GET", `/conversations/${conversation.id}/messages`, { token, query: { limit: 10 } });
      const ids = page.items.filter((m) => m.sender !== state.username && !m.deleted).map((m) => m.id);
      if (ids.length === 0) throw new Error("There is no message to report in this request.");
      const report = await api<{ id: number }>("POST", "/reports", {
        token,
        body: { conversation_id: conversation.id, message_ids: ids.slice(-10), category, comment },
      });
      setDone(`Reported ${ids.length} message${ids.length === 1 ? "" : "s"} (case ${report.id}). You can now delete the request or block its sender.`);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }
  const idBase = `report-${conversation.id}`;
  return (
    <form class="stack report-form" onSubmit={submit} aria-label="Report this request">
      <label for={`${idBase}-category`}>Category</label>
      <select id={`${idBase}-category`} value={category} onChange={(e) => setCategory(e.currentTarget.value)}>
        {REPORT_CATEGORIES.map(([value, label]) => (
          <option key={value} value={value}>
            {label}
          </option>
        ))}
      </select>
      <label for={`${idBase}-comment`}>Comment for the moderator (optional)</label>
      <textarea id={`${idBase}-comment`} maxLength={1000} value={comment} onInput={(e) => setComment(e.currentTarget.value)} />
      <p class="help">Its latest messages (up to 10) go to a moderator of your region, who sees them and the messages around them.</p>
      <ErrorText error={error} />
      {done && <StatusText>{done}</StatusText>}
      <div class="row">
        <Button type="submit" busy={busy} disabled={!!done}>
          Send report
        </Button>
        <Button onClick={onClose}>Close</Button>
      </div>
    </form>
  );
}
