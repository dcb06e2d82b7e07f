// Interactive verification (SAS) of a contact's device, with a Python SDK device or another
// browser: pick a device, wait for them to accept, compare the 7 emoji (or the 3 numbers) on
// both screens, and both confirm. <VerificationRequests/> shows the requests others send.

import { useEffect, useState } from "preact/hooks";
import "./e2ee.css";
import { fingerprint, useDeviceValue, useE2eeDevice } from "./hooks";
import type { VerificationFlow, VerificationView } from "./verification";

export interface VerifyDeviceProps {
  /** The contact's username. */
  username: string;
  /** One device of theirs; default: let the member pick. */
  deviceId?: string;
  headingLevel?: 2 | 3 | 4;
}

function useFlow(flow: VerificationFlow | null): VerificationView | null {
  const [view, setView] = useState<VerificationView | null>(flow ? flow.view() : null);
  useEffect(() => (flow ? flow.subscribe(setView) : undefined), [flow]);
  return view;
}

const PHASE_TEXT: Record<VerificationView["phase"], string> = {
  requested: "Waiting for the other device to accept…",
  incoming: "asks to verify with you.",
  ready: "Accepted. Starting…",
  started: "Exchanging keys…",
  codes: "Compare: do both screens show the same emoji, in the same order?",
  confirmed: "You confirmed. Waiting for the other side to confirm…",
  done: "Verified.",
  cancelled: "The verification ended.",
};

/** One verification in progress: the codes and the buttons. */
export function VerificationSteps({ flow }: { flow: VerificationFlow }) {
  const view = useFlow(flow);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  if (!view) return null;
  const act = (task: () => Promise<void>) => async () => {
    setBusy(true);
    setError(null);
    try {
      await task();
    } catch (failure) {
      setError(failure instanceof Error ? failure.message : String(failure));
    } finally {
      setBusy(false);
    }
  };
  const who = `${view.otherUser}${view.otherDeviceId ? ` (device ${view.otherDeviceId})` : ""}`;
  return (
    <div data-testid="e2ee-verification" data-phase={view.phase}>
      <p role="status">
        {view.phase === "incoming" ? `${who} ${PHASE_TEXT.incoming}` : view.phase === "done" ? `✓ ${who} is verified on this device.` : PHASE_TEXT[view.phase]}
      </p>
      {view.phase === "incoming" && (
        <div class="e2ee-actions">
          <button type="button" disabled={busy} onClick={act(() => flow.accept())}>
            Accept
          </button>
          <button type="button" class="e2ee-secondary" disabled={busy} onClick={act(() => flow.cancel("m.user"))}>
            Decline
          </button>
        </div>
      )}
      {(view.phase === "codes" || view.phase === "confirmed") && (
        <>
          {view.emoji && (
            <ul class="e2ee-emoji" aria-label="emoji to compare" data-testid="e2ee-sas-emoji">
              {view.emoji.map((e, i) => (
                <li key={i}>
                  <span class="e2ee-symbol" aria-hidden="true">
                    {e.symbol}
                  </span>
                  <span>{e.description}</span>
                </li>
              ))}
            </ul>
          )}
          {view.decimals && (
            <p>
              Or the numbers:{" "}
              <span class="e2ee-decimals" data-testid="e2ee-sas-decimals">
                {view.decimals.join(" ")}
              </span>
            </p>
          )}
        </>
      )}
      {view.phase === "codes" && (
        <div class="e2ee-actions">
          <button type="button" disabled={busy} onClick={act(() => flow.confirm())}>
            They match
          </button>
          <button type="button" class="e2ee-danger" disabled={busy} onClick={act(() => flow.cancel("m.mismatched_sas"))}>
            They don't match
          </button>
        </div>
      )}
      {view.phase === "done" && <p class="e2ee-ok">✓ Verified</p>}
      {view.phase === "cancelled" && view.cancel && (
        <p class="e2ee-error" role="alert">
          {view.cancel.byUs ? "Cancelled here" : "Cancelled by the other side"}: {view.cancel.reason} ({view.cancel.code})
        </p>
      )}
      {(view.phase === "requested" || view.phase === "ready" || view.phase === "started") && (
        <div class="e2ee-actions">
          <button type="button" class="e2ee-secondary" disabled={busy} onClick={act(() => flow.cancel("m.user"))}>
            Cancel
          </button>
        </div>
      )}
      {(error || view.error) && (
        <p class="e2ee-error" role="alert">
          {error ?? view.error}
        </p>
      )}
    </div>
  );
}

