// The conversation list (search in names, unread counts, previews, the model), starting a
// conversation (1:1 or group, standard or e2ee) and finding a member by name.
import { useEffect, useState } from "preact/hooks";
import { api } from "../../api";
import { Badge, Button, ErrorText, StatusText } from "../../ui/components";
import { formatTime, problemText } from "../../ui/format";
import { useMember, usePage } from "../context";
import { Link, navigate } from "../router";
import type { MemberState } from "../state";
import type { Conversation, Encryption, Profile, Relations } from "../types";

export function conversationName(conversation: Conversation, me: string): string {
  if (conversation.title) return conversation.title;
  const others = conversation.members.filter((m) => m !== me);
  if (others.length === 0) return "Just you";
  return others.join(", ");
}

export function previewText(conversation: Conversation, me: string): string {
  const last = conversation.last_message;
  if (!last) return "No messages yet";
  const who = last.sender === me ? "You" : last.sender;
  if (last.deleted) return `${who}: message deleted`;
  if (last.preview === null) return conversation.encryption === "e2ee" ? `${who}: encrypted message` : `${who}: attachment`;
  return `${who}: ${last.preview || "attachment"}`;
}

function matches(conversation: Conversation, query: string): boolean {
  const q = query.trim().toLowerCase();
  if (!q) return true;
  return conversation.title.toLowerCase().includes(q) || conversation.members.some((m) => m.toLowerCase().includes(q));
}

export function ConversationList({ activeId, compact }: { activeId?: number; compact?: boolean }) {
  const state = useMember();
  const [query, setQuery] = useState("");
  const all = state.sortedConversations();
  const shown = all.filter((c) => matches(c, query));
  const searchId = compact ? "search-side" : "search-main";
  return (
    <div class="conv-list-wrap">
      <label class="search" for={searchId}>
        <span>Search conversations by name</span>
        <input id={searchId} type="search" value={query} onInput={(e) => setQuery(e.currentTarget.value)} />
      </label>
      {!state.listLoaded && !state.listError && <p class="muted">Loading conversations…</p>}
      <ErrorText error={state.listError} />
      {state.listLoaded && all.length === 0 && <p class="muted">No conversations yet. Start one below, or find a member by name.</p>}
      {state.listLoaded && all.length > 0 && shown.length === 0 && (
        <p class="muted">No loaded conversation matches "{query}".{state.listNextBefore !== null && " Load more to search older ones."}</p>
      )}
      <ul class="conv-list" aria-label="Conversations">
        {shown.map((c) => (
          <li key={c.id}>
            <Link
              href={`/c/${c.id}`}
              class={`conv-item${c.id === activeId ? " active" : ""}`}
              aria-current={c.id === activeId ? "page" : undefined}
            >
              <span class="conv-top">
                <span class="conv-name">{conversationName(c, state.username)}</span>
                <Badge model={c.encryption} />
                {c.unread > 0 && (
                  <span class="unread" aria-label={`${c.unread} unread`}>
                    {c.unread}
                  </span>
                )}
              </span>
              <span class="conv-bottom">
                <span class="conv-preview">{previewText(c, state.username)}</span>
                <span class="conv-time">{formatTime(c.last_message?.sent_at ?? c.created_at)}</span>
              </span>
            </Link>
          </li>
        ))}
      </ul>
      {state.listNextBefore !== null && (
        <Button busy={state.listLoadingMore} onClick={() => void state.loadConversations(true)}>
          {state.listLoadingMore ? "Loading…" : "Load older conversations"}
        </Button>
      )}
    </div>
  );
}

export function ChatsHome() {
  const heading = usePage("Chats");
  const state = useMember();
  const requestCount = state.requests.size;
  return (
    <div class="chats-home">
      <h1 ref={heading} tabIndex={-1}>
        Chats
      </h1>
      {requestCount > 0 && (
        <p class="notice">
          You have {requestCount} message request{requestCount === 1 ? "" : "s"}. <Link href="/requests">Open requests</Link>
        </p>
      )}
      <div class="chats-grid">
        <section aria-labelledby="list-heading">
          <h2 id="list-heading">Your conversations</h2>
          <ConversationList />
        </section>
        <div>
          <FindMember />
          <NewConversation />
        </div>
      </div>
    </div>
  );
}

async function start(state: MemberState, members: string[], encryption: Encryption, title: string, kind: "direct" | "group") {
  const conversation = await api<Conversation>("POST", "/conversations", {
    token: state.session.token,
    body: { members, encryption, title, kind },
  });
  state.put(conversation);
  navigate(`/c/${conversation.id}`);
}

function ModelChoice({ value, onChange, name }: { value: Encryption; onChange: (v: Encryption) => void; name: string }) {
  return (
    <fieldset class="model-choice">
      <legend>Who can read it</legend>
      <label class="radio">
        <input type="radio" name={name} value="standard" checked={value === "standard"} onChange={() => onChange("standard")} />
        <span>
          <strong>standard</strong>: sealed on the server; staff only under an approved case, logged publicly
        </span>
      </label>
      <label class="radio">
        <input type="radio" name={name} value="e2ee" checked={value === "e2ee"} onChange={() => onChange("e2ee")} />
        <span>
          <strong>e2ee</strong>: end-to-end encrypted; only the participants' devices can read it
        </span>
      </label>
    </fieldset>
  );
}

