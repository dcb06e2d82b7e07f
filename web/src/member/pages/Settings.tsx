// Settings: profile, who may message me (DM audience, with the minors' limits), guardian
// links, blocks, password, log out everywhere, account deletion.
import { useEffect, useState } from "preact/hooks";
import { api } from "../../api";
import { forgetE2eeStore } from "../../e2ee/runtime";
import { memberSession } from "../../session";
import { Button, ErrorText, StatusText } from "../../ui/components";
import { formatDateTime } from "../../ui/format";
import { useMember, usePage } from "../context";
import { navigate } from "../router";
import type { MemberState } from "../state";
import type { Audience, Band, GuardianLink, Messaging } from "../types";

export function Settings() {
  const heading = usePage("Settings");
  const state = useMember();
  return (
    <div class="settings">
      <h1 ref={heading} tabIndex={-1}>
        Settings
      </h1>
      <ErrorText error={state.accountError} />
      <Profile state={state} />
      <AudienceSection state={state} />
      <Guardians state={state} />
      <Blocks state={state} />
      <Password state={state} />
      <Sessions state={state} />
      <DeleteAccount state={state} />
    </div>
  );
}

function useSection() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [status, setStatus] = useState<string | null>(null);
  async function run(call: () => Promise<unknown>, done: string | null) {
    setBusy(true);
    setError(null);
    setStatus(null);
    try {
      await call();
      setStatus(done);
      return true;
    } catch (err) {
      setError(err);
      return false;
    } finally {
      setBusy(false);
    }
  }
  return { busy, error, status, run, setError, setStatus };
}

function Profile({ state }: { state: MemberState }) {
  const account = state.account;
  const [name, setName] = useState(account?.display_name ?? "");
  useEffect(() => setName(account?.display_name ?? ""), [account?.display_name]);
  const s = useSection();
  return (
    <section class="card" aria-labelledby="profile-h">
      <h2 id="profile-h">Profile</h2>
      {account && (
        <p class="muted">
          @{account.username} · region {account.region} · born {account.birthdate} · member since {formatDateTime(account.created_at)}
        </p>
      )}
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          void s.run(async () => {
            state.account = await api("PATCH", "/account", { token: state.session.token, body: { display_name: name.trim() } });
            state.changed();
          }, "Display name saved.");
        }}
      >
        <label>
          Display name
          <input value={name} maxLength={64} required onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <Button type="submit" busy={s.busy}>
          Save
        </Button>
      </form>
      <ErrorText error={s.error} />
      {s.status && <StatusText>{s.status}</StatusText>}
    </section>
  );
}

const BAND_WORDS: Record<Band, string> = {
  young_teen:
    "You are 13–15: direct messaging is off. No one can start a conversation with you or add you to a group, and you cannot send. Only “no one” is possible until you turn 16.",
  teen: "You are 16–17: you can message friends only (people you follow who follow you back). You can choose “friends” or “no one”, never “everyone”. A guardian can make it stricter.",
  adult: "You choose who may start a conversation with you or add you to a group. People who are not your friends reach you as message requests.",
};

const AUDIENCES: [Audience, string][] = [
  ["everyone", "Everyone"],
  ["friends", "Friends only (mutual follows)"],
  ["no_one", "No one"],
];

