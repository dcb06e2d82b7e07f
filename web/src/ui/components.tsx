// Small shared pieces: error and status lines that screen readers announce, a busy button.
import type { ButtonHTMLAttributes, ComponentChildren } from "preact";
import { problemText } from "./format";

/** An error in words, announced (role="alert"). Renders nothing without an error. */
export function ErrorText({ error, id }: { error: unknown; id?: string }) {
  if (error === null || error === undefined || error === false) return null;
  const text = typeof error === "string" ? error : problemText(error);
  return (
    <p class="error" role="alert" id={id}>
      {text}
    </p>
  );
}

/** A polite status line ("Saved"). */
export function StatusText({ children }: { children?: ComponentChildren }) {
  return (
    <p class="status" role="status">
      {children}
    </p>
  );
}

type ButtonProps = Omit<ButtonHTMLAttributes<HTMLButtonElement>, "type"> & { busy?: boolean; type?: "button" | "submit" };

/** A button that says it is working and cannot be pressed twice meanwhile. */
export function Button({ busy, disabled, children, type = "button", class: cls, ...rest }: ButtonProps) {
  return (
    <button {...rest} type={type} class={cls} disabled={disabled || busy} aria-busy={busy ? "true" : undefined}>
      {children}
    </button>
  );
}

export function Badge({ model }: { model: "standard" | "e2ee" }) {
  return (
    <span class={`badge badge-${model}`} title={model === "e2ee" ? "end-to-end encrypted" : "standard: sealed on the server"}>
      {model}
    </span>
  );
}
