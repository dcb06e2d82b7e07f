// Writing a message: text (Enter sends, Shift+Enter is a new line) and an optional file.
import { useRef, useState } from "preact/hooks";
import { Button } from "../../ui/components";
import { formatSize } from "../../ui/format";
import { safeFileName } from "../files";

export interface ComposerProps {
  disabled: boolean;
  disabledReason?: string | null;
  allowFiles: boolean;
  onSend: (text: string, file: File | null) => void;
  draft: string;
  setDraft: (text: string) => void;
}

const MAX_TEXT = 4000;

export function Composer({ disabled, disabledReason, allowFiles, onSend, draft, setDraft }: ComposerProps) {
  const [file, setFile] = useState<File | null>(null);
  const [error, setError] = useState<string | null>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const textArea = useRef<HTMLTextAreaElement>(null);

  function submit(event?: Event) {
    event?.preventDefault();
    if (disabled) return;
    const text = draft.replace(/\s+$/, "");
    if (!text.trim() && !file) return;
    if (text.length > MAX_TEXT) {
      setError(`A message holds at most ${MAX_TEXT} characters (this one has ${text.length}).`);
      return;
    }
    setError(null);
    onSend(text.trim() ? text : "", file);
    setDraft("");
    setFile(null);
    if (fileInput.current) fileInput.current.value = "";
    textArea.current?.focus();
  }

  return (
    <form class="composer" onSubmit={submit} aria-label="Write a message">
      {disabledReason && <p class="composer-note">{disabledReason}</p>}
      {file && (
        <p class="composer-file">
          <span>
            Attached: {safeFileName(file.name)} ({formatSize(file.size)})
          </span>{" "}
          <Button
            class="small"
            onClick={() => {
              setFile(null);
              if (fileInput.current) fileInput.current.value = "";
            }}
          >
            Remove<span class="sr-only"> the attached file</span>
          </Button>
        </p>
      )}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <div class="composer-row">
        <label for="composer-text" class="sr-only">
          Message
        </label>
        <textarea
          id="composer-text"
          ref={textArea}
          rows={2}
          placeholder={disabled ? "" : "Write a message"}
          value={draft}
          disabled={disabled}
          aria-describedby="composer-help"
          onInput={(e) => setDraft(e.currentTarget.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
              e.preventDefault();
              submit();
            }
          }}
        />
        {allowFiles && (
          <label class={`button file-button${disabled ? " disabled" : ""}`}>
            <span>Attach</span>
            <span class="sr-only"> a file</span>
            <input
              ref={fileInput}
              type="file"
              class="file-input"
              disabled={disabled}
              onChange={(e) => {
                const chosen = e.currentTarget.files?.[0] ?? null;
                if (chosen && chosen.size > 10 * 1024 * 1024) {
                  setError("Files are limited to 10 MB.");
                  e.currentTarget.value = "";
                  return;
                }
                setError(null);
                setFile(chosen);
              }}
            />
          </label>
        )}
        <Button type="submit" class="primary" disabled={disabled}>
          Send
        </Button>
      </div>
      <p id="composer-help" class="sr-only">
        Enter sends; Shift and Enter start a new line.
      </p>
    </form>
  );
}