function AudienceSection({ state }: { state: MemberState }) {
  const messaging = state.messaging;
  const [choice, setChoice] = useState<Audience>(messaging?.chosen ?? messaging?.dm_audience ?? "everyone");
  useEffect(() => {
    if (messaging) setChoice(messaging.chosen ?? messaging.dm_audience);
  }, [messaging?.chosen, messaging?.dm_audience]);
  const s = useSection();
  return (
    <section class="card" aria-labelledby="audience-h">
      <h2 id="audience-h">Who may message you</h2>
      {messaging ? (
        <>
          <p class="help">{BAND_WORDS[messaging.band] ?? ""}</p>
          <p>
            In force now: <strong data-testid="dm-audience">{AUDIENCES.find(([a]) => a === messaging.dm_audience)?.[1] ?? messaging.dm_audience}</strong>
            {messaging.chosen === null ? " (your age's default)" : ""}
            {messaging.chosen && messaging.chosen !== messaging.dm_audience ? " (a guardian's stricter setting applies)" : ""}
          </p>
          <form
            class="stack"
            onSubmit={(e) => {
              e.preventDefault();
              void s.run(async () => {
                state.messaging = await api<Messaging>("PUT", "/account/messaging", {
                  token: state.session.token,
                  body: { dm_audience: choice },
                });
                state.changed();
              }, "Saved.");
            }}
          >
            <fieldset>
              <legend>Who may start a conversation with you or add you to a group</legend>
              {AUDIENCES.map(([value, label]) => {
                const minor = messaging.band !== "adult";
                const unavailable = (minor && value === "everyone") || (messaging.band === "young_teen" && value !== "no_one");
                return (
                  <label class="radio" key={value}>
                    <input
                      type="radio"
                      name="dm_audience"
                      value={value}
                      checked={choice === value}
                      onChange={() => setChoice(value)}
                    />
                    <span>
                      {label}
                      {unavailable ? " (not allowed at your age)" : ""}
                    </span>
                  </label>
                );
              })}
            </fieldset>
            <Button type="submit" busy={s.busy}>
              Save
            </Button>
          </form>
        </>
      ) : (
        !state.accountError && <p class="muted">Loading…</p>
      )}
      <ErrorText error={s.error} />
      {s.status && <StatusText>{s.status}</StatusText>}
    </section>
  );
}

interface Links {
  items: GuardianLink[];
  a_guardian_sees: string;
}

interface TeenView {
  band?: string;
  dm_audience?: string;
  conversations?: { id: number; kind: string; encryption: string; with: string[] | string; started_at: string }[];
  [field: string]: unknown;
}

function Guardians({ state }: { state: MemberState }) {
  const token = state.session.token;
  const [links, setLinks] = useState<Links | null>(null);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [name, setName] = useState("");
  const [teen, setTeen] = useState<{ name: string; view: TeenView } | null>(null);
  const s = useSection();
  const load = () =>
    api<Links>("GET", "/guardian/links", { token })
      .then((l) => {
        setLinks(l);
        setLoadError(null);
      })
      .catch(setLoadError);
  useEffect(() => {
    void load();
  }, [token]);
  const adult = state.messaging?.band === "adult";
  return (
    <section class="card" aria-labelledby="guardian-h">
      <h2 id="guardian-h">Guardian link</h2>
      <p class="help">
        An adult and a member under 18 who both ask are linked. {links ? `A guardian sees ${links.a_guardian_sees}.` : ""}{" "}
        The guardian can make the teen's messaging stricter, never looser. A teen must follow the adult first.
      </p>
      <ErrorText error={loadError} />
      {links && links.items.length === 0 && <p class="muted">No guardian links.</p>}
      {links && links.items.length > 0 && (
        <ul class="plain-list">
          {links.items.map((link) => (
            <li key={link.username}>
              <span>
                {link.username} — your {link.role}, {link.status.replace(/_/g, " ")}
                {link.dm_audience ? `, guardian's DM setting: ${link.dm_audience}` : ""}, since {formatDateTime(link.since)}
              </span>
              <span class="row">
                {link.role === "teen" && link.status === "active" && (
                  <Button
                    class="small"
                    onClick={() =>
                      void s.run(async () => {
                        const view = await api<TeenView>("GET", `/guardian/teens/${encodeURIComponent(link.username)}`, { token });
                        setTeen({ name: link.username, view });
                      }, null)
                    }
                  >
                    View<span class="sr-only"> {link.username}</span>
                  </Button>
                )}
                {link.status === "waiting_for_you" && (
                  <Button
                    class="small"
                    onClick={() =>
                      void s.run(async () => {
                        setLinks(await api<Links>("PUT", `/guardian/links/${encodeURIComponent(link.username)}`, { token }));
                      }, "Link accepted.")
                    }
                  >
                    Accept<span class="sr-only"> the link with {link.username}</span>
                  </Button>
                )}
                <Button
                  class="small danger"
                  onClick={() =>
                    void s.run(async () => {
                      await api("DELETE", `/guardian/links/${encodeURIComponent(link.username)}`, { token });
                      await load();
                    }, "Link ended.")
                  }
                >
                  End link<span class="sr-only"> with {link.username}</span>
                </Button>
              </span>
            </li>
          ))}
        </ul>
      )}
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          const who = name.trim().replace(/^@/, "");
          if (!who) return;
          void s.run(async () => {
            setLinks(await api<Links>("PUT", `/guardian/links/${encodeURIComponent(who)}`, { token }));
            setName("");
          }, "Asked. The link is active once both of you asked.");
        }}
      >
        <label>
          {adult ? "Be the guardian of (username of a member under 18)" : "Ask an adult to be your guardian (username)"}
          <input value={name} onInput={(e) => setName(e.currentTarget.value)} autocomplete="off" />
        </label>
        <Button type="submit" busy={s.busy}>
          Ask
        </Button>
      </form>
      {teen && <TeenPanel name={teen.name} view={teen.view} state={state} onView={(v) => setTeen({ name: teen.name, view: v })} />}
      <ErrorText error={s.error} />
      {s.status && <StatusText>{s.status}</StatusText>}
    </section>
  );
}

