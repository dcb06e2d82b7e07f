// The one way the app talks to Keyhold's REST API: same origin, JSON in and out, errors as
// RFC 9457 problem+json turned into ApiError. Tokens are passed in by the caller (they live in
// memory only: see session.ts), never put in URLs.

export const API = "/api/v1";

export interface Problem {
  type?: string;
  title?: string;
  status: number;
  detail?: string;
  errors?: { field?: string; problem?: string; message?: string }[];
  retry_after?: number;
  [extra: string]: unknown;
}

export class ApiError extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail ?? problem.title ?? `HTTP ${problem.status}`);
  }
  get status(): number {
    return this.problem.status;
  }
}

export interface RequestOptions {
  token?: string | null;
  body?: unknown;
  /** A raw body (attachment upload, say): sent as is, with `contentType`. */
  raw?: Blob | ArrayBuffer | Uint8Array;
  contentType?: string;
  query?: Record<string, string | number | null | undefined>;
  signal?: AbortSignal;
}

export function apiUrl(path: string, query?: RequestOptions["query"]): string {
  const url = new URL(API + path, window.location.origin);
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value !== null && value !== undefined) url.searchParams.set(key, String(value));
  }
  return url.pathname + url.search;
}

/** A JSON request; resolves to the parsed body (undefined for 204), rejects with ApiError. */
export async function api<T = unknown>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json, application/problem+json" };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  let body: BodyInit | undefined;
  if (options.raw !== undefined) {
    body = options.raw as BodyInit;
    headers["content-type"] = options.contentType || "application/octet-stream";
  } else if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers["content-type"] = "application/json";
  }
  let response: Response;
  try {
    response = await fetch(apiUrl(path, options.query), { method, headers, body, signal: options.signal });
  } catch (error) {
    if (error instanceof DOMException && error.name === "AbortError") throw error;
    throw new ApiError({ status: 0, title: "Offline", detail: "Keyhold cannot be reached; check your connection." });
  }
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  let parsed: unknown = undefined;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!response.ok) {
    const problem: Problem =
      parsed && typeof parsed === "object"
        ? { status: response.status, ...(parsed as object) }
        : { status: response.status, title: response.statusText || "Error", detail: text.slice(0, 200) };
    const retry = response.headers.get("retry-after");
    if (retry && problem.retry_after === undefined) problem.retry_after = Number(retry);
    throw new ApiError(problem);
  }
  return parsed as T;
}
