import { createContext } from "preact";
import { useContext, useEffect, useRef, useState } from "preact/hooks";
import type { MemberState } from "./state";

export const MemberContext = createContext<MemberState | null>(null);

/** The signed-in member's state; the component re-renders when it changes. */
export function useMember(): MemberState {
  const state = useContext(MemberContext);
  if (!state) throw new Error("useMember outside a signed-in page");
  const [, setVersion] = useState(state.version);
  useEffect(() => state.subscribe(() => setVersion(state.version)), [state]);
  return state;
}

/** Sets the document title and moves focus to the page's heading when the page opens, so a
 * keyboard or screen-reader user starts at the top of what changed. */
export function usePage(title: string) {
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    document.title = `${title} · Keyhold`;
  }, [title]);
  useEffect(() => {
    const active = document.activeElement;
    // Do not steal focus from a field the member is typing in (a form on the same page).
    if (active && active !== document.body && (active as HTMLElement).closest?.("main form")) return;
    heading.current?.focus({ preventScroll: true });
  }, []);
  return heading;
}
