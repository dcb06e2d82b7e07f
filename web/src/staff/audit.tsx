// Auditors (and admins): browse the access log page by page, and verify it in the browser —
// the signed tree heads (Ed25519), the consistency between two heads (the log only grew), each
// entry's inclusion in the signed tree, and the whole log recomputed from its entries. Heads
// kept here live in memory for this tab only; paste one saved earlier to compare.
import { useState } from "preact/hooks";
import { HeadCard, useVerifiedHead } from "../public/head";
import { ReportSection } from "../public/TransparencyPage";
import { fetchAndCheckConsistency, MISMATCH } from "../verify/access";
import { fromHex, toHex, utf8 } from "../verify/bytes";
import { leafHash, parseProof, RootBuilder, verifyInclusion } from "../verify/merkle";
import { Status } from "../verify/Status";
import { type Check, checkTreeHead, fail, OK, type TreeHeadJson } from "../verify/sth";
import { caseWords, entryTypeWords, short } from "../verify/words";
import { ErrorBox, Field, inputValue, Loading, PageTitle, staffApi, time, useAction, useLoad, useMe } from "./common";

interface EntryRow {
  index: number;
  entry: string;
}

const PAGE = 25;
// Heads this tab has seen and verified (memory only), oldest first.
const kept: TreeHeadJson[] = [];

function keep(head: TreeHeadJson): boolean {
  if (kept.some((h) => h.size === head.size && h.root === head.root)) return false;
  kept.push(head);
  kept.sort((a, b) => a.size - b.size);
  return true;
}

function headLabel(h: TreeHeadJson): string {
  return `${h.size} entries, root ${short(h.root, 12)}, signed ${time(h.timestamp_ms ? new Date(h.timestamp_ms).toISOString() : null)}`;
}

function detailsWords(details: Record<string, unknown>): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(details)) {
    if (k === "case" || v === null || v === undefined || v === "") continue;
    if (typeof v === "object") {
      parts.push(`${k.replace(/_/g, " ")}: ${Array.isArray(v) ? v.join(", ") : k === "about" ? caseWords(v) : JSON.stringify(v)}`);
    } else parts.push(`${k.replace(/_/g, " ")}: ${String(v)}`);
  }
  return parts.join(" · ");
}

