// /transparency: the latest public transparency report (the most recently ended period; any
// other ended period on request) and the current signed tree head, verified in the browser.
import { useEffect, useMemo, useState } from "preact/hooks";
import { api } from "../api";
import { errorText } from "../verify/words";
import { HeadCard, useVerifiedHead } from "./head";
import { latestEnded, periods } from "./periods";
import { type Report, ReportView, useReportAnchor } from "./report";
import "./public.css";

/** Period picker + report; `token` (an auditor's) also opens running periods. */
export function ReportSection({
  token,
  head,
  headOk,
  headingLevel = 2,
  title = "Transparency report",
}: {
  title?: string;
  token?: string | null;
  head: ReturnType<typeof useVerifiedHead>["head"];
  headOk: boolean;
  headingLevel?: 2 | 3;
}) {
  const choices = useMemo(() => periods(Date.now(), 3, !token), [token]);
  const [period, setPeriod] = useState(() => (token ? choices[0].id : latestEnded().id));
  const [report, setReport] = useState<Report | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    setReport(null);
    setError(null);
    api<Report>("GET", "/transparency/report", { token: token ?? undefined, query: { period, format: "json" } })
      .then((r) => live && setReport(r))
      .catch((e) => live && setError(errorText(e)));
    return () => {
      live = false;
    };
  }, [period, token]);
  const anchor = useReportAnchor(report, head, headOk);
  const Heading = headingLevel === 2 ? "h2" : "h3";
  const groups: [string, string][] = [
    ["quarter", "Quarters"],
    ["half", "Half-years"],
    ["year", "Years"],
  ];
  const now = Date.now();
  return (
    <section class="tp-section" aria-labelledby="tp-report-title">
      <Heading id="tp-report-title">{title}</Heading>
      <div class="tp-period">
        <label for="tp-period-select">Period</label>
        <select id="tp-period-select" value={period} onChange={(e) => setPeriod((e.target as HTMLSelectElement).value)}>
          {groups.map(([kind, name]) => (
            <optgroup label={name} key={kind}>
              {choices
                .filter((p) => p.kind === kind)
                .map((p) => (
                  <option value={p.id} key={p.id}>
                    {p.label}
                    {p.endMs > now ? " (running)" : ""}
                  </option>
                ))}
            </optgroup>
          ))}
        </select>
        {!token && (
          <a class="tp-link" href={`/api/v1/transparency/report?period=${encodeURIComponent(period)}&format=html`}>
            This report as a standalone page
          </a>
        )}
      </div>
      {error && (
        <p class="tp-error" role="alert">
          Could not load the report: {error}
        </p>
      )}
      {!error && !report && <p class="tp-muted">Loading the report…</p>}
      {report && <ReportView report={report} anchor={anchor} />}
    </section>
  );
}

export default function TransparencyPage() {
  const verified = useVerifiedHead();
  useEffect(() => {
    document.title = "Transparency — Keyhold";
  }, []);
  return (
    <div class="tp-page">
      <header class="tp-header">
        <a class="tp-brand" href="/">
          Keyhold
        </a>
        <nav aria-label="Site">
          <a class="tp-link" href="/">
            Home
          </a>
        </nav>
      </header>
      <main class="tp-main" id="main">
        <h1>Transparency</h1>
        <p class="tp-lead">
          Keyhold staff read members' messages only under an approved report or legal case, and every read is written
          to a signed, append-only access log. This page shows what the log says for each period, and checks the log's
          current signed head in your browser.
        </p>
        <HeadCard verified={verified} />
        <ReportSection head={verified.head} headOk={!!verified.check?.ok} />
      </main>
    </div>
  );
}
