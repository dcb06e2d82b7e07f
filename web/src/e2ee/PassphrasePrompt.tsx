// The passphrase of this browser's e2ee keys: set the first time (twice), typed at each sign-in.
// The OlmMachine's IndexedDB store is encrypted under it; Keyhold never sees it. Mount
// <PassphrasePrompt/> where the member app wants the question asked; without one, runtime.ts
// mounts <PassphraseDialog/> (a modal dialog) itself.

import { useEffect, useRef, useState } from "preact/hooks";
import "./e2ee.css";
import { cancelPassphrase, e2eeStatus, inlinePromptMounted, registerInlinePrompt, submitPassphrase, type E2eeStatus } from "./runtime";

const MIN_LENGTH = 8;

function useStatus(): E2eeStatus {
  const [status, setStatus] = useState(e2eeStatus.get());
  useEffect(() => e2eeStatus.subscribe(setStatus), []);
  return status;
}

function PassphraseForm({ status, headingId }: { status: Extract<E2eeStatus, { phase: "passphrase" }>; headingId: string }) {
  const [first, setFirst] = useState("");
  const [second, setSecond] = useState("");
  const [problem, setProblem] = useState<string | null>(null);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => {
    input.current?.focus();
  }, [status.error]);
  const onSubmit = (event: Event) => {
    event.preventDefault();
    if (status.isNew) {
      if (first.length < MIN_LENGTH) return setProblem(`Use at least ${MIN_LENGTH} characters.`);
      if (first !== second) return setProblem("The two passphrases differ.");
    } else if (!first) {
      return setProblem("Type the passphrase.");
    }
    setProblem(null);
    submitPassphrase(first);
    setFirst("");
    setSecond("");
  };
  const error = problem ?? status.error;
  return (
    <form class="e2ee-form" onSubmit={onSubmit} aria-labelledby={headingId} data-testid="e2ee-passphrase-form">
      <h2 id={headingId}>{status.isNew ? "Set a passphrase for end-to-end encryption" : "Unlock end-to-end encryption"}</h2>
      {status.isNew ? (
        <p>
          This browser becomes one of your devices ({status.deviceId}). Its keys stay in this browser, encrypted with a
          passphrase you choose now. Keyhold never sees it. Without it, this browser cannot read your end-to-end encrypted
          messages again.
        </p>
      ) : (
        <p>Type the passphrase you set for this browser's keys (device {status.deviceId}).</p>
      )}
      <label>
        Passphrase
        <input
          ref={input}
          type="password"
          autocomplete={status.isNew ? "new-password" : "current-password"}
          value={first}
          onInput={(e) => setFirst((e.target as HTMLInputElement).value)}
          aria-describedby={error ? `${headingId}-error` : undefined}
          aria-invalid={error ? "true" : undefined}
          name="e2ee-passphrase"
        />
      </label>
      {status.isNew && (
        <label>
          The same passphrase again
          <input
            type="password"
            autocomplete="new-password"
            value={second}
            onInput={(e) => setSecond((e.target as HTMLInputElement).value)}
            name="e2ee-passphrase-again"
          />
        </label>
      )}
      {error && (
        <p class="e2ee-error" role="alert" id={`${headingId}-error`}>
          {error}
        </p>
      )}
      <div class="e2ee-actions">
        <button type="submit">{status.isNew ? "Set passphrase" : "Unlock"}</button>
        <button type="button" class="e2ee-secondary" onClick={() => cancelPassphrase()}>
          Not now
        </button>
      </div>
    </form>
  );
}

function Progress({ status }: { status: E2eeStatus }) {
  if (status.phase === "loading") return <p role="status">Loading end-to-end encryption…</p>;
  if (status.phase === "starting") return <p role="status">Opening this browser's keys…</p>;
  if (status.phase === "failed") return <p class="e2ee-error" role="alert">{status.error}</p>;
  return null;
}

/** The prompt, inline where the member app mounts it (a conversation view, say). */
export function PassphrasePrompt() {
  const status = useStatus();
  useEffect(() => registerInlinePrompt(), []);
  if (status.phase === "passphrase") {
    return (
      <section class="e2ee-panel" aria-live="polite">
        <PassphraseForm status={status} headingId="e2ee-passphrase-inline" />
      </section>
    );
  }
  if (status.phase === "loading" || status.phase === "starting" || status.phase === "failed") {
    return (
      <section class="e2ee-panel">
        <Progress status={status} />
      </section>
    );
  }
  return null;
}

/** The same prompt in a modal dialog, for when no inline prompt is mounted. */
export function PassphraseDialog() {
  const status = useStatus();
  const dialog = useRef<HTMLDialogElement>(null);
  const show = status.phase === "passphrase" && !inlinePromptMounted();
  useEffect(() => {
    const element = dialog.current;
    if (!element) return;
    if (show && !element.open) element.showModal();
    if (!show && element.open) element.close();
  }, [show]);
  return (
    <dialog
      ref={dialog}
      class="e2ee-dialog"
      aria-labelledby="e2ee-passphrase-dialog"
      onCancel={(event) => {
        event.preventDefault();
        cancelPassphrase();
      }}
    >
      {status.phase === "passphrase" && <PassphraseForm status={status} headingId="e2ee-passphrase-dialog" />}
    </dialog>
  );
}

export default PassphrasePrompt;