function parse(entry: string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(entry);
    return v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

function Heads({ current, pinned }: { current: TreeHeadJson | null; pinned: string | null }) {
  const [, setTick] = useState(0);
  const [pasted, setPasted] = useState("");
  const [pasteError, setPasteError] = useState<string | null>(null);
  const [older, setOlder] = useState("");
  const [newer, setNewer] = useState("");
  const [result, setResult] = useState<Check | null>(null);
  const act = useAction();
  const all = current && current.root && !kept.some((h) => h.size === current.size && h.root === current.root) ? [...kept, current] : kept;
  const key = (h: TreeHeadJson) => `${h.size}:${h.root}`;
  const find = (k: string) => all.find((h) => key(h) === k) ?? null;
  return (
    <section class="st-panel" aria-labelledby="au-heads">
      <h2 id="au-heads">Heads and consistency</h2>
      <p class="st-muted">
        Keep the current head, come back later (or paste a head saved elsewhere) and check that the newer head extends
        the older one: nothing in the log was changed or removed, only appended.
      </p>
      <div class="st-actions">
        <button
          type="button"
          class="st-button"
          disabled={!current?.root}
          onClick={() => {
            if (current) keep(current);
            setTick((t) => t + 1);
          }}
        >
          Keep the current head
        </button>
      </div>
      {kept.length > 0 && (
        <ul class="st-heads" aria-label="Kept heads (copy one to compare later)">
          {kept.map((h) => (
            <li key={key(h)}>
              <code class="st-hash">{JSON.stringify(h)}</code>
            </li>
          ))}
        </ul>
      )}
      <form
        class="st-form"
        onSubmit={async (e) => {
          e.preventDefault();
          setPasteError(null);
          let head: TreeHeadJson;
          try {
            head = JSON.parse(pasted) as TreeHeadJson;
          } catch {
            setPasteError("That is not JSON: paste a head as /api/v1/transparency/sth returns it.");
            return;
          }
          const check = await checkTreeHead(head, pinned);
          if (!check.ok) {
            setPasteError(check.reason);
            return;
          }
          keep(head);
          setPasted("");
          setTick((t) => t + 1);
        }}
      >
        <Field id="au-paste" label="A head saved earlier (JSON)">
          <textarea id="au-paste" rows={3} value={pasted} onInput={(e) => setPasted(inputValue(e))} />
        </Field>
        <ErrorBox error={pasteError} prefix="Head not added" />
        <button type="submit" class="st-button" disabled={!pasted.trim()}>
          Add this head
        </button>
      </form>
      <form
        class="st-form"
        onSubmit={(e) => {
          e.preventDefault();
          const a = find(older);
          const b = find(newer);
          if (!a || !b) return;
          setResult(null);
          void act.run(async () => setResult(await fetchAndCheckConsistency(a, b)));
        }}
      >
        <div class="st-row">
          <Field id="au-older" label="Older head">
            <select id="au-older" value={older} onChange={(e) => setOlder((e.currentTarget as HTMLSelectElement).value)}>
              <option value="">Choose a head</option>
              {all.map((h) => (
                <option value={key(h)} key={key(h)}>
                  {headLabel(h)}
                </option>
              ))}
            </select>
          </Field>
          <Field id="au-newer" label="Newer head">
            <select id="au-newer" value={newer} onChange={(e) => setNewer((e.currentTarget as HTMLSelectElement).value)}>
              <option value="">Choose a head</option>
              {all.map((h) => (
                <option value={key(h)} key={key(h)}>
                  {headLabel(h)}
                </option>
              ))}
            </select>
          </Field>
        </div>
        <button type="submit" class="st-button st-primary" disabled={!older || !newer || act.busy}>
          Check consistency
        </button>
      </form>
      <ErrorBox error={act.error} prefix="Could not check" />
      {result && (
        <p aria-live="polite" data-testid="consistency-result">
          <Status check={result} okText="consistent: the newer head extends the older one" />
        </p>
      )}
    </section>
  );
}

function WholeLog({ head }: { head: TreeHeadJson | null }) {
  const me = useMe();
  const [progress, setProgress] = useState<string | null>(null);
  const [result, setResult] = useState<Check | null>(null);
  const act = useAction();
  const run = () =>
    act.run(async () => {
      setResult(null);
      if (!head?.root) {
        setResult(fail("there is no signed tree head to check against"));
        return;
      }
      const headRoot = fromHex(head.root, 32)!;
      const tree = new RootBuilder();
      const checkpoints = new Map(kept.filter((h) => h.size <= head.size).map((h) => [h.size, h]));
      let start = 0;
      while (start < head.size) {
        const page = await staffApi<{ items: EntryRow[]; next_start: number }>(me, "GET", "/transparency/entries", {
          query: { start, limit: 1000 },
        });
        if (page.items.length === 0) {
          setResult(fail(`the server stopped at entry ${start} of ${head.size}`));
          return;
        }
        for (const item of page.items) {
          if (item.index !== tree.size) {
            setResult(fail(`entry ${tree.size} is missing: the server sent entry ${item.index} in its place`));
            return;
          }
          const entry = parse(item.entry);
          if (!entry || entry.idx !== item.index) {
            setResult(fail(`entry ${item.index} is not a log entry naming its own index`));
            return;
          }
          await tree.append(utf8(item.entry));
          const saved = checkpoints.get(tree.size);
          if (saved && toHex(await tree.root()) !== saved.root) {
            setResult(fail(`entries 0..${tree.size - 1} do not hash to the root of the head you kept at that size: the log was rewritten`));
            return;
          }
        }
        start = page.next_start;
        setProgress(`Checked ${tree.size} of ${head.size} entries…`);
      }
      const root = await tree.root();
      setProgress(`Checked ${tree.size} of ${head.size} entries.`);
      setResult(toHex(root) === toHex(headRoot) ? OK : fail(`the ${head.size} entries do not hash to the signed root`));
    });
  return (
    <section class="st-panel" aria-labelledby="au-whole">
      <h2 id="au-whole">Recompute the whole log</h2>
      <p class="st-muted">Fetches every entry the current head covers and recomputes its Merkle root here (and the root of every head you kept).</p>
      <button type="button" class="st-button st-primary" disabled={act.busy || !head?.root} onClick={run}>
        {act.busy ? "Verifying…" : "Verify every entry against the signed head"}
      </button>
      {progress && (
        <p class="st-muted" role="status">
          {progress}
        </p>
      )}
      <ErrorBox error={act.error} prefix="Could not verify" />
      {result && (
        <p data-testid="whole-log-result">
          <Status check={result} okText={`all ${head?.size} entries match the signed root`} />
        </p>
      )}
    </section>
  );
}

function Browse({ head }: { head: TreeHeadJson | null }) {
  const me = useMe();
  const [start, setStart] = useState(0);
  const [goto, setGoto] = useState("");
  const [checks, setChecks] = useState<Record<number, Check>>({});
  const size = head?.size ?? 0;
  const page = useLoad(
    () => staffApi<{ items: EntryRow[]; next_start: number }>(me, "GET", "/transparency/entries", { query: { start, limit: PAGE } }),
    [start, size],
  );
  const act = useAction();
  const items = page.data?.items ?? [];
  const checkPage = () =>
    act.run(async () => {
      if (!head?.root) return;
      const root = fromHex(head.root, 32)!;
      const out: Record<number, Check> = {};
      for (const item of items) {
        if (item.index >= head.size) {
          out[item.index] = fail("appended after the current head: check again later");
          continue;
        }
        const { proof } = await staffApi<{ proof: string[] }>(me, "GET", "/transparency/proof/inclusion", {
          query: { index: item.index, size: head.size },
        });
        const parsed = parseProof(proof);
        out[item.index] = !parsed
          ? fail("the inclusion proof is malformed")
          : (await verifyInclusion(await leafHash(utf8(item.entry)), item.index, head.size, parsed, root))
            ? OK
            : fail(MISMATCH);
      }
      setChecks(out);
    });
  const last = Math.max(0, size - 1);
  return (
    <section class="st-panel" aria-labelledby="au-browse">
      <h2 id="au-browse">Entries</h2>
      <div class="st-toolbar">
        <button type="button" class="st-button" disabled={start === 0} onClick={() => setStart(Math.max(0, start - PAGE))}>
          Previous page
        </button>
        <span class="st-muted" role="status">
          {items.length ? `Entries ${items[0].index}–${items[items.length - 1].index} of ${size}` : `No entries from ${start}`}
        </span>
        <button type="button" class="st-button" disabled={start + PAGE >= size} onClick={() => setStart(start + PAGE)}>
          Next page
        </button>
        <form
          class="st-inline-form"
          onSubmit={(e) => {
            e.preventDefault();
            const n = Number(goto);
            if (Number.isInteger(n) && n >= 0) setStart(Math.min(n, last) - (Math.min(n, last) % PAGE));
          }}
        >
          <label for="au-goto">Go to entry</label>
          <input id="au-goto" type="number" min={0} max={last} value={goto} onInput={(e) => setGoto(inputValue(e))} />
          <button type="submit" class="st-button">
            Go
          </button>
        </form>
        <button type="button" class="st-button st-primary" disabled={act.busy || !items.length || !head?.root} onClick={checkPage}>
          {act.busy ? "Checking…" : "Check this page's inclusion proofs"}
        </button>
      </div>
      <ErrorBox error={page.error} prefix="Could not load entries" />
      <ErrorBox error={act.error} prefix="Could not check" />
      {page.loading && !page.data ? (
        <Loading what="entries" />
      ) : (
        <ol class="st-entries">
          {items.map((item) => {
            const entry = parse(item.entry);
            const details = (entry?.details ?? {}) as Record<string, unknown>;
            const subjects = Array.isArray(entry?.subjects) ? entry!.subjects.length : 0;
            return (
              <li key={item.index} class="st-entry" data-index={item.index}>
                <div class="st-entry-head">
                  <span class="st-entry-index">#{item.index}</span>
                  <strong>{entryTypeWords(entry?.type)}</strong>
                  <span>{caseWords(details.case ?? details.about)}</span>
                  <time dateTime={String(entry?.time ?? "")}>{time(String(entry?.time ?? ""))}</time>
                  {checks[item.index] && <Status check={checks[item.index]} okText="in the signed tree" />}
                </div>
                <p class="st-entry-details">
                  {detailsWords(details) || "no details"}
                  {subjects > 0 && ` · ${subjects} member block${subjects === 1 ? "" : "s"}`}
                </p>
              </li>
            );
          })}
        </ol>
      )}
    </section>
  );
}

export function AuditLog() {
  const verified = useVerifiedHead();
  return (
    <>
      <PageTitle>Access log</PageTitle>
      <p class="st-muted">Every governed act, in order. Everything below is checked in this browser; nothing trusts the server's word.</p>
      <div class="st-toolbar">
        <button type="button" class="st-button" onClick={() => void verified.reload()}>
          Fetch the newest head
        </button>
      </div>
      <HeadCard verified={verified} />
      <Heads current={verified.check?.ok ? verified.head : null} pinned={verified.key} />
      <WholeLog head={verified.check?.ok ? verified.head : null} />
      <Browse head={verified.check?.ok ? verified.head : null} />
    </>
  );
}

export function AuditReport() {
  const me = useMe();
  const verified = useVerifiedHead();
  return (
    <>
      <PageTitle>Transparency report</PageTitle>
      <p class="st-muted">As an {me.role}, you can also see the report of a period still running; it changes with every new case.</p>
      <ReportSection title="Figures of a period" token={me.token} head={verified.head} headOk={!!verified.check?.ok} />
      <HeadCard verified={verified} />
    </>
  );
}

