// The transparency report (GET /transparency/report?format=json) drawn as cards, tables and bar
// charts made of SVG rects (attributes, no inline styles: the CSP forbids them), with every
// figure also written as text. Shared by the public page and the auditors' console.
import { useEffect, useState } from "preact/hooks";
import { api } from "../api";
import { type Check, fail, OK, type TreeHeadJson } from "../verify/sth";
import { fromHex } from "../verify/bytes";
import { parseProof, verifyConsistency } from "../verify/merkle";
import { Status } from "../verify/Status";
import { errorText, short, timeWords } from "../verify/words";
import "./public.css";

type Tally = Record<string, number>;
interface Share {
  count: number;
  fraction: number | null;
  percent: number | null;
}

export interface Report {
  format: string;
  period: string;
  from: string;
  to: string;
  tree_size: number;
  root: string | null;
  tree_head_signed_at: string | null;
  entries_considered: number;
  legal: {
    requests: number;
    by_country: Tally;
    by_process: Tally;
    accounts_specified: number;
    approved: number;
    with_data_disclosed: Share;
    disclosures: { packages: number; cases: number };
    refused: { total: number; by_rules: number; by_staff: number };
    emergency: { requests: number; approved: number };
    preservation: { requests: number; holds_set: number; extensions: number; released: number; accounts_preserved: number };
  };
  reports: {
    cases: number;
    messages_reported: number;
    by_category: Tally;
    decisions: { total: number; by_action: Tally };
    appeals: { decided: number; upheld: number; overturned: number };
  };
  content_access: {
    accesses: number;
    messages: number;
    by_case_type: Record<string, { accesses: number; messages: number; cases: number }>;
  };
  notifications: { sent: number; deferred: number };
  definitions: Record<string, string>;
}

const LABELS: Record<string, string> = {
  mlat: "MLAT",
  escalate_legal: "Escalate to legal",
  no_violation: "No violation found",
};