function TeenPanel({ name, view, state, onView }: { name: string; view: TeenView; state: MemberState; onView: (v: TeenView) => void }) {
  const s = useSection();
  const conversations = Array.isArray(view.conversations) ? view.conversations : [];
  return (
    <div class="teen">
      <h3>{name}</h3>
      <p>
        Age band: {String(view.band ?? "?")} · DM setting in force: {String(view.dm_audience ?? "?")}
      </p>
      <div class="row">
        {(["no_one", "friends"] as const).map((audience) => (
          <Button
            class="small"
            key={audience}
            busy={s.busy}
            onClick={() =>
              void s.run(async () => {
                onView(
                  await api<TeenView>("PUT", `/guardian/teens/${encodeURIComponent(name)}/messaging`, {
                    token: state.session.token,
                    body: { dm_audience: audience },
                  }),
                );
              }, "Saved; the teen is told.")
            }
          >
            Set DMs to {audience === "no_one" ? "off" : "friends only"}
          </Button>
        ))}
      </div>
      {conversations.length > 0 && (
        <ul class="plain-list">
          {conversations.map((c) => (
            <li key={c.id}>
              {c.kind} ({c.encryption}) with {Array.isArray(c.with) ? c.with.join(", ") : String(c.with)}, since{" "}
              {formatDateTime(c.started_at)}
            </li>
          ))}
        </ul>
      )}
      <ErrorText error={s.error} />
      {s.status && <StatusText>{s.status}</StatusText>}
    </div>
  );
}

function Blocks({ state }: { state: MemberState }) {
  const token = state.session.token;
  const [items, setItems] = useState<{ username: string; since: string }[] | null>(null);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [name, setName] = useState("");
  const s = useSection();
  const load = () =>
    api<{ items: { username: string; since: string }[] }>("GET", "/blocks", { token })
      .then((b) => {
        setItems(b.items);
        setLoadError(null);
      })
      .catch(setLoadError);
  useEffect(() => {
    void load();
  }, [token]);
  return (
    <section class="card" aria-labelledby="blocks-h">
      <h2 id="blocks-h">Blocked members</h2>
      <p class="help">
        A block stops conversations, requests, group adds and messages either way, and ends follows. Unblocking restores
        nothing.
      </p>
      <ErrorText error={loadError} />
      {items && items.length === 0 && <p class="muted">You block no one.</p>}
      {items && items.length > 0 && (
        <ul class="plain-list">
          {items.map((b) => (
            <li key={b.username}>
              <span>
                {b.username} <span class="muted">since {formatDateTime(b.since)}</span>
              </span>
              <Button
                class="small"
                onClick={() =>
                  void s.run(async () => {
                    await api("DELETE", `/blocks/${encodeURIComponent(b.username)}`, { token });
                    await load();
                  }, `Unblocked ${b.username}.`)
                }
              >
                Unblock<span class="sr-only"> {b.username}</span>
              </Button>
            </li>
          ))}
        </ul>
      )}
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          const who = name.trim().replace(/^@/, "");
          if (!who) return;
          void s.run(async () => {
            await api("PUT", `/blocks/${encodeURIComponent(who)}`, { token });
            setName("");
            await load();
          }, `Blocked ${who}.`);
        }}
      >
        <label>
          Block a member (username)
          <input value={name} onInput={(e) => setName(e.currentTarget.value)} autocomplete="off" />
        </label>
        <Button type="submit" busy={s.busy}>
          Block
        </Button>
      </form>
      <ErrorText error={s.error} />
      {s.status && <StatusText>{s.status}</StatusText>}
    </section>
  );
}

