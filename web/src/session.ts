// Sessions live in memory only: a member's and a staff member's token are module variables,
// never written to localStorage, sessionStorage, IndexedDB or a cookie. A page reload signs out;
// an injected script cannot read a token from storage after the tab is gone, and the API
// (bearer tokens, no cookies) has no CSRF surface. See docs/web.md.

export interface Session {
  token: string;
  username: string;
  /** The member's full id, `@name:server` (members only; from the sign-in answer). */
  userId?: string;
  /** The device this token belongs to (members only; from the sign-in answer). */
  deviceId?: string;
}

type Listener = (session: Session | null) => void;

function store() {
  let current: Session | null = null;
  const listeners = new Set<Listener>();
  return {
    get: (): Session | null => current,
    set(session: Session | null): void {
      current = session;
      for (const listener of listeners) listener(current);
    },
    subscribe(listener: Listener): () => void {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

/** The member's session (the app at `/`). */
export const memberSession = store();
/** The staff member's session (the console at `/staff`), separate from any member's. */
export const staffSession = store();