export function label(key: string): string {
  if (LABELS[key]) return LABELS[key];
  if (key !== key.toLowerCase()) return key;
  const words = key.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export function BarChart({ title, rows }: { title: string; rows: [string, number][] }) {
  const top = Math.max(0, ...rows.map(([, n]) => n));
  return (
    <figure class="tp-chart">
      <figcaption class="tp-chart-title">{title}</figcaption>
      {top === 0 ? (
        <p class="tp-chart-empty">None in this period.</p>
      ) : (
        <ul class="tp-bars">
          {rows.map(([name, n]) => {
            const width = n === 0 ? 0 : Math.max(1.5, (100 * n) / top);
            return (
              <li class="tp-bar-row" key={name}>
                <span class="tp-bar-label">{label(name)}</span>
                <svg class="tp-bar" viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true" focusable="false">
                  <rect class="tp-bar-track" x="0" y="0" width="100" height="10" />
                  <rect class="tp-bar-fill" x="0" y="0" width={width.toFixed(1)} height="10" />
                </svg>
                <span class="tp-bar-value">{n}</span>
              </li>
            );
          })}
        </ul>
      )}
    </figure>
  );
}

function Rows({ caption, rows }: { caption: string; rows: [string, string | number][] }) {
  return (
    <table class="tp-table">
      <caption>{caption}</caption>
      <tbody>
        {rows.map(([k, v]) => (
          <tr key={k}>
            <th scope="row">{k}</th>
            <td>{v}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

const percent = (s: Share): string => (s.percent === null ? "—" : `${s.percent}%`);
const plural = (n: number, noun: string): string => `${n} ${n === 1 ? noun.replace(/(es|s)$/, "") : noun}`;

/** Whether the report's (size, root) is a prefix of the signed log: a consistency proof to the head. */
export function useReportAnchor(report: Report | null, head: TreeHeadJson | null, headOk: boolean): Check | null {
  const [check, setCheck] = useState<Check | null>(null);
  useEffect(() => {
    setCheck(null);
    if (!report || !head || !headOk || !head.root) return;
    let live = true;
    (async () => {
      const reportRoot = fromHex(report.root, 32);
      const headRoot = fromHex(head.root, 32);
      if (!reportRoot || !headRoot) return fail("the report names no root to check");
      if (report.tree_size > head.size) return fail("the report covers more entries than the signed tree head");
      const { proof } = await api<{ proof: string[] }>("GET", "/transparency/proof/consistency", {
        query: { first: report.tree_size, second: head.size },
      });
      const parsed = parseProof(proof);
      if (!parsed) return fail("the consistency proof is malformed");
      return (await verifyConsistency(report.tree_size, head.size, reportRoot, headRoot, parsed))
        ? OK
        : fail("the report's root is not a prefix of the signed log");
    })()
      .catch((e) => fail(errorText(e)))
      .then((c) => live && setCheck(c));
    return () => {
      live = false;
    };
  }, [report, head, headOk]);
  return check;
}

export function ReportView({ report, anchor }: { report: Report; anchor: Check | null }) {
  const { legal, reports, content_access: access } = report;
  const byType = access.by_case_type;
  const cards: [string | number, string][] = [
    [legal.requests, "legal requests"],
    [legal.accounts_specified, "accounts specified"],
    [percent(legal.with_data_disclosed), "of legal requests with data disclosed"],
    [reports.cases, "user reports"],
    [access.accesses, "staff content accesses"],
    [access.messages, "messages read by staff"],
  ];
  return (
    <div class="tp-report">
      <p class="tp-report-meta">
        {report.from} to {report.to} (UTC). Counted from the first {report.tree_size} entries of the access log, root{" "}
        <code>{short(report.root)}</code>
        {report.tree_head_signed_at ? `, signed ${timeWords(report.tree_head_signed_at)}` : ""}.{" "}
        {report.tree_size > 0 && <Status check={anchor} okText="these entries are in the signed log" pending="Checking against the signed log…" />}
      </p>
      <ul class="tp-cards">
        {cards.map(([value, what]) => (
          <li class="tp-card" key={what}>
            <span class="tp-card-value">{value}</span> <span class="tp-card-label">{what}</span>
          </li>
        ))}
      </ul>
      <section aria-labelledby="tp-legal">
        <h3 id="tp-legal">Legal requests</h3>
        <div class="tp-grid">
          <Rows
            caption="Requests and outcomes"
            rows={[
              ["Requests received", legal.requests],
              ["Accounts specified", legal.accounts_specified],
              ["Approved (four eyes)", legal.approved],
              ["Requests with data disclosed", `${legal.with_data_disclosed.count} (${percent(legal.with_data_disclosed)})`],
              ["Disclosure packages produced", legal.disclosures.packages],
              ["Refused by the rules", legal.refused.by_rules],
              ["Refused by legal staff", legal.refused.by_staff],
              ["Emergency requests (approved)", `${legal.emergency.requests} (${legal.emergency.approved})`],
              ["Preservation requests", legal.preservation.requests],
              [
                "Preservation holds set / extended / released",
                `${legal.preservation.holds_set} / ${legal.preservation.extensions} / ${legal.preservation.released}`,
              ],
            ]}
          />
          <BarChart title="Legal requests by country" rows={Object.entries(legal.by_country)} />
          <BarChart title="Legal requests by legal process" rows={Object.entries(legal.by_process)} />
        </div>
      </section>
      <section aria-labelledby="tp-reports">
        <h3 id="tp-reports">Reports and moderation</h3>
        <div class="tp-grid">
          <Rows
            caption="Reports, decisions and appeals"
            rows={[
              ["Report cases opened", reports.cases],
              ["Messages reported", reports.messages_reported],
              ["Decisions", reports.decisions.total],
              ["Appeals decided", reports.appeals.decided],
              ["Appeals: decision upheld", reports.appeals.upheld],
              ["Appeals: decision overturned", reports.appeals.overturned],
            ]}
          />
          <BarChart title="Reports by category" rows={Object.entries(reports.by_category)} />
          <BarChart title="Moderation decisions by action" rows={Object.entries(reports.decisions.by_action)} />
        </div>
      </section>
      <section aria-labelledby="tp-access">
        <h3 id="tp-access">Staff access to content</h3>
        <div class="tp-grid">
          <Rows
            caption="Content accesses and notifications"
            rows={[
              ["Content accesses", access.accesses],
              ["Messages read", access.messages],
              ...Object.entries(byType).map(([kind, v]): [string, string] => [
                `${label(kind)} cases`,
                `${plural(v.accesses, "accesses")}, ${plural(v.messages, "messages")}, ${plural(v.cases, "cases")}`,
              ]),
              ["Members notified of an access", report.notifications.sent],
              ["Notifications deferred (non-disclosure order)", report.notifications.deferred],
            ]}
          />
          <BarChart title="Content accesses by case type" rows={Object.entries(byType).map(([k, v]) => [`${k} cases`, v.accesses])} />
          <BarChart title="Messages read by case type" rows={Object.entries(byType).map(([k, v]) => [`${k} cases`, v.messages])} />
        </div>
      </section>
      <details class="tp-definitions">
        <summary>How each figure is counted</summary>
        <dl>
          {Object.entries(report.definitions ?? {}).map(([k, v]) => (
            <div key={k}>
              <dt>
                <code>{k}</code>
              </dt>
              <dd>{v}</dd>
            </div>
          ))}
        </dl>
      </details>
    </div>
  );
}
