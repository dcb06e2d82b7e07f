// One message: text (through the codec), attachment (image preview, download), receipts for
// my own, held and refused states, delete for everyone and report.
import { useEffect, useState } from "preact/hooks";
import { api } from "../../api";
import { Button, ErrorText, StatusText } from "../../ui/components";
import { formatDateTime, formatSize, formatTime, problemText } from "../../ui/format";
import type { ConversationCodec, OpenedMessage } from "../codec";
import { downloadAttachment, PREVIEW_TYPES, safeFileName, saveBlob } from "../files";
import { KEY_REFUSAL, type PendingSend } from "../outbox";
import type { MemberState, ReceiptMark } from "../state";
import { type Conversation, REPORT_CATEGORIES, type ServerMessage } from "../types";

export function receiptText(message: ServerMessage, conversation: Conversation, me: string, marks: Map<string, ReceiptMark>) {
  const others = conversation.members.filter((m) => m !== me);
  if (others.length === 0) return { symbol: "✓", words: "Sent", cls: "sent" };
  const read = others.filter((u) => (marks.get(u)?.read ?? 0) >= message.id).length;
  const delivered = others.filter((u) => (marks.get(u)?.delivered ?? 0) >= message.id).length;
  if (read === others.length) return { symbol: "✓✓", words: "Read", cls: "read" };
  if (conversation.kind === "group" && read > 0) return { symbol: "✓✓", words: `Read by ${read} of ${others.length}`, cls: "delivered" };
  if (delivered === others.length) return { symbol: "✓✓", words: "Delivered", cls: "delivered" };
  if (conversation.kind === "group" && delivered > 0) return { symbol: "✓", words: `Delivered to ${delivered} of ${others.length}`, cls: "sent" };
  return { symbol: "✓", words: "Sent", cls: "sent" };
}

interface ItemProps {
  message: ServerMessage;
  opened: OpenedMessage | null;
  conversation: Conversation;
  state: MemberState;
  codec: ConversationCodec | null;
  onChanged: (message: ServerMessage) => void;
}

