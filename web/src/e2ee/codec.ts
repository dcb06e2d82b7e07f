// The e2ee codec of a conversation (the member view's seam, ../member/codec.ts): seals sends
// with this browser's device and opens what arrives. Loaded with a dynamic import by
// codecFor(), so the crypto core is fetched only when a member first opens or starts an e2ee
// conversation.

import type { CodecSession, ConversationCodec, OpenedMessage, ReadingDevice } from "../member/codec";
import type { Conversation, ServerMessage } from "../member/types";
import { h, render } from "preact";
import { feedStreamEvent, openDevice } from "./runtime";

export async function e2eeCodec(conversation: Conversation, session: CodecSession): Promise<ConversationCodec> {
  const device = await openDevice(session);
  // The stream's e2ee events reach the device (again, if the app also feeds them globally:
  // the device drops what it already took by seq).
  const unsubscribe = session.events?.subscribe((event) => feedStreamEvent(event));
  void device.track(conversation.members).catch(() => undefined);
  const codec: ConversationCodec & { subscribe(listener: () => void): () => void } = {
    model: "e2ee",
    /** Something changed (a room key came, a contact's keys changed, a verification ended):
     * messages opened as "undecryptable" or "unverifiable" may open differently now. */
    subscribe: (listener: () => void) => device.subscribe(listener),
    seal: (text: string) => device.seal(conversation.id, text),
    async open(message: ServerMessage): Promise<OpenedMessage> {
      if (message.kind !== "e2ee" && !message.event) {
        return { text: message.deleted ? null : message.text, state: "ok" };
      }
      return device.open({
        id: message.id,
        conversation_id: message.conversation_id,
        sender: message.sender,
        deleted: message.deleted,
        event: message.event ?? null,
        franked: message.franked,
        franking: message.franking,
        attachment: message.attachment ? { id: message.attachment.id, size: message.attachment.size } : null,
      });
    },
    async sealFile(file: File, caption: string) {
      const data = new Uint8Array(await file.arrayBuffer());
      return device.sealFile(conversation.id, data, file.name, file.type, caption);
    },
    openFile: (message: ServerMessage, data: Blob) => device.openFile(message.id, data),
    reportFields: async (message: ServerMessage) => device.reportFields(message.id),
    async devices(): Promise<ReadingDevice[]> {
      const readers = await device.readers(conversation.id);
      return readers.map((r) => ({
        user: r.user,
        deviceId: r.deviceId,
        name: r.name,
        verified: r.verified,
        note: r.logProblem
          ? `✗ its keys failed the key-transparency check: ${r.logProblem}`
          : r.current
            ? "this browser"
            : !r.crossSigned
              ? "not signed by its owner's identity"
              : undefined,
      }));
    },
    close() {
      unsubscribe?.();
    },
  };
  return codec;
}

// The e2ee components and the device, from this same lazily loaded chunk: the member view may
// take them from here (`const { SafetyNumber } = await import("../e2ee/codec")`), and the browser
// tests (tests/browser/test_web_e2ee.py) drive this chunk directly.
export { currentDevice, e2eeStatus, feedStreamEvent, openDevice } from "./runtime";
export { DeviceList } from "./DeviceList";
export { SafetyNumber } from "./SafetyNumber";
export { VerificationRequests, VerifyDevice } from "./VerifyDevice";

/** Renders one of the components above into `target` (tests, or a view that is not Preact). */
export function mount(component: (props: never) => unknown, props: Record<string, unknown>, target: Element): () => void {
  render(h(component as never, props as never), target);
  return () => render(null, target);
}
