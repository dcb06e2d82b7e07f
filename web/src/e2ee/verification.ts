// Interactive SAS verification (Matrix's m.sas.v1 over to-device messages, docs/e2ee.md
// "SAS verification") on the OlmMachine's VerificationRequest and Sas, with a Python SDK device
// or another browser. Either side may request; the requester starts SAS once the other side is
// ready (as the Python SDK does), the other side accepts the start; both users compare the 7
// emoji (or 3 numbers) and both confirm; the MACs then mark the other device (and, on a device
// holding the member's cross-signing keys, the other member's master key) verified.

import * as sdk from "@matrix-org/matrix-sdk-crypto-wasm";

type Outgoing = { type: sdk.RequestType; id?: string; body: string; event_type?: string; txn_id?: string };

export interface VerificationHost {
  send(request: Outgoing): Promise<void>;
  flush(): Promise<void>;
  changed(): void;
}

export type VerificationPhase =
  | "requested" // we asked; waiting for their device to accept
  | "incoming" // they asked; waiting for this member to accept
  | "ready" // accepted; SAS is being started
  | "started" // SAS started; keys being exchanged
  | "codes" // compare the emoji / numbers now
  | "confirmed" // this member said they match; waiting for the other side
  | "done" // verified
  | "cancelled";

export interface VerificationView {
  phase: VerificationPhase;
  incoming: boolean;
  otherUserId: string;
  otherUser: string;
  otherDeviceId: string | null;
  emoji: { symbol: string; description: string }[] | null;
  decimals: number[] | null;
  cancel: { code: string; reason: string; byUs: boolean } | null;
  error: string | null;
}

export class VerificationFlow {
  private sas: sdk.Sas | null = null;
  private starting = false;
  private accepting = false;
  private scheduled = false;
  private disposed = false;
  private error: string | null = null;
  private readonly listeners = new Set<(view: VerificationView) => void>();
  readonly id: string;

  constructor(
    private readonly host: VerificationHost,
    private readonly request: sdk.VerificationRequest,
  ) {
    this.id = `${request.otherUserId.toString()}|${request.flowId}`;
    request.registerChangesCallback(async () => this.poke());
    this.poke();
  }

  subscribe(listener: (view: VerificationView) => void): () => void {
    this.listeners.add(listener);
    listener(this.view());
    return () => this.listeners.delete(listener);
  }

  /** Re-read the state (after a to-device message came in, say) on the next tick: callbacks come
   * from inside the crypto core, which must not be re-entered from them. */
  poke(): void {
    if (this.scheduled || this.disposed) return;
    this.scheduled = true;
    setTimeout(() => {
      this.scheduled = false;
      void this.step().catch((error: unknown) => {
        this.error = error instanceof Error ? error.message : String(error);
        this.emit();
      });
    }, 0);
  }

  dispose(): void {
    this.disposed = true;
    this.listeners.clear();
  }

  finished(): boolean {
    const phase = this.view().phase;
    return phase === "done" || phase === "cancelled";
  }

  private attach(sas: sdk.Sas): void {
    if (this.sas) return;
    this.sas = sas;
    sas.registerChangesCallback(async () => this.poke());
  }

  private async step(): Promise<void> {
    const phase = this.request.phase();
    if (!this.sas) {
      const verification = this.request.getVerification();
      if (verification instanceof sdk.Sas) this.attach(verification);
    }
    if (
      phase === sdk.VerificationRequestPhase.Ready &&
      this.request.weStarted() &&
      !this.sas &&
      !this.starting
    ) {
      // The requester starts SAS once the other device is ready (the Python SDK waits for it).
      this.starting = true;
      const started = await this.request.startSas();
      if (started) {
        const [sas, outgoing] = started;
        this.attach(sas);
        await this.host.send(outgoing);
      }
    }
    if (this.sas && !this.request.weStarted() && !this.sas.weStarted() && !this.accepting && !this.sas.hasBeenAccepted() && !this.sas.isCancelled()) {
      // The other side started SAS: accept it (our commitment to our SAS key goes out).
      this.accepting = true;
      const outgoing = this.sas.accept();
      if (outgoing) await this.host.send(outgoing);
    }
    await this.host.flush();
    this.emit();
    this.host.changed();
  }

  private emit(): void {
    const view = this.view();
    for (const listener of [...this.listeners]) listener(view);
  }

  view(): VerificationView {
    const otherUserId = this.request.otherUserId.toString();
    const base = {
      incoming: !this.request.weStarted(),
      otherUserId,
      otherUser: otherUserId.slice(1, otherUserId.indexOf(":")),
      otherDeviceId: this.request.otherDeviceId?.toString() ?? this.sas?.otherDeviceId.toString() ?? null,
      emoji: null as VerificationView["emoji"],
      decimals: null as VerificationView["decimals"],
      cancel: null as VerificationView["cancel"],
      error: this.error,
    };
    const cancelInfo = this.sas?.cancelInfo() ?? this.request.cancelInfo;
    if (this.request.isCancelled() || this.sas?.isCancelled()) {
      return {
        ...base,
        phase: "cancelled",
        cancel: cancelInfo
          ? { code: cancelInfo.cancelCode(), reason: cancelInfo.reason(), byUs: cancelInfo.cancelledbyUs() }
          : { code: "m.user", reason: "cancelled", byUs: false },
      };
    }
    if (this.sas?.isDone() || this.request.isDone()) return { ...base, phase: "done" };
    if (this.sas) {
      if (this.sas.canBePresented()) {
        const emoji = this.sas.emoji();
        const decimals = this.sas.decimals();
        return {
          ...base,
          phase: this.sas.haveWeConfirmed() ? "confirmed" : "codes",
          emoji: emoji ? emoji.map((e) => ({ symbol: e.symbol, description: e.description })) : null,
          decimals: decimals ? Array.from(decimals) : null,
        };
      }
      return { ...base, phase: "started" };
    }
    const phase = this.request.phase();
    if (phase === sdk.VerificationRequestPhase.Requested) return { ...base, phase: "incoming" };
    if (phase === sdk.VerificationRequestPhase.Created) return { ...base, phase: "requested" };
    return { ...base, phase: "ready" };
  }

  /** This member accepts an incoming request. */
  async accept(): Promise<void> {
    const outgoing = this.request.acceptWithMethods([sdk.VerificationMethod.SasV1]);
    if (outgoing) await this.host.send(outgoing);
    this.poke();
  }

  /** This member says both screens show the same emoji / numbers. */
  async confirm(): Promise<void> {
    if (!this.sas) throw new Error("nothing to confirm yet");
    const requests = await this.sas.confirm();
    for (const request of requests) await this.host.send(request);
    await this.host.flush();
    this.poke();
  }

  /** Ends the verification: `m.mismatched_sas` when the codes differ, `m.user` otherwise. */
  async cancel(code: "m.user" | "m.mismatched_sas" = "m.user"): Promise<void> {
    const outgoing = this.sas ? this.sas.cancelWithCode(code) : this.request.cancel();
    if (outgoing) await this.host.send(outgoing);
    this.poke();
  }
}
