// "My access history": every staff access to the member's data, each checked in this browser
// against the signed tree head (Ed25519 and SHA-256 through WebCrypto), showing ✓ or what
// failed. The service's key comes from /transparency/key; a member who pinned a key elsewhere
// can compare its fingerprint, shown here.
import { useCallback, useEffect, useState } from "preact/hooks";
import { api } from "../api";
import { type AccessEventItem, type AccessEvents, type CheckedEvents, checkAccessEvents, fetchAndCheckConsistency } from "./access";
import { Status } from "./Status";
import { type Check, fetchServiceKey, type TreeHeadJson } from "./sth";
import { caseWords, entryTypeWords, errorText, short, timeWords } from "./words";
import "./verify.css";

interface Loaded extends CheckedEvents {
  key: string;
  userId: number;
  /** The log only grew since the head this page saw last (null: nothing earlier to compare). */
  growth: Check | null;
}

// The newest head this tab has verified: memory only, like the session.
let lastHead: TreeHeadJson | null = null;

function parseEntry(item: AccessEventItem): Record<string, unknown> {
  try {
    const entry: unknown = JSON.parse(item.entry);
    return entry && typeof entry === "object" ? (entry as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function EventRow({ item, check }: { item: AccessEventItem; check: Check }) {
  const entry = parseEntry(item);
  const details = (entry.details ?? {}) as Record<string, unknown>;
  const mine = Array.isArray(item.messages) ? item.messages.length : 0;
  return (
    <li class={`vf-event ${check.ok ? "vf-event-ok" : "vf-event-bad"}`} data-index={item.index}>
      <div class="vf-event-head">
        <h3 class="vf-event-title">{entryTypeWords(item.type)}</h3>
        <Status check={check} />
      </div>
      <dl class="vf-facts">
        <dt>When</dt>
        <dd>
          <time dateTime={item.time}>{timeWords(item.time)}</time>
        </dd>
        <dt>Under</dt>
        <dd>{caseWords(item.case)}</dd>
        {typeof details.role === "string" && (
          <>
            <dt>By</dt>
            <dd>
              staff member #{String(details.staff)} ({details.role})
            </dd>
          </>
        )}
        {typeof details.reason === "string" && (
          <>
            <dt>Reason given</dt>
            <dd>{details.reason}</dd>
          </>
        )}
        {typeof details.messages === "number" && (
          <>
            <dt>Messages read in all</dt>
            <dd>{details.messages}</dd>
          </>
        )}
        {Array.isArray(details.categories) && (
          <>
            <dt>Data categories</dt>
            <dd>{(details.categories as string[]).map((c) => c.replace(/_/g, " ")).join(", ")}</dd>
          </>
        )}
        <dt>Of your conversations</dt>
        <dd>
          {mine === 0 ? "no messages" : `${mine} message${mine === 1 ? "" : "s"}`}
          {mine > 0 && <span class="vf-ids"> (ids {item.messages.join(", ")})</span>}
        </dd>
        <dt>Log entry</dt>
        <dd>#{item.index}</dd>
      </dl>
    </li>
  );
}

export default function AccessHistory({ token }: { token: string }) {
  const [loaded, setLoaded] = useState<Loaded | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const load = useCallback(async () => {
    setBusy(true);
    setError(null);
    try {
      const [data, me, key] = await Promise.all([
        api<AccessEvents>("GET", "/account/access-events", { token }),
        api<{ id: number }>("GET", "/account", { token }),
        fetchServiceKey(),
      ]);
      const checked = await checkAccessEvents(data, me.id, key);
      let growth: Check | null = null;
      const head = checked.head;
      if (head && checked.headCheck.ok && head.root) {
        if (lastHead && lastHead.size !== head.size) {
          growth = await fetchAndCheckConsistency(lastHead, head).catch((e) => ({ ok: false as const, reason: errorText(e) }));
          if (growth.ok && lastHead.size > head.size) growth = { ok: false, reason: "the log is smaller than when you last checked" };
        } else if (lastHead && lastHead.root !== head.root) {
          growth = { ok: false, reason: "the log has the same size as when you last checked but another root: it was rewritten" };
        }
        if (!growth || growth.ok) lastHead = head;
      }
      setLoaded({ ...checked, key, userId: me.id, growth });
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  }, [token]);

  useEffect(() => {
    void load();
  }, [load]);

  const failed = loaded ? loaded.items.filter((i) => !i.check.ok).length : 0;
  return (
    <section class="vf-access" aria-labelledby="vf-access-title" aria-busy={busy}>
      <h2 id="vf-access-title">My access history</h2>
      <p class="vf-intro">
        Every time Keyhold staff open your data — under a report or a legal case — it is written to a public,
        append-only log. This page checks each entry in your browser: that it is in the log the service signed, and
        that the part about you belongs to it.
      </p>
      <div class="vf-toolbar">
        <button type="button" class="vf-button" onClick={() => void load()} disabled={busy}>
          {busy ? "Checking…" : "Check again"}
        </button>
      </div>
      {error && (
        <p class="vf-error" role="alert">
          Could not load your access history: {error}
        </p>
      )}
      {!loaded && !error && <p class="vf-pending">Loading and verifying…</p>}
      {loaded && (
        <>
          <div class="vf-head" aria-live="polite">
            <h3 class="vf-head-title">Signed tree head</h3>
            {loaded.head && loaded.head.root ? (
              <>
                <p class="vf-head-line">
                  {loaded.head.size} entries, signed {timeWords(loaded.head.timestamp_ms ?? null)}; root{" "}
                  <code>{short(loaded.head.root)}</code>
                </p>
                <p class="vf-head-line">
                  Service key <code class="vf-key">{short(loaded.key, 24)}</code>
                </p>
                <Status check={loaded.headCheck} okText="Signature verifies" />
                {loaded.growth && (
                  <p class="vf-head-line">
                    Since you last checked: <Status check={loaded.growth} okText="the log only grew" />
                  </p>
                )}
              </>
            ) : (
              <p class="vf-head-line">The log is empty.</p>
            )}
          </div>
          {loaded.items.length === 0 ? (
            <p class="vf-empty">No staff member has opened your data.</p>
          ) : (
            <>
              <p class="vf-summary" role="status">
                {failed === 0
                  ? `All ${loaded.items.length} entries verify.`
                  : `${failed} of ${loaded.items.length} entries do not verify.`}
              </p>
              <ol class="vf-events" reversed>
                {[...loaded.items].reverse().map(({ item, check }) => (
                  <EventRow key={item.index} item={item} check={check} />
                ))}
              </ol>
            </>
          )}
        </>
      )}
    </section>
  );
}