export function NewConversation() {
  const state = useMember();
  const [members, setMembers] = useState("");
  const [title, setTitle] = useState("");
  const [kind, setKind] = useState<"direct" | "group">("direct");
  const [encryption, setEncryption] = useState<Encryption>("standard");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const names = members
    .split(/[\s,]+/)
    .map((n) => n.replace(/^@/, "").trim())
    .filter(Boolean);
  async function submit(event: Event) {
    event.preventDefault();
    setError(null);
    if (names.length === 0) {
      setError("Name at least one member.");
      return;
    }
    if (kind === "direct" && names.length > 1) {
      setError("A 1:1 conversation has one other member: choose Group for more.");
      return;
    }
    setBusy(true);
    try {
      await start(state, names, encryption, kind === "group" ? title.trim() : "", kind);
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  }
  return (
    <section aria-labelledby="new-heading" class="card">
      <h2 id="new-heading">Start a conversation</h2>
      <form class="stack" onSubmit={submit}>
        <fieldset class="kind-choice">
          <legend>Kind</legend>
          <label class="radio">
            <input type="radio" name="kind" checked={kind === "direct"} onChange={() => setKind("direct")} /> 1:1
          </label>
          <label class="radio">
            <input type="radio" name="kind" checked={kind === "group"} onChange={() => setKind("group")} /> Group
          </label>
        </fieldset>
        <label>
          {kind === "direct" ? "With (username)" : "Members (usernames, separated by commas or spaces)"}
          <input name="members" required value={members} onInput={(e) => setMembers(e.currentTarget.value)} autocomplete="off" />
        </label>
        {kind === "group" && (
          <label>
            Group title (optional; not sealed: visible to the server's operators)
            <input name="title" maxLength={100} value={title} onInput={(e) => setTitle(e.currentTarget.value)} />
          </label>
        )}
        <ModelChoice value={encryption} onChange={setEncryption} name="new-model" />
        <ErrorText error={error} />
        <Button type="submit" class="primary" busy={busy}>
          {busy ? "Starting…" : "Start"}
        </Button>
      </form>
    </section>
  );
}

export function FindMember() {
  const state = useMember();
  const [name, setName] = useState("");
  const [profile, setProfile] = useState<Profile | null>(null);
  const [relations, setRelations] = useState<Relations | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [status, setStatus] = useState<string | null>(null);
  const token = state.session.token;
  useEffect(() => {
    api<Relations>("GET", "/relations", { token })
      .then(setRelations)
      .catch(() => setRelations(null));
  }, [token]);
  async function find(event: Event) {
    event.preventDefault();
    const wanted = name.trim().replace(/^@/, "");
    if (!wanted) return;
    setBusy(true);
    setError(null);
    setStatus(null);
    setProfile(null);
    try {
      setProfile(await api<Profile>("GET", `/users/${encodeURIComponent(wanted)}`, { token }));
    } catch (err) {
      setError(problemText(err));
    } finally {
      setBusy(false);
    }
  }
  async function act(what: () => Promise<void>, done: string) {
    setError(null);
    setStatus(null);
    try {
      await what();
      setStatus(done);
      setRelations(await api<Relations>("GET", "/relations", { token }));
    } catch (err) {
      setError(err);
    }
  }
  const following = profile && relations?.following.includes(profile.username);
  const friends = profile && relations?.friends.includes(profile.username);
  return (
    <section aria-labelledby="find-heading" class="card">
      <h2 id="find-heading">Find a member</h2>
      <form class="inline-form" onSubmit={find}>
        <label>
          Find by username
          <input name="find" value={name} onInput={(e) => setName(e.currentTarget.value)} autocomplete="off" required />
        </label>
        <Button type="submit" busy={busy}>
          Find
        </Button>
      </form>
      <ErrorText error={error} />
      {profile && (
        <div class="profile">
          <p>
            <strong>{profile.display_name}</strong> (@{profile.username}), region {profile.region}
            {friends ? " · friends" : following ? " · you follow them" : ""}
          </p>
          <div class="row">
            <Button class="primary" onClick={() => void act(() => start(state, [profile.username], "standard", "", "direct"), "")}>
              Message (standard)
            </Button>
            <Button onClick={() => void act(() => start(state, [profile.username], "e2ee", "", "direct"), "")}>Message (e2ee)</Button>
            {following ? (
              <Button
                onClick={() =>
                  void act(async () => {
                    await api("DELETE", `/following/${encodeURIComponent(profile.username)}`, { token });
                  }, `You no longer follow ${profile.username}.`)
                }
              >
                Unfollow
              </Button>
            ) : (
              <Button
                onClick={() =>
                  void act(async () => {
                    await api("PUT", `/following/${encodeURIComponent(profile.username)}`, { token });
                  }, `You follow ${profile.username}. Friends are people who follow each other.`)
                }
              >
                Follow
              </Button>
            )}
          </div>
        </div>
      )}
      {status && <StatusText>{status}</StatusText>}
    </section>
  );
}
