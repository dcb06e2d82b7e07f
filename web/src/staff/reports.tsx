// Moderators: the report queue of their region, a case (claim, the context window with the
// reported messages marked, decide with a note), and appeals (a different moderator decides).
// Admins see the same lists and cases, read-only (the API refuses them the rest, in words).
import { useEffect, useRef, useState } from "preact/hooks";
import {
  ErrorBox,
  Field,
  inputValue,
  Link,
  Loading,
  Notice,
  PageTitle,
  staffApi,
  time,
  useAction,
  useLoad,
  useMe,
  words,
} from "./common";

export interface ReportCaseJson {
  id: number;
  kind: string;
  region: string;
  status: string;
  created_at: string;
  conversation_id: number | null;
  assigned_to: number | null;
  assigned_to_name: string | null;
  reported_messages: number[];
  details: {
    category: string;
    comment?: string;
    child_safety?: boolean;
    source?: string;
    held?: boolean;
    verified_sender?: boolean;
    verdict?: { action: string; category: string | null; policy: string | null; fired: string[]; scores: Record<string, number> };
  };
  decision: {
    action?: string;
    note?: string;
    decided_by?: number;
    decided_at?: string;
    suspend_hours?: number | null;
    hotline_reference?: string | null;
    review?: string;
    automatic?: boolean;
    appeal?: { statement: string; at: string; upheld?: boolean; note?: string; decided_by?: number };
  };
  strikes?: { id: number; user_id: number; category: string; source: string; expires_at: string }[];
  held_message?: { message_id: number; state: string } | null;
}

export interface WindowMessage {
  id: number;
  conversation_id: number;
  sender_id: number;
  sender: string;
  sent_at: string;
  kind: string;
  text: string | null;
  deleted: boolean;
}

interface Page<T> {
  items: T[];
  next_after: number | null;
}

const STATUSES: [string, string][] = [
  ["open", "Open"],
  ["appealed", "Appealed"],
  ["decided", "Decided"],
  ["appeal_decided", "Appeal decided"],
  ["", "All"],
];

export function sourceWords(c: ReportCaseJson): string {
  if (c.details.source === "system") return c.details.held ? "Held by the scanner" : "Flagged by the scanner";
  return c.details.verified_sender ? "Member report (verified sender)" : "Member report";
}

