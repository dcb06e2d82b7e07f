// Legal staff: intake of a law-enforcement request (the rules are checked by the server when it
// is recorded; a refused request is still recorded, as refused, with the rule's reason, shown
// here), four-eyes approval by a second legal staff member, refusal, preservation extension and
// release, and fulfilment as a signed disclosure package, checked in the browser and downloaded.
import { useEffect, useState } from "preact/hooks";
import { toBase64 } from "../verify/bytes";
import { checkPackage, type DisclosurePackage } from "../verify/package";
import { Status } from "../verify/Status";
import { type Check, fetchServiceKey } from "../verify/sth";
import { ErrorBox, Field, inputValue, Link, Loading, navigate, Notice, PageTitle, staffApi, time, useAction, useLoad, useMe, words } from "./common";

export interface LegalCaseJson {
  id: number;
  kind: "legal";
  region: string;
  status: string;
  created_at: string;
  expires_at: string | null;
  created_by: number;
  created_by_name: string | null;
  approved_by: number | null;
  approved_by_name: string | null;
  targets: string[];
  details: {
    agency: string;
    officer: string;
    contact: string;
    country: string;
    process: string;
    categories: string[];
    date_from: string;
    date_to: string;
    justification: string;
    nondisclosure_until_ms: number;
    document_sha256: string;
    ruling: string;
  };
  decision: { refused?: string; by?: number };
}

const PROCESSES: [string, string][] = [
  ["subpoena", "Subpoena"],
  ["court_order", "Court order"],
  ["search_warrant", "Search warrant"],
  ["emergency", "Emergency (imminent risk of death or serious injury)"],
  ["preservation", "Preservation (freeze deletion; discloses nothing)"],
  ["mlat", "MLAT (mutual legal assistance treaty)"],
];

const CATEGORIES: [string, string][] = [
  ["subscriber_info", "Subscriber information (needs at least a subpoena)"],
  ["connection_logs", "Connection logs (needs at least a subpoena)"],
  ["conversation_metadata", "Conversation metadata (needs at least a court order)"],
  ["message_content", "Message content (needs a search warrant or an MLAT)"],
];

// A refused case from the intake just submitted: the next screen announces it.
let justRecorded: { id: number; refused: boolean } | null = null;

