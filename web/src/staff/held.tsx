// Moderators: messages the scanning pipeline held (delivered to no one but their sender) and
// system-flagged messages. A held message's case is decided by releasing it (everyone gets it
// now) or refusing it (deleted; its sender is told and may appeal).
import { useState } from "preact/hooks";
import { ErrorBox, Field, inputValue, Link, Loading, Notice, PageTitle, staffApi, time, useAction, useLoad, useMe, words } from "./common";
import { CaseFacts, CaseTable, ClaimButton, ContextWindow, type ReportCaseJson } from "./reports";

export function HeldQueue() {
  const me = useMe();
  const held = useLoad(() => staffApi<{ items: ReportCaseJson[] }>(me, "GET", "/staff/held", { query: { limit: 200 } }), []);
  const flagged = useLoad(
    () => staffApi<{ items: ReportCaseJson[] }>(me, "GET", "/staff/reports", { query: { status: "open", limit: 200 } }),
    [],
  );
  const systemFlagged = (flagged.data?.items ?? []).filter((c) => c.details.source === "system" && !c.details.held);
  return (
    <>
      <PageTitle>Held and flagged messages</PageTitle>
      <p class="st-muted">
        The scanner holds a message it is unsure about: only its sender sees it until you release or refuse it. A
        flagged message was delivered; its case is decided like a member's report.
      </p>
      <div class="st-toolbar">
        <button
          type="button"
          class="st-button"
          onClick={() => {
            held.reload();
            flagged.reload();
          }}
        >
          Refresh
        </button>
      </div>
      <section aria-labelledby="st-held-title">
        <h2 id="st-held-title">Held for review</h2>
        <ErrorBox error={held.error} prefix="Could not load held messages" />
        {held.loading && !held.data ? (
          <Loading what="held messages" />
        ) : (
          <CaseTable cases={held.data?.items ?? []} base="/staff/held" empty="No message is waiting for review." />
        )}
      </section>
      <section aria-labelledby="st-flagged-title">
        <h2 id="st-flagged-title">Flagged by the scanner</h2>
        <ErrorBox error={flagged.error} prefix="Could not load flagged messages" />
        {flagged.loading && !flagged.data ? (
          <Loading what="flagged messages" />
        ) : (
          <CaseTable cases={systemFlagged} base="/staff/reports" empty="No open flagged case." />
        )}
      </section>
    </>
  );
}

export function HeldCase({ id }: { id: number }) {
  const me = useMe();
  const loaded = useLoad(() => staffApi<ReportCaseJson>(me, "GET", `/staff/held/${id}`), [id]);
  const [note, setNote] = useState("");
  const [done, setDone] = useState<string | null>(null);
  const act = useAction();
  const c = loaded.data;
  const mine = c?.assigned_to === me.id;
  const pending = c?.held_message?.state === "pending_review" && c.status === "open";
  const review = (what: "release" | "refuse") =>
    act.run(async () => {
      const next = await staffApi<ReportCaseJson>(me, "POST", `/staff/held/${id}/${what}`, { body: { note } });
      loaded.set(next);
      setDone(
        what === "release"
          ? "Released: the conversation's members get the message now; its sender is told."
          : "Refused: the message is deleted and its sender is told (they may appeal).",
      );
    });
  return (
    <>
      <p class="st-back">
        <Link href="/staff/held"><span aria-hidden="true">← </span>Held and flagged messages</Link>
      </p>
      <PageTitle>Held message, case #{id}</PageTitle>
      <ErrorBox error={loaded.error} prefix="Could not load the case" />
      {!c && !loaded.error && <Loading what="the case" />}
      {c && (
        <>
          {done && <Notice tone="ok">{done}</Notice>}
          <dl class="st-facts">
            <dt>Message</dt>
            <dd>{c.held_message ? `#${c.held_message.message_id}: ${words(c.held_message.state)}` : "this case holds no message"}</dd>
          </dl>
          <CaseFacts c={c} />
          {c.status === "open" && !mine && (
            <ClaimButton
              c={c}
              onDone={() => {
                loaded.reload();
                setDone("You took this case.");
              }}
            />
          )}
          <ContextWindow caseId={c.id} reported={c.reported_messages} canRead={!!(mine && c.status === "open")} />
          {mine && pending && (
            <section class="st-panel" aria-labelledby="st-review">
              <h2 id="st-review">Review</h2>
              <Field id="st-review-note" label="Note to the sender" hint="Optional; the sender is told either way.">
                <textarea
                  id="st-review-note"
                  rows={3}
                  maxLength={1000}
                  aria-describedby="st-review-note-hint"
                  value={note}
                  onInput={(e) => setNote(inputValue(e))}
                />
              </Field>
              <ErrorBox error={act.error} prefix="The review was not recorded" />
              <div class="st-actions">
                <button type="button" class="st-button st-primary" disabled={act.busy} onClick={() => review("release")}>
                  Release: deliver it
                </button>
                <button type="button" class="st-button st-danger" disabled={act.busy} onClick={() => review("refuse")}>
                  Refuse: delete it
                </button>
              </div>
            </section>
          )}
          {c.decision?.decided_at && <p class="st-muted">Reviewed {time(c.decision.decided_at)}.</p>}
        </>
      )}
    </>
  );
}
