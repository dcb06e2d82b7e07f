// Report periods (UTC), as src/keyhold/governance/transparency.py names them: 2026, 2026-H1|H2,
// 2026-Q1..Q4. A period's report is public once it has ended.

export interface Period {
  id: string;
  label: string;
  kind: "quarter" | "half" | "year";
  /** First day of the period (UTC), ms. */
  startMs: number;
  /** First day after the period (UTC), ms. */
  endMs: number;
}

function period(year: number, part: string | null): Period {
  let first = 0;
  let months = 12;
  let kind: Period["kind"] = "year";
  let label = `${year}`;
  if (part?.startsWith("H")) {
    first = 6 * (Number(part[1]) - 1);
    months = 6;
    kind = "half";
    label = `${part === "H1" ? "First" : "Second"} half of ${year}`;
  } else if (part?.startsWith("Q")) {
    first = 3 * (Number(part[1]) - 1);
    months = 3;
    kind = "quarter";
    label = `Quarter ${part[1]} of ${year}`;
  }
  return { id: part ? `${year}-${part}` : `${year}`, label, kind, startMs: Date.UTC(year, first, 1), endMs: Date.UTC(year, first + months, 1) };
}

/** Periods of `years` years back to now, newest end first; `ended` keeps only finished ones. */
export function periods(now = Date.now(), years = 3, ended = true): Period[] {
  const thisYear = new Date(now).getUTCFullYear();
  const out: Period[] = [];
  for (let y = thisYear; y > thisYear - years; y--) {
    for (const part of ["Q4", "Q3", "Q2", "Q1", "H2", "H1", null]) {
      const p = period(y, part);
      if (ended ? p.endMs <= now : p.startMs <= now) out.push(p);
    }
  }
  const rank = { quarter: 0, half: 1, year: 2 };
  return out.sort((a, b) => b.endMs - a.endMs || rank[a.kind] - rank[b.kind]);
}

/** The period of the latest report that is public: the most recently ended quarter. */
export function latestEnded(now = Date.now()): Period {
  return periods(now, 2, true)[0];
}
