// The shapes of the public API the member app reads (docs/api.md).

export type Encryption = "standard" | "e2ee";

export interface AttachmentInfo {
  id: string;
  filename: string | null;
  content_type: string;
  size: number;
}

export interface Support {
  text: string;
  url: string;
}

export interface ServerMessage {
  id: number;
  conversation_id: number;
  sender: string;
  kind: string;
  text: string | null;
  attachment: AttachmentInfo | null;
  sent_at: string;
  deleted: boolean;
  expires_at?: string | null;
  /** `pending_review` (held: only the sender sees it) or `refused` (a moderator refused it). */
  status?: string;
  unreadable?: boolean;
  /** e2ee: the whole Matrix event to decrypt. */
  event?: Record<string, unknown> | null;
  franked?: boolean;
  franking?: unknown;
  /** Only in the sender's own answer, for a message about self-harm. */
  support?: Support;
}

export interface LastMessage {
  id: number;
  sender: string;
  sent_at: string;
  preview: string | null;
  deleted: boolean;
}

export interface Conversation {
  id: number;
  kind: "direct" | "group";
  encryption: Encryption;
  readable_by: string;
  title: string;
  members: string[];
  owner: string | null;
  admins: string[];
  created_at: string;
  disappear_after_seconds: number | null;
  unread: number;
  last_message: LastMessage | null;
}

export interface Page<T> {
  items: T[];
  next_before: number | null;
}

export interface HistoryPage {
  items: ServerMessage[];
  next_before: number | null;
  next_after: number | null;
}

export interface Account {
  username: string;
  display_name: string;
  region: string;
  created_at: string;
  id: number;
  birthdate: string;
}

export interface Profile {
  username: string;
  display_name: string;
  region: string;
  created_at: string;
}

export type Audience = "everyone" | "friends" | "no_one";
export type Band = "young_teen" | "teen" | "adult";

export interface Messaging {
  dm_audience: Audience;
  chosen: Audience | null;
  band: Band;
}

export interface Relations {
  following: string[];
  followers: string[];
  friends: string[];
}

export interface Device {
  device_id: string;
  display_name: string | null;
  created_at: string;
  last_seen_at: string | null;
  current: boolean;
}

export interface GuardianLink {
  username: string;
  role: "teen" | "guardian";
  status: string;
  dm_audience: Audience | null;
  since: string;
}

export interface Strike {
  id: number;
  user_id: number;
  case_id: number | null;
  category: string;
  source: string;
  created_at: string;
  expires_at: string;
}

export interface Notice {
  type: string;
  at: string;
  appealable?: boolean;
  case_id?: number | null;
  action?: string;
  category?: string;
  [field: string]: unknown;
}

export interface Standing {
  status: "active" | "suspended" | "banned";
  suspended_until: string | null;
  active_strikes: Strike[];
  strike_days: number;
  next_step: { at_strikes: number; action: string; hours: number | null } | null;
  notices: Notice[];
}

export const REPORT_CATEGORIES: [string, string][] = [
  ["harassment", "Harassment or bullying"],
  ["hate", "Hate"],
  ["child_sexual_content", "Sexual content involving a minor"],
  ["grooming", "Grooming"],
  ["sexual_extortion", "Sexual extortion"],
  ["violent_threat", "Violent threat"],
  ["self_harm", "Self-harm"],
  ["scam", "Scam or fraud"],
  ["spam", "Spam"],
  ["other", "Other"],
];