export function LegalList() {
  const me = useMe();
  const [status, setStatus] = useState("");
  const list = useLoad(
    () => staffApi<{ items: LegalCaseJson[] }>(me, "GET", "/staff/legal", { query: { status: status || undefined, limit: 200 } }),
    [status],
  );
  const items = list.data?.items ?? [];
  return (
    <>
      <PageTitle>Legal cases</PageTitle>
      <p class="st-muted">
        Law-enforcement requests for region {me.region}. A case is approved by a second legal staff member, never by
        the person who recorded it.
      </p>
      <div class="st-toolbar">
        <div class="st-field st-inline">
          <label for="st-legal-status">Show</label>
          <select id="st-legal-status" value={status} onChange={(e) => setStatus((e.currentTarget as HTMLSelectElement).value)}>
            <option value="">All</option>
            <option value="pending">Pending approval</option>
            <option value="approved">Approved</option>
            <option value="refused">Refused</option>
            <option value="closed">Closed</option>
          </select>
        </div>
        <Link href="/staff/legal/new" class="st-button st-primary">
          Record a new request
        </Link>
      </div>
      <ErrorBox error={list.error} prefix="Could not load the cases" />
      {list.loading && !list.data && <Loading what="cases" />}
      {list.data && items.length === 0 && <p class="st-muted">No legal case here.</p>}
      {items.length > 0 && (
        <div class="st-table-wrap">
          <table class="st-table">
            <caption class="st-sr">Legal cases</caption>
            <thead>
              <tr>
                <th scope="col">Case</th>
                <th scope="col">Agency</th>
                <th scope="col">Process</th>
                <th scope="col">Status</th>
                <th scope="col">Recorded by</th>
                <th scope="col">Recorded</th>
              </tr>
            </thead>
            <tbody>
              {[...items].reverse().map((c) => (
                <tr key={c.id}>
                  <th scope="row">
                    <Link href={`/staff/legal/${c.id}`}>Case #{c.id}</Link>
                  </th>
                  <td data-label="Agency">{c.details.agency}</td>
                  <td data-label="Process">{words(c.details.process)}</td>
                  <td data-label="Status">{words(c.status)}</td>
                  <td data-label="Recorded by">{c.created_by_name ?? `#${c.created_by}`}</td>
                  <td data-label="Recorded">{time(c.created_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}

const today = () => new Date().toISOString().slice(0, 10);

export function LegalIntake() {
  const me = useMe();
  const [form, setForm] = useState({
    agency: "",
    officer: "",
    contact: "",
    country: me.region === "us" ? "US" : "",
    process: "subpoena",
    targets: "",
    date_from: "",
    date_to: today(),
    justification: "",
    nondisclosure_until: "",
  });
  const [categories, setCategories] = useState<string[]>([]);
  const [file, setFile] = useState<File | null>(null);
  const submit = useAction();
  const set = (key: keyof typeof form) => (e: Event) => setForm({ ...form, [key]: inputValue(e) });
  const fieldErrors = (submit.problem?.problem.errors ?? []).map((e) => `${e.field ?? "request"}: ${e.message ?? (e as { problem?: string }).problem ?? "invalid"}`);
  return (
    <>
      <p class="st-back">
        <Link href="/staff/legal"><span aria-hidden="true">← </span>Legal cases</Link>
      </p>
      <PageTitle>Record a legal request</PageTitle>
      <p class="st-muted">
        The rules are checked when the request is recorded: a request they refuse is recorded as refused, with the
        reason, and the access log shows it refused by the rules.
      </p>
      <form
        class="st-form st-intake"
        onSubmit={(e) => {
          e.preventDefault();
          void submit.run(async () => {
            if (!file) throw new Error("Attach the legal process document.");
            const document_base64 = toBase64(new Uint8Array(await file.arrayBuffer()));
            const targets = form.targets.split(/[\s,;]+/).map((t) => t.trim().replace(/^@/, "")).filter(Boolean);
            const body: Record<string, unknown> = {
              agency: form.agency.trim(),
              officer: form.officer.trim(),
              contact: form.contact.trim(),
              country: form.country.trim().toUpperCase(),
              process: form.process,
              targets,
              date_from: form.date_from,
              date_to: form.date_to,
              categories: form.process === "preservation" ? [] : categories,
              justification: form.justification,
              document_name: file.name.slice(0, 200) || "request.pdf",
              document_base64,
            };
            if (form.nondisclosure_until) body.nondisclosure_until = form.nondisclosure_until;
            const created = await staffApi<LegalCaseJson>(me, "POST", "/staff/legal", { body });
            justRecorded = { id: created.id, refused: created.status === "refused" };
            navigate(`/staff/legal/${created.id}`);
          });
        }}
      >
        <fieldset class="st-fieldset">
          <legend>Who asks</legend>
          <Field id="lg-agency" label="Agency">
            <input id="lg-agency" required maxLength={200} value={form.agency} onInput={set("agency")} />
          </Field>
          <Field id="lg-officer" label="Officer">
            <input id="lg-officer" required maxLength={200} value={form.officer} onInput={set("officer")} />
          </Field>
          <Field id="lg-contact" label="Contact (e-mail or phone)">
            <input id="lg-contact" required maxLength={200} value={form.contact} onInput={set("contact")} />
          </Field>
          <Field id="lg-country" label="Country of the requesting authority" hint="ISO 3166 two-letter code, e.g. US, FR, DE.">
            <input
              id="lg-country"
              required
              minLength={2}
              maxLength={2}
              pattern="[A-Za-z]{2}"
              autoCapitalize="characters"
              aria-describedby="lg-country-hint"
              value={form.country}
              onInput={set("country")}
            />
          </Field>
        </fieldset>
        <fieldset class="st-fieldset">
          <legend>What is asked</legend>
          <Field id="lg-process" label="Legal process">
            <select id="lg-process" value={form.process} onChange={set("process")}>
              {PROCESSES.map(([v, l]) => (
                <option value={v} key={v}>
                  {l}
                </option>
              ))}
            </select>
          </Field>
          <Field id="lg-targets" label="Target accounts" hint={`Usernames in region ${me.region}, separated by commas or spaces (1 to 100).`}>
            <input id="lg-targets" required aria-describedby="lg-targets-hint" value={form.targets} onInput={set("targets")} />
          </Field>
          <div class="st-row">
            <Field id="lg-from" label="From (UTC day, included)">
              <input id="lg-from" type="date" required value={form.date_from} onInput={set("date_from")} />
            </Field>
            <Field id="lg-to" label="To (UTC day, included)">
              <input id="lg-to" type="date" required value={form.date_to} onInput={set("date_to")} />
            </Field>
          </div>
          {form.process !== "preservation" ? (
            <fieldset class="st-fieldset st-nested">
              <legend>Data categories</legend>
              {CATEGORIES.map(([value, label]) => (
                <div class="st-choice" key={value}>
                  <input
                    type="checkbox"
                    id={`lg-cat-${value}`}
                    checked={categories.includes(value)}
                    onChange={(e) =>
                      setCategories((e.currentTarget as HTMLInputElement).checked ? [...categories, value] : categories.filter((c) => c !== value))
                    }
                  />
                  <label for={`lg-cat-${value}`}>{label}</label>
                </div>
              ))}
            </fieldset>
          ) : (
            <p class="st-muted">A preservation request names no data categories: it freezes deletion for 90 days once approved.</p>
          )}
          <Field
            id="lg-justification"
            label="Justification"
            hint="Required for an emergency request: 40 or more characters on the imminent risk of death or serious injury."
          >
            <textarea
              id="lg-justification"
              rows={3}
              maxLength={4000}
              required={form.process === "emergency"}
              aria-describedby="lg-justification-hint"
              value={form.justification}
              onInput={set("justification")}
            />
          </Field>
          <Field id="lg-nondisclosure" label="Non-disclosure order until (optional)" hint="The people concerned are told nothing before this day.">
            <input id="lg-nondisclosure" type="date" aria-describedby="lg-nondisclosure-hint" value={form.nondisclosure_until} onInput={set("nondisclosure_until")} />
          </Field>
          <Field id="lg-document" label="Legal process document" hint="Up to 20 MiB; stored sealed, its SHA-256 recorded.">
            <input
              id="lg-document"
              type="file"
              required
              aria-describedby="lg-document-hint"
              onChange={(e) => setFile((e.currentTarget as HTMLInputElement).files?.[0] ?? null)}
            />
          </Field>
        </fieldset>
        <ErrorBox error={submit.error} prefix="The request was not recorded" />
        {fieldErrors.length > 1 && (
          <ul class="st-error-list">
            {fieldErrors.map((f) => (
              <li key={f}>{f}</li>
            ))}
          </ul>
        )}
        <button class="st-button st-primary" type="submit" disabled={submit.busy}>
          {submit.busy ? "Recording…" : "Record the request"}
        </button>
      </form>
    </>
  );
}

function packageUrl(pkg: DisclosurePackage): string {
  const blob = new Blob([JSON.stringify(pkg, null, 2) + "\n"], { type: "application/json" });
  return URL.createObjectURL(blob);
}

function Disclosure({ c }: { c: LegalCaseJson }) {
  const me = useMe();
  const act = useAction();
  const [result, setResult] = useState<{ pkg: DisclosurePackage; check: Check; url: string } | null>(null);
  useEffect(() => () => result && URL.revokeObjectURL(result.url), [result]);
  return (
    <section class="st-panel" aria-labelledby="lg-disclose">
      <h2 id="lg-disclose">Disclosure</h2>
      <p class="st-muted">
        Builds the signed package of the granted categories, for the targets and dates only. Every message it contains
        is written to the access log before it is opened. Keyhold keeps no copy: download it now.
      </p>
      <button
        type="button"
        class="st-button st-primary"
        disabled={act.busy}
        onClick={() =>
          act.run(async () => {
            const pkg = await staffApi<DisclosurePackage>(me, "POST", `/staff/legal/${c.id}/disclosure`);
            const check = await checkPackage(pkg, await fetchServiceKey());
            if (result) URL.revokeObjectURL(result.url);
            setResult({ pkg, check, url: packageUrl(pkg) });
          })
        }
      >
        {act.busy ? "Building the package…" : "Produce the disclosure package"}
      </button>
      <ErrorBox error={act.error} prefix="No package" />
      {result && (
        <div class="st-package" aria-live="polite">
          <p>
            Package signature: <Status check={result.check} okText="signed by the service key; every section matches" />
          </p>
          <p class="st-hash">SHA-256 {result.pkg.signature.sha256}</p>
          <p>
            Sections:{" "}
            {Object.entries((result.pkg.manifest.counts ?? {}) as Record<string, unknown>)
              .map(([k, v]) => `${words(k)} (${typeof v === "number" ? v : Object.entries(v as object).map(([a, b]) => `${a} ${b}`).join(", ")})`)
              .join("; ") || "none"}
          </p>
          <a class="st-button" href={result.url} download={`keyhold-case-${c.id}-package.json`}>
            Download the signed package
          </a>
        </div>
      )}
    </section>
  );
}

export function LegalCase({ id }: { id: number }) {
  const me = useMe();
  const loaded = useLoad(() => staffApi<LegalCaseJson>(me, "GET", `/staff/legal/${id}`), [id]);
  const [announce] = useState(() => {
    const r = justRecorded && justRecorded.id === id ? justRecorded : null;
    justRecorded = null;
    return r;
  });
  const [done, setDone] = useState<string | null>(null);
  const [reason, setReason] = useState("");
  const act = useAction();
  const c = loaded.data;
  const post = (what: string, message: string, body?: unknown) =>
    act.run(async () => {
      loaded.set(await staffApi<LegalCaseJson>(me, "POST", `/staff/legal/${id}/${what}`, { body }));
      setDone(message);
    });
  const d = c?.details;
  const mineToApprove = c && c.created_by === me.id;
  const preservation = d?.process === "preservation";
  const expired = !!(c?.expires_at && new Date(c.expires_at).getTime() <= Date.now());
  return (
    <>
      <p class="st-back">
        <Link href="/staff/legal"><span aria-hidden="true">← </span>Legal cases</Link>
      </p>
      <PageTitle>Legal case #{id}</PageTitle>
      <ErrorBox error={loaded.error} prefix="Could not load the case" />
      {!c && !loaded.error && <Loading what="the case" />}
      {c && d && (
        <>
          {announce && !announce.refused && <Notice tone="ok">Recorded. It waits for a second legal staff member's approval.</Notice>}
          {c.status === "refused" && (
            <div class="st-refusal" role={announce?.refused ? "alert" : undefined}>
              <h2 class="st-refusal-title">{c.decision.by ? "Refused by legal staff" : "Refused by the rules"}</h2>
              <p class="st-refusal-reason" data-testid="refusal-reason">
                {c.decision.refused ?? d.ruling}
              </p>
              {!c.decision.by && (
                <p class="st-muted">The request is recorded as refused; the access log shows it refused by the rules. Nothing is disclosed.</p>
              )}
            </div>
          )}
          {done && <Notice tone="ok">{done}</Notice>}
          <dl class="st-facts">
            <dt>Status</dt>
            <dd data-testid="case-status">
              {words(c.status)}
              {expired && c.status === "approved" ? " (expired)" : ""}
            </dd>
            <dt>Legal process</dt>
            <dd>{words(d.process)}</dd>
            <dt>Agency</dt>
            <dd>
              {d.agency} ({d.country}), {d.officer}, {d.contact}
            </dd>
            <dt>Targets</dt>
            <dd>{c.targets.join(", ")}</dd>
            <dt>Dates</dt>
            <dd>
              {d.date_from} to {d.date_to} (UTC)
            </dd>
            <dt>Data categories</dt>
            <dd>{d.categories.length ? d.categories.map(words).join(", ") : "none"}</dd>
            <dt>The rules say</dt>
            <dd>{d.ruling}</dd>
            {d.justification && (
              <>
                <dt>Justification</dt>
                <dd class="st-pre">{d.justification}</dd>
              </>
            )}
            {d.nondisclosure_until_ms > 0 && (
              <>
                <dt>Non-disclosure until</dt>
                <dd>{time(new Date(d.nondisclosure_until_ms).toISOString())}</dd>
              </>
            )}
            <dt>Document SHA-256</dt>
            <dd class="st-hash">{d.document_sha256}</dd>
            <dt>Recorded</dt>
            <dd>
              {time(c.created_at)} by {c.created_by_name ?? `#${c.created_by}`}
            </dd>
            <dt>Approved by</dt>
            <dd>{c.approved_by_name ?? "—"}</dd>
            <dt>Expires</dt>
            <dd>{time(c.expires_at)}</dd>
          </dl>
          {c.status === "pending" && (
            <section class="st-panel" aria-labelledby="lg-decide">
              <h2 id="lg-decide">Approval (four eyes)</h2>
              {mineToApprove ? (
                <Notice tone="warn">You recorded this case: a second legal staff member must approve it.</Notice>
              ) : (
                <div class="st-actions">
                  <button type="button" class="st-button st-primary" disabled={act.busy} onClick={() => post("approve", "Approved.")}>
                    Approve
                  </button>
                </div>
              )}
              <form
                class="st-form"
                onSubmit={(e) => {
                  e.preventDefault();
                  void post("refuse", "Refused.", { reason: reason.trim() });
                }}
              >
                <Field id="lg-refuse-reason" label="Reason for refusing">
                  <textarea id="lg-refuse-reason" rows={2} required maxLength={2000} value={reason} onInput={(e) => setReason(inputValue(e))} />
                </Field>
                <button type="submit" class="st-button st-danger" disabled={act.busy}>
                  Refuse
                </button>
              </form>
            </section>
          )}
          {c.status === "approved" && preservation && (
            <section class="st-panel" aria-labelledby="lg-hold">
              <h2 id="lg-hold">Preservation hold</h2>
              <p class="st-muted">Deletion of the targets' data is frozen until {time(c.expires_at)}. It can be extended once by 90 days.</p>
              <div class="st-actions">
                <button type="button" class="st-button" disabled={act.busy} onClick={() => post("extend", "Extended by 90 days.")}>
                  Extend by 90 days
                </button>
                <button type="button" class="st-button st-danger" disabled={act.busy} onClick={() => post("release", "Released: what the hold kept is destroyed.")}>
                  Release the hold
                </button>
              </div>
            </section>
          )}
          <ErrorBox error={act.error} prefix="Not done" />
          {c.status === "approved" && !preservation && <Disclosure c={c} />}
        </>
      )}
    </>
  );
}
