// Pieces every console screen uses: the signed-in staff member, API calls that end the session
// on 401, navigation inside /staff, form fields with labels, and errors in words.
import type { ComponentChildren } from "preact";
import { createContext } from "preact";
import { useCallback, useContext, useEffect, useRef, useState } from "preact/hooks";
import { api, ApiError, type RequestOptions } from "../api";
import { staffSession } from "../session";
import { errorText } from "../verify/words";

export interface StaffMe {
  id: number;
  username: string;
  role: "moderator" | "legal" | "auditor" | "admin";
  region: string;
  token: string;
  expires_at?: string;
}

export const MeContext = createContext<StaffMe | null>(null);

export function useMe(): StaffMe {
  const me = useContext(MeContext);
  if (!me) throw new Error("not signed in");
  return me;
}

export const sessionEnded = { message: "" };

/** An API call with the staff token; a 401 (session over) signs the console out. */
export async function staffApi<T>(me: StaffMe, method: string, path: string, options: Omit<RequestOptions, "token"> = {}): Promise<T> {
  try {
    return await api<T>(method, path, { ...options, token: me.token });
  } catch (error) {
    if (error instanceof ApiError && error.status === 401 && staffSession.get()?.token === me.token) {
      sessionEnded.message = "Your staff session has ended (it lasts one hour). Sign in again.";
      staffSession.set(null);
    }
    throw error;
  }
}

// -- navigation inside /staff ----------------------------------------------------------------------

const listeners = new Set<() => void>();
window.addEventListener("popstate", () => listeners.forEach((l) => l()));

export function navigate(path: string): void {
  if (window.location.pathname === path) return;
  window.history.pushState(null, "", path);
  listeners.forEach((l) => l());
}

export function usePath(): string {
  const [path, setPath] = useState(window.location.pathname);
  useEffect(() => {
    const update = () => setPath(window.location.pathname);
    listeners.add(update);
    return () => {
      listeners.delete(update);
    };
  }, []);
  return path;
}

/** A link inside the console: a real <a href> (keyboard, new tab), routed without a reload. */
export function Link({ href, children, class: cls, current }: { href: string; children: ComponentChildren; class?: string; current?: boolean }) {
  return (
    <a
      href={href}
      class={cls}
      aria-current={current ? "page" : undefined}
      onClick={(e) => {
        if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
        e.preventDefault();
        navigate(href);
      }}
    >
      {children}
    </a>
  );
}

/** The page's heading; it takes focus when the screen changes, so keyboard and screen reader users land on it. */
export function PageTitle({ children }: { children: ComponentChildren }) {
  const ref = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    ref.current?.focus();
  }, []);
  return (
    <h1 class="st-title" tabIndex={-1} ref={ref}>
      {children}
    </h1>
  );
}

// -- async state ----------------------------------------------------------------------------------

export interface Loadable<T> {
  data: T | null;
  error: string | null;
  loading: boolean;
  reload: () => void;
  set: (value: T) => void;
}

export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): Loadable<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setLoading(true);
    setError(null);
    load()
      .then((d) => live && setData(d))
      .catch((e) => live && setError(errorText(e)))
      .finally(() => live && setLoading(false));
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data, error, loading, reload, set: setData };
}

/** Run one action at a time; its error is kept in words for the screen. */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [problem, setProblem] = useState<ApiError | null>(null);
  const run = useCallback(async <T,>(action: () => Promise<T>): Promise<T | undefined> => {
    setBusy(true);
    setError(null);
    setProblem(null);
    try {
      return await action();
    } catch (e) {
      setError(errorText(e));
      if (e instanceof ApiError) setProblem(e);
      return undefined;
    } finally {
      setBusy(false);
    }
  }, []);
  return { run, busy, error, problem, clear: () => setError(null) };
}

// -- bits of UI ------------------------------------------------------------------------------------

export function ErrorBox({ error, prefix }: { error: string | null; prefix?: string }) {
  if (!error) return null;
  return (
    <p class="st-error" role="alert">
      {prefix ? `${prefix}: ` : ""}
      {error}
    </p>
  );
}

export function Notice({ children, tone = "info" }: { children: ComponentChildren; tone?: "info" | "ok" | "warn" }) {
  return (
    <p class={`st-notice st-notice-${tone}`} role="status">
      {children}
    </p>
  );
}

export function Loading({ what }: { what: string }) {
  return <p class="st-muted">Loading {what}…</p>;
}

export function Field({
  id,
  label,
  hint,
  children,
}: {
  id: string;
  label: string;
  hint?: string;
  children: ComponentChildren;
}) {
  return (
    <div class="st-field">
      <label for={id}>{label}</label>
      {children}
      {hint && (
        <p class="st-hint" id={`${id}-hint`}>
          {hint}
        </p>
      )}
    </div>
  );
}

export const inputValue = (e: Event): string => (e.currentTarget as HTMLInputElement).value;

export function time(value: string | null | undefined): string {
  if (!value) return "—";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? value : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function words(key: string | null | undefined): string {
  if (!key) return "—";
  const special: Record<string, string> = {
    mlat: "MLAT",
    no_violation: "No violation",
    escalate_legal: "Escalate to legal",
    remove_message: "Remove the messages",
    appeal_decided: "Appeal decided",
    pending_review: "Awaiting review",
  };
  if (special[key]) return special[key];
  const w = key.replace(/_/g, " ");
  return w.charAt(0).toUpperCase() + w.slice(1);
}
