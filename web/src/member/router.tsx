// A small router on the history API: the server answers index.html for every non-API path,
// so a reload or a shared link lands on the same page.
import type { ComponentChildren, PartialAnchorHTMLAttributes } from "preact";
import { useEffect, useState } from "preact/hooks";

type Listener = () => void;
const listeners = new Set<Listener>();

function notify(): void {
  for (const listener of [...listeners]) listener();
}

window.addEventListener("popstate", notify);

export function navigate(path: string, options: { replace?: boolean } = {}): void {
  const here = window.location.pathname + window.location.search;
  if (path === here) return;
  if (options.replace) window.history.replaceState(null, "", path);
  else window.history.pushState(null, "", path);
  window.scrollTo(0, 0);
  notify();
}

export function useLocation(): { path: string; search: URLSearchParams } {
  const [, setTick] = useState(0);
  useEffect(() => {
    const listener = () => setTick((n) => n + 1);
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
    };
  }, []);
  return { path: window.location.pathname, search: new URLSearchParams(window.location.search) };
}

export type Route =
  | { name: "home" }
  | { name: "signup" }
  | { name: "login" }
  | { name: "conversation"; id: number }
  | { name: "requests" }
  | { name: "settings" }
  | { name: "devices" }
  | { name: "access" }
  | { name: "standing" }
  | { name: "not-found" };

export function matchRoute(path: string): Route {
  const clean = path.length > 1 ? path.replace(/\/+$/, "") : path;
  switch (clean) {
    case "/":
    case "":
      return { name: "home" };
    case "/signup":
      return { name: "signup" };
    case "/login":
      return { name: "login" };
    case "/requests":
      return { name: "requests" };
    case "/settings":
      return { name: "settings" };
    case "/devices":
      return { name: "devices" };
    case "/access":
      return { name: "access" };
    case "/standing":
      return { name: "standing" };
  }
  const conversation = /^\/c\/(\d{1,16})$/.exec(clean);
  if (conversation) return { name: "conversation", id: Number(conversation[1]) };
  return { name: "not-found" };
}

type LinkProps = Omit<PartialAnchorHTMLAttributes<HTMLAnchorElement>, "href" | "role"> & { href: string; children?: ComponentChildren };

/** An in-app link: a real <a href> (keyboard, middle click, copy link), routed without a reload. */
export function Link({ href, onClick, ...rest }: LinkProps) {
  return (
    <a
      {...rest}
      href={href}
      onClick={(event) => {
        if (onClick) (onClick as (e: MouseEvent) => void)(event as unknown as MouseEvent);
        if (event.defaultPrevented) return;
        if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
        event.preventDefault();
        navigate(href);
      }}
    />
  );
}
