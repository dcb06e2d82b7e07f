// The seam between the conversation view and a conversation's model. Every send goes through
// `seal`, every received message through `open`. `standard` conversations use the plain codec
// below; `e2ee` ones the browser E2EE codec (../e2ee/codec), loaded only when a member first
// opens such a conversation, so the wasm crypto core never weighs on anyone else.

import type { Session } from "../session";
import type { StreamEvent } from "../stream";
import type { Conversation, ServerMessage } from "./types";

export type OpenState = "ok" | "unverifiable" | "undecryptable";

export interface OpenedMessage {
  /** The text to show; null for a tombstone or what could not be opened. */
  text: string | null;
  state: OpenState;
  /** Why, in words (an unverifiable sender, a missing key…). */
  note?: string;
  /** e2ee: the file's real name and type, sealed inside the message. */
  file?: { filename: string; contentType: string; size?: number } | null;
}

/** A device that can read an e2ee conversation (for the "who can read this" banner). */
export interface ReadingDevice {
  user: string;
  deviceId: string;
  name?: string | null;
  verified?: boolean;
  note?: string;
}

export interface ConversationCodec {
  /** "standard" or "e2ee": what the banner says. */
  readonly model: "standard" | "e2ee";
  /** Fields merged into the send body: `{text}` for standard, `{encrypted, franking}` for e2ee. */
  seal(text: string): Promise<Record<string, unknown>>;
  /** What a received (or history) message says. */
  open(message: ServerMessage): Promise<OpenedMessage> | OpenedMessage;
  /** e2ee: encrypt a file before upload. `upload` is the ciphertext to send to the attachments
   * route; `seal` gives the send fields once the upload has an id. Absent: plain upload. */
  sealFile?(file: File, caption: string): Promise<{ upload: Blob; seal(attachmentId: string): Promise<Record<string, unknown>> }>;
  /** e2ee: decrypt a downloaded attachment of `message`. Absent: the bytes are the file. */
  openFile?(message: ServerMessage, data: Blob): Promise<{ blob: Blob; filename: string; contentType: string }>;
  /** e2ee: extra fields of a report of `message` (franking), else nothing. */
  reportFields?(message: ServerMessage): Promise<Record<string, unknown>>;
  /** e2ee: the devices that can read this conversation, for the banner. */
  devices?(): Promise<ReadingDevice[]>;
  /** Let go of whatever the codec holds (listeners) when the view closes. */
  close?(): void;
}

/** What a codec may use of the member's session: the token, who and which device, and the
 * live stream's events (e2ee needs to-device messages and device-list changes). */
export interface CodecSession extends Session {
  events: { subscribe(listener: (event: StreamEvent) => void): () => void };
}

export const standardCodec: ConversationCodec = {
  model: "standard",
  async seal(text: string) {
    return { text };
  },
  open(message: ServerMessage): OpenedMessage {
    if (message.deleted) return { text: null, state: "ok" };
    return { text: message.text, state: "ok" };
  },
};

export class CodecUnavailable extends Error {}

/** The codec of a conversation. For e2ee, rejects with CodecUnavailable (in words) when the
 * browser's E2EE cannot be used (not built yet, no passphrase, wasm refused…). */
export async function codecFor(conversation: Conversation, session: CodecSession): Promise<ConversationCodec> {
  if (conversation.encryption !== "e2ee") return standardCodec;
  let module: { e2eeCodec?: (conversation: Conversation, session: CodecSession) => Promise<ConversationCodec> };
  try {
    module = await import("../e2ee/codec");
  } catch (error) {
    throw new CodecUnavailable(`end-to-end encryption could not be loaded in this browser: ${describe(error)}`);
  }
  if (typeof module.e2eeCodec !== "function") {
    throw new CodecUnavailable("e2ee in the browser is not available yet");
  }
  try {
    return await module.e2eeCodec(conversation, session);
  } catch (error) {
    throw new CodecUnavailable(describe(error));
  }
}

function describe(error: unknown): string {
  if (error instanceof Error && error.message) return error.message;
  return "e2ee in the browser is not available yet";
}