export function VerifyDevice({ username, deviceId, headingLevel = 3 }: VerifyDeviceProps) {
  const device = useE2eeDevice();
  const devices = useDeviceValue(device, (d) => d.devicesOf(username), [username]);
  const [flow, setFlow] = useState<VerificationFlow | null>(null);
  const [starting, setStarting] = useState(false);
  const [error, setError] = useState<string | null>(null);
  // A request from this contact that came in (from their Python or browser device).
  useEffect(() => {
    if (!device) return undefined;
    const mine = device.verificationFlows().find((f) => f.view().otherUser === username && f.view().incoming);
    if (mine && !flow) setFlow(mine);
    return device.onVerificationRequest((incoming) => {
      if (incoming.view().otherUser === username) setFlow(incoming);
    });
  }, [device, username]);
  const Heading = `h${headingLevel}` as "h3";
  const headingId = `e2ee-verify-${username}`;
  if (!device) {
    return (
      <section class="e2ee-panel" aria-label={`Verify ${username}`}>
        <p class="e2ee-muted">Unlock end-to-end encryption in this browser to verify {username}.</p>
      </section>
    );
  }
  const start = async (target: string) => {
    setStarting(true);
    setError(null);
    try {
      setFlow(await device.startVerification(username, target));
    } catch (failure) {
      setError(failure instanceof Error ? failure.message : String(failure));
    } finally {
      setStarting(false);
    }
  };
  const candidates = (devices.value ?? []).filter((d) => !d.current && (!deviceId || d.deviceId === deviceId));
  return (
    <section class="e2ee-panel" aria-labelledby={headingId} data-testid="e2ee-verify-device">
      <Heading id={headingId}>Verify {username}</Heading>
      <p>
        Verification checks, with {username} beside you or on a call, that this browser and their device see each other's real
        keys: you both compare a few emoji that only your two devices can compute.
      </p>
      {flow ? (
        <>
          <VerificationSteps flow={flow} />
          {flow.finished() && (
            <div class="e2ee-actions">
              <button type="button" class="e2ee-secondary" onClick={() => setFlow(null)}>
                Done
              </button>
            </div>
          )}
        </>
      ) : (
        <>
          {devices.loading && !devices.value && <p role="status">Fetching {username}'s devices…</p>}
          {devices.error && (
            <p class="e2ee-error" role="alert">
              {devices.error}
            </p>
          )}
          {devices.value && candidates.length === 0 && <p>{username} has no device with end-to-end encryption yet.</p>}
          <ul class="e2ee-devices">
            {candidates.map((d) => (
              <li key={d.deviceId}>
                <span>
                  Device {d.deviceId} {d.verified ? <span class="e2ee-ok">✓ verified</span> : null}
                  {d.logProblem ? <span class="e2ee-error"> ✗ {d.logProblem}</span> : null}
                </span>
                <span class="e2ee-fingerprint">{fingerprint(d.ed25519)}</span>
                <span class="e2ee-actions">
                  <button
                    type="button"
                    disabled={starting || !!d.logProblem}
                    onClick={() => start(d.deviceId)}
                    data-testid="e2ee-verify-start"
                    aria-label={`Verify ${username}'s device ${d.deviceId}`}
                  >
                    Verify this device
                  </button>
                </span>
              </li>
            ))}
          </ul>
        </>
      )}
      {error && (
        <p class="e2ee-error" role="alert">
          {error}
        </p>
      )}
    </section>
  );
}

/** Requests other devices send to this one, wherever the member is in the app. */
export function VerificationRequests() {
  const device = useE2eeDevice();
  const [flows, setFlows] = useState<VerificationFlow[]>([]);
  useEffect(() => {
    if (!device) return undefined;
    setFlows(device.verificationFlows().filter((f) => f.view().incoming));
    return device.onVerificationRequest((flow) => setFlows((list) => [...list.filter((f) => f.id !== flow.id), flow]));
  }, [device]);
  const shown = flows.filter((f) => !f.finished() || f.view().phase === "done");
  if (!device || shown.length === 0) return null;
  return (
    <section class="e2ee-panel" aria-label="Verification requests" data-testid="e2ee-verification-requests">
      {shown.map((flow) => (
        <VerificationSteps key={flow.id} flow={flow} />
      ))}
    </section>
  );
}

export default VerifyDevice;