export function MessageItem({ message, opened, conversation, state, codec, onChanged }: ItemProps) {
  const me = state.username;
  const mine = message.sender === me;
  const [confirming, setConfirming] = useState(false);
  const [reporting, setReporting] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const bodyId = `msg-${message.id}-body`;
  const receipt = mine && !message.deleted && !message.status ? receiptText(message, conversation, me, state.receiptsOf(conversation.id)) : null;

  async function remove() {
    setBusy(true);
    setError(null);
    try {
      const tombstone = await api<ServerMessage>("DELETE", `/messages/${message.id}`, { token: state.session.token });
      onChanged(tombstone);
      setConfirming(false);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  let body;
  if (message.status === "refused") {
    body = <p class="msg-text tombstone">A moderator refused this message; it was not delivered. Only you see this.</p>;
  } else if (message.unreadable) {
    body = <p class="msg-text tombstone">This message cannot be opened: it failed its integrity check.</p>;
  } else if (message.deleted) {
    body = <p class="msg-text tombstone">Message deleted</p>;
  } else if (!opened) {
    body = <p class="msg-text muted">{codec ? "Opening…" : "Encrypted message (cannot be opened in this browser yet)"}</p>;
  } else {
    body = (
      <>
        {opened.text !== null && opened.text !== "" && <p class="msg-text">{opened.text}</p>}
        {opened.state !== "ok" && (
          <p class={`msg-warning ${opened.state}`}>
            {opened.state === "unverifiable" ? "Unverifiable sender" : "Could not be decrypted"}
            {opened.note ? `: ${opened.note}` : ""}
          </p>
        )}
      </>
    );
  }

  return (
    <li class={`msg ${mine ? "mine" : "theirs"}${message.status === "pending_review" ? " held" : ""}`} data-message-id={message.id}>
      <div class="msg-meta">
        <span class="msg-sender">{mine ? "You" : message.sender}</span>{" "}
        <time dateTime={message.sent_at} title={formatDateTime(message.sent_at)}>
          {formatTime(message.sent_at)}
        </time>
      </div>
      <div id={bodyId}>{body}</div>
      {message.attachment && !message.deleted && (
        <AttachmentView message={message} opened={opened} state={state} codec={codec} />
      )}
      {message.status === "pending_review" && (
        <p class="msg-held">Pending review: only you can see this message until a moderator reviews it.</p>
      )}
      <div class="msg-foot">
        {message.expires_at && !message.deleted && <span class="msg-expiry">Disappears {formatTime(message.expires_at)}</span>}
        {receipt && (
          <span class={`receipt receipt-${receipt.cls}`} title={receipt.words}>
            <span aria-hidden="true">{receipt.symbol}</span> <span class="receipt-words">{receipt.words}</span>
          </span>
        )}
        {!message.deleted && (
          <span class="msg-actions">
            {mine && !confirming && (
              <button type="button" class="link-button" aria-describedby={bodyId} onClick={() => setConfirming(true)}>
                Delete
              </button>
            )}
            {!mine && (
              <button
                type="button"
                class="link-button"
                aria-describedby={bodyId}
                aria-expanded={reporting ? "true" : "false"}
                onClick={() => setReporting(!reporting)}
              >
                Report
              </button>
            )}
          </span>
        )}
      </div>
      {confirming && (
        <div class="confirm" role="group" aria-label="Delete for everyone">
          <span>Delete this message for everyone? A tombstone stays.</span>
          <Button class="danger" busy={busy} onClick={() => void remove()}>
            Delete for everyone
          </Button>
          <Button onClick={() => setConfirming(false)}>Cancel</Button>
        </div>
      )}
      <ErrorText error={error} />
      {reporting && <ReportForm message={message} state={state} codec={codec} onClose={() => setReporting(false)} />}
    </li>
  );
}

function AttachmentView({ message, opened, state, codec }: { message: ServerMessage; opened: OpenedMessage | null; state: MemberState; codec: ConversationCodec | null }) {
  const info = message.attachment!;
  const filename = safeFileName(opened?.file?.filename ?? info.filename);
  const contentType = opened?.file?.contentType ?? info.content_type;
  const previewable = PREVIEW_TYPES.has(contentType) && info.size <= 10 * 1024 * 1024;
  const [url, setUrl] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const token = state.session.token;

  async function fetchFile(signal?: AbortSignal): Promise<{ blob: Blob; filename: string }> {
    const data = await downloadAttachment(info.id, token, signal);
    if (codec?.openFile) {
      const file = await codec.openFile(message, data);
      return { blob: file.blob, filename: safeFileName(file.filename) };
    }
    return { blob: data, filename };
  }

  useEffect(() => {
    if (!previewable) return;
    const controller = new AbortController();
    let objectUrl: string | null = null;
    fetchFile(controller.signal)
      .then(({ blob }) => {
        objectUrl = URL.createObjectURL(blob);
        setUrl(objectUrl);
      })
      .catch((err) => {
        if (!(err instanceof DOMException && err.name === "AbortError")) setError(problemText(err));
      });
    return () => {
      controller.abort();
      if (objectUrl) URL.revokeObjectURL(objectUrl);
    };
  }, [info.id, previewable]);

  async function download() {
    setBusy(true);
    setError(null);
    try {
      const file = await fetchFile();
      saveBlob(file.blob, file.filename);
    } catch (err) {
      setError(problemText(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <div class="attachment">
      {previewable && url && <img src={url} alt={`Image: ${filename}`} class="preview" />}
      {previewable && !url && !error && <p class="muted">Loading preview…</p>}
      <p class="attachment-line">
        <span class="attachment-name">{filename}</span> <span class="muted">({formatSize(info.size)})</span>{" "}
        <Button class="small" busy={busy} onClick={() => void download()}>
          Download<span class="sr-only"> {filename}</span>
        </Button>
      </p>
      {error && <p class="error">The file could not be opened: {error}</p>}
    </div>
  );
}

function ReportForm({ message, state, codec, onClose }: { message: ServerMessage; state: MemberState; codec: ConversationCodec | null; onClose: () => void }) {
  const [category, setCategory] = useState("spam");
  const [comment, setComment] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [done, setDone] = useState<string | null>(null);
  const base = `report-${message.id}`;
  async function submit(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const extra = codec?.reportFields ? await codec.reportFields(message) : {};
      const report = await api<{ id: number; status: string }>("POST", "/reports", {
        token: state.session.token,
        body: { conversation_id: message.conversation_id, message_ids: [message.id], category, comment, ...extra },
      });
      setDone(`Reported (case ${report.id}). A moderator of your region will decide; you will be told the outcome.`);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }
  return (
    <form class="stack report-form" onSubmit={submit} aria-label={`Report the message from ${message.sender}`}>
      <label for={`${base}-category`}>Category</label>
      <select id={`${base}-category`} value={category} onChange={(e) => setCategory(e.currentTarget.value)}>
        {REPORT_CATEGORIES.map(([value, label]) => (
          <option key={value} value={value}>
            {label}
          </option>
        ))}
      </select>
      <label for={`${base}-comment`}>Comment (optional; stored in the clear)</label>
      <textarea id={`${base}-comment`} maxLength={1000} value={comment} onInput={(e) => setComment(e.currentTarget.value)} />
      <p class="help">
        {message.kind === "e2ee"
          ? "Keyhold cannot read end-to-end encrypted messages: a report reveals this message to the moderator."
          : "The moderator sees this message and up to 10 messages before and after it; the read is logged."}
      </p>
      <ErrorText error={error} />
      {done && <StatusText>{done}</StatusText>}
      <div class="row">
        <Button type="submit" busy={busy} disabled={!!done}>
          Send report
        </Button>
        <Button onClick={onClose}>{done ? "Close" : "Cancel"}</Button>
      </div>
    </form>
  );
}

export function PendingItem({ pending, state, onEdit }: { pending: PendingSend; state: MemberState; onEdit: (text: string) => void }) {
  const words: Record<string, string> = {
    sending: "Sending…",
    uploading: "Uploading…",
    retrying: "Not sent yet: retrying",
    failed: "Not sent",
    refused: "Not sent",
  };
  const blocked = pending.problemType?.endsWith("/blocked");
  return (
    <li class={`msg mine pending pending-${pending.state}`} data-pending-key={pending.key}>
      <div class="msg-meta">
        <span class="msg-sender">You</span> <span class="muted">{words[pending.state]}</span>
      </div>
      {pending.text && <p class="msg-text">{pending.text}</p>}
      {pending.file && (
        <div class="attachment">
          <p class="attachment-line">
            <span class="attachment-name">{safeFileName(pending.file.name)}</span> <span class="muted">({formatSize(pending.file.size)})</span>
          </p>
          {pending.progress !== null && pending.progress < 1 && (
            <label class="progress">
              Upload progress
              <progress max={1} value={pending.progress} />
              <span>{Math.round(pending.progress * 100)}%</span>
            </label>
          )}
        </div>
      )}
      {pending.error && (
        <p class={pending.state === "retrying" ? "muted" : "error"} role={pending.state === "retrying" ? undefined : "alert"}>
          {blocked ? "Blocked by the safety policy, not delivered: " : ""}
          {pending.error}
        </p>
      )}
      {(pending.state === "failed" || pending.state === "refused" || pending.state === "retrying") && (
        <div class="row">
          {(pending.state !== "refused" || pending.problemType === KEY_REFUSAL) && (
            <Button class="small" onClick={() => state.outbox.retry(pending.key)}>
              {pending.state === "retrying" ? "Retry now" : pending.state === "refused" ? "Send again" : "Retry"}
            </Button>
          )}
          {pending.state === "refused" && pending.text && (
            <Button
              class="small"
              onClick={() => {
                onEdit(pending.text);
                state.outbox.discard(pending.key);
              }}
            >
              Edit
            </Button>
          )}
          <Button class="small" onClick={() => state.outbox.discard(pending.key)}>
            Discard
          </Button>
        </div>
      )}
    </li>
  );
}
