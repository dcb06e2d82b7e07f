// A conversation's members and settings: the disappearing-message timer (any member), and for
// groups add, rename, remove and promote by role (owner and admins), and leave.
import { useState } from "preact/hooks";
import { api } from "../../api";
import { Button, ErrorText, StatusText } from "../../ui/components";
import { formatDuration } from "../../ui/format";
import { navigate } from "../router";
import type { MemberState } from "../state";
import type { Conversation } from "../types";

const TIMERS: [string, number | null][] = [
  ["Off", null],
  ["30 seconds", 30],
  ["5 minutes", 300],
  ["1 hour", 3600],
  ["1 day", 86400],
  ["1 week", 604800],
  ["30 days", 2592000],
];

type Role = "owner" | "admin" | "member";

function roleOf(conversation: Conversation, username: string): Role {
  if (conversation.owner === username) return "owner";
  if (conversation.admins.includes(username)) return "admin";
  return "member";
}

export function ManageConversation({ conversation, state, id }: { conversation: Conversation; state: MemberState; id: string }) {
  const me = state.username;
  const token = state.session.token;
  const myRole = roleOf(conversation, me);
  const manager = conversation.kind === "group" && (myRole === "owner" || myRole === "admin");
  const [error, setError] = useState<unknown>(null);
  const [status, setStatus] = useState<string | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const [adding, setAdding] = useState("");
  const [title, setTitle] = useState(conversation.title);
  const [confirmLeave, setConfirmLeave] = useState(false);
  const current = TIMERS.find(([, s]) => s === conversation.disappear_after_seconds);
  const [timer, setTimer] = useState<string>(current ? String(current[1]) : String(conversation.disappear_after_seconds ?? "null"));

  async function run(what: string, call: () => Promise<Conversation | void>, done: string) {
    setBusy(what);
    setError(null);
    setStatus(null);
    try {
      const updated = await call();
      if (updated) state.put(updated);
      setStatus(done);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(null);
    }
  }
  const path = `/conversations/${conversation.id}`;
  const others = conversation.members.filter((m) => m !== me);

  return (
    <section id={id} class="manage card" aria-label="Members and settings">
      <h2>{conversation.kind === "group" ? "Group members and settings" : "Conversation settings"}</h2>
      <ul class="member-list">
        {[me, ...others].filter((m) => conversation.members.includes(m)).map((member) => {
          const role = roleOf(conversation, member);
          const canRemove =
            conversation.kind === "group" &&
            member !== me &&
            role !== "owner" &&
            (myRole === "owner" || (myRole === "admin" && role === "member"));
          const canPromote = conversation.kind === "group" && member !== me && role === "member" && (myRole === "owner" || myRole === "admin");
          const canDemote = conversation.kind === "group" && member !== me && role === "admin" && myRole === "owner";
          return (
            <li key={member}>
              <span>
                {member}
                {member === me ? " (you)" : ""}
                {role !== "member" && conversation.kind === "group" ? ` · ${role}` : ""}
              </span>
              <span class="row">
                {canPromote && (
                  <Button
                    busy={busy === `promote-${member}`}
                    onClick={() =>
                      void run(
                        `promote-${member}`,
                        () => api<Conversation>("PUT", `${path}/members/${encodeURIComponent(member)}/role`, { token, body: { role: "admin" } }),
                        `${member} is an admin now.`,
                      )
                    }
                  >
                    Make admin<span class="sr-only"> {member}</span>
                  </Button>
                )}
                {canDemote && (
                  <Button
                    busy={busy === `demote-${member}`}
                    onClick={() =>
                      void run(
                        `demote-${member}`,
                        () => api<Conversation>("PUT", `${path}/members/${encodeURIComponent(member)}/role`, { token, body: { role: "member" } }),
                        `${member} is a member again.`,
                      )
                    }
                  >
                    Remove admin role<span class="sr-only"> of {member}</span>
                  </Button>
                )}
                {canRemove && (
                  <Button
                    class="danger"
                    busy={busy === `remove-${member}`}
                    onClick={() =>
                      void run(
                        `remove-${member}`,
                        () => api<Conversation>("DELETE", `${path}/members/${encodeURIComponent(member)}`, { token }),
                        `${member} was removed from the group.`,
                      )
                    }
                  >
                    Remove<span class="sr-only"> {member}</span>
                  </Button>
                )}
              </span>
            </li>
          );
        })}
      </ul>

      {manager && (
        <form
          class="inline-form"
          onSubmit={(e) => {
            e.preventDefault();
            const names = adding
              .split(/[\s,]+/)
              .map((n) => n.replace(/^@/, ""))
              .filter(Boolean);
            if (!names.length) return;
            void run(
              "add",
              async () => {
                const updated = await api<Conversation>("POST", `${path}/members`, { token, body: { members: names } });
                setAdding("");
                return updated;
              },
              `Added ${names.join(", ")}.`,
            );
          }}
        >
          <label>
            Add members (usernames)
            <input value={adding} onInput={(e) => setAdding(e.currentTarget.value)} autocomplete="off" />
          </label>
          <Button type="submit" busy={busy === "add"}>
            Add
          </Button>
        </form>
      )}
      {conversation.kind === "group" && manager && (
        <form
          class="inline-form"
          onSubmit={(e) => {
            e.preventDefault();
            void run("rename", () => api<Conversation>("PATCH", path, { token, body: { title: title.trim() } }), "Renamed.");
          }}
        >
          <label>
            Group title (not sealed)
            <input value={title} maxLength={100} required onInput={(e) => setTitle(e.currentTarget.value)} />
          </label>
          <Button type="submit" busy={busy === "rename"}>
            Rename
          </Button>
        </form>
      )}
      {conversation.kind === "group" && !manager && (
        <p class="help">Only the group's owner and admins can add, remove, rename or promote.</p>
      )}

      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          const seconds = timer === "null" ? null : Number(timer);
          void run(
            "timer",
            () => api<Conversation>("PUT", `${path}/timer`, { token, body: { seconds } }),
            seconds === null ? "Disappearing messages are off." : `Messages sent from now on disappear after ${formatDuration(seconds)}.`,
          );
        }}
      >
        <label>
          Disappearing messages
          <select value={timer} onChange={(e) => setTimer(e.currentTarget.value)}>
            {!current && conversation.disappear_after_seconds !== null && (
              <option value={String(conversation.disappear_after_seconds)}>{formatDuration(conversation.disappear_after_seconds)}</option>
            )}
            {TIMERS.map(([label, seconds]) => (
              <option key={label} value={String(seconds)}>
                {label}
              </option>
            ))}
          </select>
        </label>
        <Button type="submit" busy={busy === "timer"}>
          Set timer
        </Button>
      </form>
      <p class="help">
        The timer applies to messages sent from now on, for everyone: each is deleted that long after it was sent, on the
        server and for every member.
      </p>

      {conversation.kind === "group" &&
        (confirmLeave ? (
          <div class="confirm" role="group" aria-label="Confirm leaving">
            <p>Leave this group? You will no longer see any of it.</p>
            <Button
              class="danger"
              busy={busy === "leave"}
              onClick={() =>
                void run(
                  "leave",
                  async () => {
                    await api("DELETE", `${path}/members/me`, { token });
                    state.remove(conversation.id);
                    navigate("/");
                  },
                  "You left the group.",
                )
              }
            >
              Leave the group
            </Button>
            <Button onClick={() => setConfirmLeave(false)}>Cancel</Button>
          </div>
        ) : (
          <Button class="danger" onClick={() => setConfirmLeave(true)}>
            Leave group…
          </Button>
        ))}
      <ErrorText error={error} />
      {status && <StatusText>{status}</StatusText>}
    </section>
  );
}
