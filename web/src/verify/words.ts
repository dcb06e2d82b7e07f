// Plain words for what the verifiers and the API say.

import { ApiError } from "../api";

/** An error as a sentence a person can act on: the API's problem detail, else the message. */
export function errorText(error: unknown): string {
  if (error instanceof ApiError) {
    const p = error.problem;
    const detail = p.detail ?? p.title ?? `the server answered ${p.status}`;
    const head = p.title && p.detail && p.status !== 0 ? `${p.title}: ` : "";
    const retry = p.retry_after ? ` (try again in ${p.retry_after} s)` : "";
    return `${head}${detail}${retry}`;
  }
  if (error instanceof Error) return error.message;
  return String(error);
}

const TYPES: Record<string, string> = {
  case_opened: "Case opened",
  case_approved: "Case approved",
  case_refused: "Case refused",
  case_decided: "Case decided",
  content_accessed: "Staff read messages",
  disclosure_produced: "Data disclosed to an authority",
  notification_sent: "People concerned notified",
  notification_deferred: "Notification deferred (non-disclosure order)",
  preservation_set: "Preservation hold set",
  preservation_released: "Preservation hold released",
};

export function entryTypeWords(type: unknown): string {
  return typeof type === "string" ? (TYPES[type] ?? type.replace(/_/g, " ")) : "Unknown entry";
}

export function caseWords(c: unknown): string {
  if (!c || typeof c !== "object") return "no case";
  const { id, kind } = c as { id?: unknown; kind?: unknown };
  const what = kind === "report" ? "report case" : kind === "legal" ? "legal case" : `${String(kind)} case`;
  return `${what} #${String(id)}`;
}

export function timeWords(value: string | number | null | undefined): string {
  if (value === null || value === undefined) return "—";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function short(hex: string | null | undefined, n = 16): string {
  if (!hex) return "—";
  return hex.length > n ? `${hex.slice(0, n)}…` : hex;
}