function Password({ state }: { state: MemberState }) {
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const s = useSection();
  return (
    <section class="card" aria-labelledby="password-h">
      <h2 id="password-h">Password</h2>
      <form
        class="stack"
        onSubmit={(e) => {
          e.preventDefault();
          void s.run(async () => {
            await api("PUT", "/account/password", {
              token: state.session.token,
              body: { current_password: current, new_password: next },
            });
            setCurrent("");
            setNext("");
          }, "Password changed. Every other session of yours has ended; this one goes on.");
        }}
      >
        <label>
          Current password
          <input type="password" autocomplete="current-password" required value={current} onInput={(e) => setCurrent(e.currentTarget.value)} />
        </label>
        <label>
          New password (at least 8 characters)
          <input
            type="password"
            autocomplete="new-password"
            required
            minLength={8}
            value={next}
            onInput={(e) => setNext(e.currentTarget.value)}
          />
        </label>
        <Button type="submit" busy={s.busy}>
          Change password
        </Button>
      </form>
      <ErrorText error={s.error} />
      {s.status && <StatusText>{s.status}</StatusText>}
    </section>
  );
}

export async function logOut(state: MemberState, everywhere: boolean): Promise<string | null> {
  let note: string | null = null;
  try {
    if (everywhere) {
      const answer = await api<{ revoked: number }>("DELETE", "/sessions", { token: state.session.token });
      note = `Logged out everywhere (${answer.revoked} session${answer.revoked === 1 ? "" : "s"} ended).`;
    } else {
      await api("DELETE", "/sessions/current", { token: state.session.token });
    }
  } catch (error) {
    // Signed out here in any case; the token ends on the server at its expiry at the latest.
    if (everywhere) throw error;
  }
  state.stop();
  memberSession.set(null);
  navigate("/", { replace: true });
  return note;
}

function Sessions({ state }: { state: MemberState }) {
  const s = useSection();
  return (
    <section class="card" aria-labelledby="sessions-h">
      <h2 id="sessions-h">Sessions</h2>
      <p class="help">Log out of Keyhold on every device and browser, this one included.</p>
      <Button class="danger" busy={s.busy} onClick={() => void s.run(() => logOut(state, true), null)}>
        Log out everywhere
      </Button>
      <ErrorText error={s.error} />
    </section>
  );
}

function DeleteAccount({ state }: { state: MemberState }) {
  const [password, setPassword] = useState("");
  const [sure, setSure] = useState(false);
  const s = useSection();
  return (
    <section class="card danger-zone" aria-labelledby="delete-h">
      <h2 id="delete-h">Delete your account</h2>
      <p class="help">
        Your account ends and what you sent is destroyed (messages become tombstones, your files are deleted). Your username
        is never given to anyone else. This cannot be undone.
      </p>
      <form
        class="stack"
        onSubmit={(e) => {
          e.preventDefault();
          if (!sure) {
            s.setError("Tick the box to confirm.");
            return;
          }
          void s.run(async () => {
            await api("POST", "/account/delete", { token: state.session.token, body: { password } });
            const session = state.session;
            state.stop();
            // This browser's e2ee store and device id for the member go too (log out keeps them).
            await forgetE2eeStore(session).catch(() => undefined);
            memberSession.set(null);
            navigate("/", { replace: true });
          }, null);
        }}
      >
        <label>
          Password
          <input type="password" autocomplete="current-password" required value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
        </label>
        <label class="checkbox">
          <input type="checkbox" checked={sure} onChange={(e) => setSure(e.currentTarget.checked)} />
          <span>I understand that my account and what I sent will be deleted.</span>
        </label>
        <Button type="submit" class="danger" busy={s.busy}>
          Delete my account
        </Button>
      </form>
      <ErrorText error={s.error} />
    </section>
  );
}
