// My standing: status, strikes, the next step of the ladder, moderation notices (with appeals),
// and the outcomes of my reports that arrived during this session.
import { useEffect, useState } from "preact/hooks";
import { api } from "../../api";
import { Button, ErrorText, StatusText } from "../../ui/components";
import { formatDateTime } from "../../ui/format";
import { useMember, usePage } from "../context";
import { type MemberState, noticeWords } from "../state";
import type { Notice, Standing as StandingView } from "../types";

const STATUS_WORDS = {
  active: "Active: you can use Keyhold normally.",
  suspended: "Suspended: you can read, but not send, until the end date.",
  banned: "Banned: you can only appeal a decision and read this page.",
};

export function Standing() {
  const heading = usePage("Standing");
  const state = useMember();
  const [standing, setStanding] = useState<StandingView | null>(null);
  const [error, setError] = useState<unknown>(null);
  const load = () =>
    api<StandingView>("GET", "/account/standing", { token: state.session.token })
      .then((s) => {
        setStanding(s);
        setError(null);
      })
      .catch(setError);
  const notices = state.moderationEvents.length;
  useEffect(() => {
    void load();
  }, [notices]);
  const outcomes = state.moderationEvents.filter((e) => e.type === "report.outcome" || e.type === "message.review");
  return (
    <div>
      <h1 ref={heading} tabIndex={-1}>
        Your standing
      </h1>
      {state.refusedReason && <p class="notice warning">{state.refusedReason}</p>}
      <ErrorText error={error} />
      {!standing && !error && <p class="muted">Loading…</p>}
      {standing && (
        <>
          <section class="card" aria-labelledby="status-h">
            <h2 id="status-h">Status</h2>
            <p data-testid="standing-status">
              {STATUS_WORDS[standing.status] ?? standing.status}
              {standing.suspended_until ? ` Suspended until ${formatDateTime(standing.suspended_until)}.` : ""}
            </p>
            <p>
              Active strikes: {standing.active_strikes.length}. A strike counts for {standing.strike_days} days.
              {standing.next_step
                ? ` At ${standing.next_step.at_strikes} active strikes: ${
                    standing.next_step.action === "ban"
                      ? "a ban"
                      : standing.next_step.action === "suspend"
                        ? `a suspension${standing.next_step.hours ? ` of ${standing.next_step.hours} hours` : ""}`
                        : standing.next_step.action
                  }.`
                : ""}
            </p>
            {standing.active_strikes.length > 0 && (
              <ul class="plain-list">
                {standing.active_strikes.map((strike) => (
                  <li key={strike.id}>
                    {strike.category} ({strike.source}) on {formatDateTime(strike.created_at)}, expires {formatDateTime(strike.expires_at)}
                    {strike.case_id ? ` · case ${strike.case_id}` : ""}
                  </li>
                ))}
              </ul>
            )}
          </section>
          <section class="card" aria-labelledby="notices-h">
            <h2 id="notices-h">Moderation notices</h2>
            {standing.notices.length === 0 && <p class="muted">No notices.</p>}
            <ul class="plain-list notices">
              {standing.notices.map((notice, index) => (
                <NoticeItem key={`${notice.at}-${index}`} notice={notice} state={state} onAppealed={() => void load()} />
              ))}
            </ul>
          </section>
        </>
      )}
      <section class="card" aria-labelledby="outcomes-h">
        <h2 id="outcomes-h">Report outcomes and reviews (this session)</h2>
        {outcomes.length === 0 && <p class="muted">None since you logged in. Outcomes arrive here as they are decided.</p>}
        <ul class="plain-list">
          {outcomes.map((event) => (
            <li key={event.seq}>
              {event.type === "message.review"
                ? `Your held message was ${event.outcome === "released" ? "released and delivered" : "refused"}${event.note ? `: ${event.note}` : "."}`
                : noticeWords(event)}
            </li>
          ))}
        </ul>
      </section>
    </div>
  );
}

function NoticeItem({ notice, state, onAppealed }: { notice: Notice; state: MemberState; onAppealed: () => void }) {
  const [open, setOpen] = useState(false);
  const [statement, setStatement] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [done, setDone] = useState(false);
  const caseId = notice.case_id;
  const id = `appeal-${caseId}-${notice.at}`;
  return (
    <li>
      <p>
        <time dateTime={notice.at}>{formatDateTime(notice.at)}</time>: {noticeWords(notice)}
        {caseId ? ` (case ${caseId})` : ""}
      </p>
      {notice.appealable && caseId && !done && (
        <Button class="small" aria-expanded={open ? "true" : "false"} onClick={() => setOpen(!open)}>
          Appeal
        </Button>
      )}
      {open && !done && (
        <form
          class="stack"
          onSubmit={async (e) => {
            e.preventDefault();
            setBusy(true);
            setError(null);
            try {
              await api("POST", `/reports/${caseId}/appeal`, { token: state.session.token, body: { statement } });
              setDone(true);
              onAppealed();
            } catch (err) {
              setError(err);
            } finally {
              setBusy(false);
            }
          }}
        >
          <label for={id}>Why the decision should change (a moderator reads this; once per decision)</label>
          <textarea id={id} required maxLength={2000} value={statement} onInput={(e) => setStatement(e.currentTarget.value)} />
          <Button type="submit" busy={busy}>
            Send appeal
          </Button>
        </form>
      )}
      {done && <StatusText>Appeal sent.</StatusText>}
      <ErrorText error={error} />
    </li>
  );
}
