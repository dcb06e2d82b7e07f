// Words for errors, times and sizes, shared by every page.
import { ApiError } from "../api";

/** An error in words: the API's own `detail` (RFC 9457), never a blank. */
export function problemText(error: unknown): string {
  if (error instanceof ApiError) {
    const problem = error.problem;
    let text = problem.detail || problem.title || `the server answered ${problem.status}`;
    if (typeof problem.retry_after === "number" && problem.retry_after > 0 && !/try again/i.test(text)) {
      text += ` (try again in ${Math.ceil(problem.retry_after)} s)`;
    }
    return text;
  }
  if (error && typeof error === "object" && "problem" in error) {
    const problem = (error as { problem?: { detail?: string; title?: string } }).problem;
    if (problem?.detail || problem?.title) return String(problem.detail || problem.title);
  }
  if (error instanceof Error && error.message) return error.message;
  return "something went wrong";
}

export function isStatus(error: unknown, ...statuses: number[]): boolean {
  return error instanceof ApiError && statuses.includes(error.status);
}

export function formatTime(iso: string | null | undefined): string {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const now = new Date();
  const sameDay = date.toDateString() === now.toDateString();
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (sameDay) return time;
  const sameYear = date.getFullYear() === now.getFullYear();
  return `${date.toLocaleDateString([], { day: "numeric", month: "short", ...(sameYear ? {} : { year: "numeric" }) })} ${time}`;
}

export function formatDateTime(iso: string | null | undefined): string {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

export function formatDuration(seconds: number): string {
  const units: [number, string][] = [
    [86400 * 7, "week"],
    [86400, "day"],
    [3600, "hour"],
    [60, "minute"],
    [1, "second"],
  ];
  for (const [size, name] of units) {
    if (seconds >= size && seconds % size === 0) {
      const n = seconds / size;
      return `${n} ${name}${n === 1 ? "" : "s"}`;
    }
  }
  return `${seconds} seconds`;
}