export function CaseTable({ cases, base, empty }: { cases: ReportCaseJson[]; base: string; empty: string }) {
  if (cases.length === 0) return <p class="st-muted">{empty}</p>;
  return (
    <div class="st-table-wrap">
      <table class="st-table">
        <caption class="st-sr">Cases</caption>
        <thead>
          <tr>
            <th scope="col">Case</th>
            <th scope="col">Category</th>
            <th scope="col">Source</th>
            <th scope="col">Status</th>
            <th scope="col">Assigned to</th>
            <th scope="col">Opened</th>
          </tr>
        </thead>
        <tbody>
          {cases.map((c) => (
            <tr key={c.id}>
              <th scope="row">
                <Link href={`${base}/${c.id}`}>Case #{c.id}</Link>
              </th>
              <td data-label="Category">
                {words(c.details.category)}
                {c.details.child_safety && <span class="st-badge st-badge-warn">child safety</span>}
              </td>
              <td data-label="Source">{sourceWords(c)}</td>
              <td data-label="Status">{c.held_message ? words(c.held_message.state) : words(c.status)}</td>
              <td data-label="Assigned to">{c.assigned_to_name ?? "nobody"}</td>
              <td data-label="Opened">{time(c.created_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function ReportQueue() {
  const me = useMe();
  const [status, setStatus] = useState("open");
  const [more, setMore] = useState<ReportCaseJson[]>([]);
  const [after, setAfter] = useState<number | null>(null);
  const page = useLoad(
    () => staffApi<Page<ReportCaseJson>>(me, "GET", "/staff/reports", { query: { status: status || undefined, limit: 50 } }),
    [status],
  );
  useEffect(() => {
    setMore([]);
    setAfter(page.data?.next_after ?? null);
  }, [page.data]);
  const loadMore = useAction();
  const cases = [...(page.data?.items ?? []), ...more];
  return (
    <>
      <PageTitle>{me.role === "admin" ? "Report cases" : "Report queue"}</PageTitle>
      <p class="st-muted">
        Report cases of region {me.region}: members' reports and messages the scanner flagged. A case is assigned to
        the moderator with the fewest open cases; claim an unassigned one to take it.
      </p>
      <div class="st-toolbar">
        <div class="st-field st-inline">
          <label for="st-status">Show</label>
          <select id="st-status" value={status} onChange={(e) => setStatus((e.currentTarget as HTMLSelectElement).value)}>
            {STATUSES.map(([v, l]) => (
              <option value={v} key={v}>
                {l}
              </option>
            ))}
          </select>
        </div>
        <button type="button" class="st-button" onClick={page.reload}>
          Refresh
        </button>
      </div>
      <ErrorBox error={page.error} prefix="Could not load the cases" />
      {page.loading && !page.data ? <Loading what="cases" /> : <CaseTable cases={cases} base="/staff/reports" empty="No cases here." />}
      <ErrorBox error={loadMore.error} />
      {after !== null && (
        <button
          type="button"
          class="st-button"
          disabled={loadMore.busy}
          onClick={() =>
            loadMore.run(async () => {
              const next = await staffApi<Page<ReportCaseJson>>(me, "GET", "/staff/reports", {
                query: { status: status || undefined, limit: 50, after },
              });
              setMore((m) => [...m, ...next.items]);
              setAfter(next.next_after);
            })
          }
        >
          Load more cases
        </button>
      )}
    </>
  );
}

/** The reported messages and K before and after each: every read is logged, with its reason. */
export function ContextWindow({ caseId, reported, canRead }: { caseId: number; reported: number[]; canRead: boolean }) {
  const me = useMe();
  const [reason, setReason] = useState("");
  const [items, setItems] = useState<WindowMessage[] | null>(null);
  const read = useAction();
  const list = useRef<HTMLOListElement>(null);
  useEffect(() => {
    list.current?.querySelector<HTMLElement>(".st-reported")?.scrollIntoView({ block: "center" });
  }, [items]);
  return (
    <section class="st-panel" aria-labelledby="st-window-title">
      <h2 id="st-window-title">Messages</h2>
      <p class="st-muted">
        You can read the reported messages and the messages just before and after them in that conversation, nothing
        else. Each read is written to the access log with your reason, and the members of the conversation will see
        it.
      </p>
      {!canRead && <Notice>Claim the case to read its messages (only while it is open or appealed).</Notice>}
      {canRead && (
        <form
          class="st-form st-row"
          onSubmit={(e) => {
            e.preventDefault();
            void read.run(async () => {
              const r = await staffApi<{ items: WindowMessage[] }>(me, "GET", `/staff/reports/${caseId}/content`, {
                query: { reason: reason.trim() },
              });
              setItems(r.items);
            });
          }}
        >
          <Field id={`st-reason-${caseId}`} label="Reason for reading" hint="Written to the access log, which the members concerned can see.">
            <input
              id={`st-reason-${caseId}`}
              required
              maxLength={500}
              aria-describedby={`st-reason-${caseId}-hint`}
              value={reason}
              onInput={(e) => setReason(inputValue(e))}
            />
          </Field>
          <button class="st-button st-primary" type="submit" disabled={read.busy}>
            {read.busy ? "Reading…" : "Read the messages"}
          </button>
        </form>
      )}
      <ErrorBox error={read.error} prefix="Could not read the messages" />
      {items && (
        <ol class="st-window" ref={list} aria-label="Conversation excerpt">
          {items.map((m) => {
            const isReported = reported.includes(m.id);
            return (
              <li key={m.id} class={`st-message${isReported ? " st-reported" : ""}`} data-message-id={m.id}>
                <div class="st-message-meta">
                  <span class="st-sender">{m.sender}</span> <time dateTime={m.sent_at}>{time(m.sent_at)}</time>
                  {isReported && <span class="st-badge st-badge-bad">Reported message</span>}
                </div>
                <p class="st-message-text">
                  {m.deleted || m.text === null ? <em>This message was deleted.</em> : m.text}
                </p>
              </li>
            );
          })}
        </ol>
      )}
    </section>
  );
}

const ACTIONS: [string, string][] = [
  ["no_violation", "No violation: nothing happens"],
  ["remove_message", "Remove the reported messages for everyone (a strike)"],
  ["warn", "Warn the sender (a strike)"],
  ["suspend", "Suspend the sender for some hours: they can read, not send (a strike)"],
  ["ban", "Ban the sender: they can only appeal (a strike)"],
  ["escalate_legal", "Escalate to legal staff (recorded)"],
];

function DecideForm({ c, onDone }: { c: ReportCaseJson; onDone: (c: ReportCaseJson) => void }) {
  const me = useMe();
  const [action, setAction] = useState("no_violation");
  const [note, setNote] = useState("");
  const [hours, setHours] = useState("24");
  const [hotline, setHotline] = useState("");
  const decide = useAction();
  const needsHotline = !!c.details.child_safety && action !== "no_violation";
  return (
    <form
      class="st-form"
      onSubmit={(e) => {
        e.preventDefault();
        void decide.run(async () => {
          const body: Record<string, unknown> = { action, note };
          if (action === "suspend") body.suspend_hours = Number(hours);
          if (needsHotline) body.hotline_reference = hotline.trim();
          onDone(await staffApi<ReportCaseJson>(me, "POST", `/staff/reports/${c.id}/decision`, { body }));
        });
      }}
    >
      <fieldset class="st-fieldset">
        <legend>Decision</legend>
        {ACTIONS.map(([value, label]) => (
          <div class="st-choice" key={value}>
            <input
              type="radio"
              id={`st-action-${value}`}
              name="action"
              value={value}
              checked={action === value}
              onChange={() => setAction(value)}
            />
            <label for={`st-action-${value}`}>{label}</label>
          </div>
        ))}
      </fieldset>
      {action === "suspend" && (
        <Field id="st-hours" label="Suspension (hours)" hint="1 to 8,760 hours.">
          <input
            id="st-hours"
            type="number"
            min={1}
            max={8760}
            required
            aria-describedby="st-hours-hint"
            value={hours}
            onInput={(e) => setHours(inputValue(e))}
          />
        </Field>
      )}
      {needsHotline && (
        <Field id="st-hotline" label="Hotline report reference" hint="Child-safety cases: the reference of the report you filed with the child-safety hotline (mandatory).">
          <input id="st-hotline" required maxLength={100} aria-describedby="st-hotline-hint" value={hotline} onInput={(e) => setHotline(inputValue(e))} />
        </Field>
      )}
      <Field id="st-note" label="Note" hint="Sent to the reporter and to the member acted on.">
        <textarea id="st-note" rows={3} maxLength={1000} aria-describedby="st-note-hint" value={note} onInput={(e) => setNote(inputValue(e))} />
      </Field>
      <ErrorBox error={decide.error} prefix="The decision was not recorded" />
      <button class="st-button st-primary" type="submit" disabled={decide.busy}>
        {decide.busy ? "Deciding…" : "Decide"}
      </button>
    </form>
  );
}

function AppealForm({ c, onDone }: { c: ReportCaseJson; onDone: (c: ReportCaseJson) => void }) {
  const me = useMe();
  const [uphold, setUphold] = useState<"uphold" | "overturn">("uphold");
  const [note, setNote] = useState("");
  const act = useAction();
  return (
    <form
      class="st-form"
      onSubmit={(e) => {
        e.preventDefault();
        void act.run(async () =>
          onDone(
            await staffApi<ReportCaseJson>(me, "POST", `/staff/reports/${c.id}/appeal-decision`, {
              body: { uphold: uphold === "uphold", note },
            }),
          ),
        );
      }}
    >
      <fieldset class="st-fieldset">
        <legend>Appeal decision</legend>
        <div class="st-choice">
          <input type="radio" id="st-uphold" name="appeal" checked={uphold === "uphold"} onChange={() => setUphold("uphold")} />
          <label for="st-uphold">Uphold the decision</label>
        </div>
        <div class="st-choice">
          <input type="radio" id="st-overturn" name="appeal" checked={uphold === "overturn"} onChange={() => setUphold("overturn")} />
          <label for="st-overturn">Overturn it (lifts a suspension or ban, deletes the strike)</label>
        </div>
      </fieldset>
      <Field id="st-appeal-note" label="Note" hint="Sent to the member who appealed.">
        <textarea id="st-appeal-note" rows={3} maxLength={1000} aria-describedby="st-appeal-note-hint" value={note} onInput={(e) => setNote(inputValue(e))} />
      </Field>
      <ErrorBox error={act.error} prefix="The appeal decision was not recorded" />
      <button class="st-button st-primary" type="submit" disabled={act.busy}>
        Decide the appeal
      </button>
    </form>
  );
}

export function CaseFacts({ c }: { c: ReportCaseJson }) {
  const d = c.details;
  return (
    <dl class="st-facts">
      <dt>Status</dt>
      <dd data-testid="case-status">{words(c.status)}</dd>
      <dt>Category</dt>
      <dd>
        {words(d.category)}
        {d.child_safety && <span class="st-badge st-badge-warn">child safety: mandatory hotline report</span>}
      </dd>
      <dt>Source</dt>
      <dd>{sourceWords(c)}</dd>
      {d.comment ? (
        <>
          <dt>Reporter's comment</dt>
          <dd class="st-pre">{d.comment}</dd>
        </>
      ) : null}
      {d.verdict && (
        <>
          <dt>Scanner verdict</dt>
          <dd>
            {words(d.verdict.action)}
            {d.verdict.category ? `, ${words(d.verdict.category)}` : ""}
            {d.verdict.fired?.length ? ` (fired: ${d.verdict.fired.join(", ")})` : ""}
          </dd>
        </>
      )}
      <dt>Conversation</dt>
      <dd>#{c.conversation_id ?? "—"}</dd>
      <dt>Reported messages</dt>
      <dd>{c.reported_messages.length}</dd>
      <dt>Assigned to</dt>
      <dd>{c.assigned_to_name ?? "nobody"}</dd>
      <dt>Opened</dt>
      <dd>{time(c.created_at)}</dd>
      {c.decision?.action && (
        <>
          <dt>Decision</dt>
          <dd>
            {words(c.decision.review ?? c.decision.action)}
            {c.decision.suspend_hours ? ` for ${c.decision.suspend_hours} h` : ""}
            {c.decision.decided_at ? `, ${time(c.decision.decided_at)}` : ""}
            {c.decision.note ? ` — “${c.decision.note}”` : ""}
          </dd>
        </>
      )}
      {c.decision?.appeal && (
        <>
          <dt>Appeal</dt>
          <dd class="st-pre">
            “{c.decision.appeal.statement}” ({time(c.decision.appeal.at)})
            {c.decision.appeal.upheld !== undefined && (c.decision.appeal.upheld ? " — upheld" : " — overturned")}
            {c.decision.appeal.note ? `: “${c.decision.appeal.note}”` : ""}
          </dd>
        </>
      )}
    </dl>
  );
}

export function Strikes({ c }: { c: ReportCaseJson }) {
  if (!c.strikes?.length) return null;
  return (
    <section class="st-panel" aria-labelledby="st-strikes">
      <h2 id="st-strikes">Active strikes of the members concerned</h2>
      <ul>
        {c.strikes.map((s) => (
          <li key={s.id}>
            Member #{s.user_id}: {words(s.category)} ({s.source}), until {time(s.expires_at)}
          </li>
        ))}
      </ul>
    </section>
  );
}

export function ClaimButton({ c, onDone }: { c: ReportCaseJson; onDone: (c: ReportCaseJson) => void }) {
  const me = useMe();
  const claim = useAction();
  return (
    <div class="st-actions">
      <button
        type="button"
        class="st-button st-primary"
        disabled={claim.busy}
        onClick={() => claim.run(async () => onDone(await staffApi<ReportCaseJson>(me, "POST", `/staff/reports/${c.id}/claim`)))}
      >
        {c.status === "appealed" ? "Take the appeal" : "Claim this case"}
      </button>
      <ErrorBox error={claim.error} prefix="Could not claim the case" />
    </div>
  );
}

export function ReportCase({ id }: { id: number }) {
  const me = useMe();
  const loaded = useLoad(() => staffApi<ReportCaseJson>(me, "GET", `/staff/reports/${id}`), [id]);
  const [done, setDone] = useState<string | null>(null);
  const c = loaded.data;
  const update = (next: ReportCaseJson, message: string) => {
    loaded.set(next);
    setDone(message);
  };
  const mine = c?.assigned_to === me.id;
  const live = c && (c.status === "open" || c.status === "appealed");
  return (
    <>
      <p class="st-back">
        <Link href="/staff/reports"><span aria-hidden="true">← </span>{me.role === "admin" ? "Report cases" : "Report queue"}</Link>
      </p>
      <PageTitle>Report case #{id}</PageTitle>
      <ErrorBox error={loaded.error} prefix="Could not load the case" />
      {!c && !loaded.error && <Loading what="the case" />}
      {c && (
        <>
          {done && <Notice tone="ok">{done}</Notice>}
          <CaseFacts c={c} />
          {c.details.held && c.status === "open" && (
            <Notice tone="warn">
              This case holds a message for review: release or refuse it in{" "}
              <Link href={`/staff/held/${c.id}`}>Held messages</Link>.
            </Notice>
          )}
          {me.role === "moderator" && live && !mine && <ClaimButton c={c} onDone={(n) => update(n, "You took this case.")} />}
          {me.role === "moderator" && (
            <ContextWindow caseId={c.id} reported={c.reported_messages} canRead={!!(mine && live)} />
          )}
          {me.role === "moderator" && mine && c.status === "open" && !c.details.held && (
            <section class="st-panel" aria-labelledby="st-decide">
              <h2 id="st-decide">Decide</h2>
              <DecideForm c={c} onDone={(n) => update(n, `Decided: ${words(n.decision.action)}. The people concerned are told.`)} />
            </section>
          )}
          {me.role === "moderator" && mine && c.status === "appealed" && (
            <section class="st-panel" aria-labelledby="st-appeal">
              <h2 id="st-appeal">Appeal</h2>
              <AppealForm c={c} onDone={(n) => update(n, `Appeal decided: ${n.decision.appeal?.upheld ? "upheld" : "overturned"}.`)} />
            </section>
          )}
          <Strikes c={c} />
        </>
      )}
    </>
  );
}
