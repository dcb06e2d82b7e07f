// Signed out: the landing page, sign up and log in.
import { useState } from "preact/hooks";
import { api } from "../../api";
import { browserDeviceId } from "../../e2ee/device-id";
import { memberSession } from "../../session";
import { Button, ErrorText } from "../../ui/components";
import { usePage } from "../context";
import { Link, navigate } from "../router";
import { clearEndedReason, endedReason } from "../state";

export function Landing() {
  const heading = usePage("Welcome");
  return (
    <div class="landing">
      <h1 ref={heading} tabIndex={-1}>
        Keyhold: messaging that tells you who can read it
      </h1>
      <p class="lead">
        Keyhold is a messaging service you can run yourself. Every conversation says, in plain words, who can read it —
        and means it.
      </p>
      <ul class="models">
        <li>
          <h2>
            <span class="badge badge-standard">standard</span> conversations
          </h2>
          <p>
            Messages are sealed on the server. The participants read them; Keyhold staff can read one only under an
            approved report or legal case, and every such read goes into a public, signed access log you can check.
          </p>
        </li>
        <li>
          <h2>
            <span class="badge badge-e2ee">e2ee</span> conversations
          </h2>
          <p>
            End-to-end encrypted: only the participants' devices hold the keys. Keyhold relays and stores ciphertext and
            cannot read it, not even under a case.
          </p>
        </li>
      </ul>
      <p class="actions">
        <Link class="button primary" href="/signup">
          Sign up
        </Link>
        <Link class="button" href="/login">
          Log in
        </Link>
      </p>
      <p>
        How often does staff read members' data, and why? See the <a href="/transparency">transparency report</a> and
        the current signed tree head of the access log.
      </p>
    </div>
  );
}

/** A name for this browser's device, shown in the devices list. */
function deviceName(): string {
  const ua = navigator.userAgent;
  const browser = /Firefox\//.test(ua)
    ? "Firefox"
    : /Edg\//.test(ua)
      ? "Edge"
      : /Chrom(e|ium)\//.test(ua)
        ? "Chromium"
        : /Safari\//.test(ua)
          ? "Safari"
          : "browser";
  const os = /Android/.test(ua)
    ? "Android"
    : /iPhone|iPad/.test(ua)
      ? "iOS"
      : /Mac OS X/.test(ua)
        ? "macOS"
        : /Windows/.test(ua)
          ? "Windows"
          : /Linux/.test(ua)
            ? "Linux"
            : "";
  return `Web: ${browser}${os ? ` on ${os}` : ""}`;
}

interface SignIn {
  token: string;
  username: string;
  user_id?: string;
  device_id?: string;
}

async function signIn(username: string, password: string): Promise<void> {
  // One device per member per browser (its id, not a secret, is the one thing in localStorage):
  // the e2ee keys in this browser belong to it, and signing in again lands on it.
  const answer = await api<SignIn>("POST", "/sessions", {
    body: { username, password, device_id: browserDeviceId(username), device_name: deviceName() },
  });
  clearEndedReason();
  memberSession.set({ token: answer.token, username: answer.username, userId: answer.user_id, deviceId: answer.device_id });
}

/** Where to go after signing in (the page a signed-out visitor asked for). Memory only. */
let afterSignIn: string | null = null;
export function rememberTarget(path: string): void {
  afterSignIn = path;
}

export function Login() {
  const heading = usePage("Log in");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  async function submit(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await signIn(username.trim(), password);
      const target = afterSignIn ?? "/";
      afterSignIn = null;
      navigate(target, { replace: true });
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  }
  return (
    <div class="narrow">
      <h1 ref={heading} tabIndex={-1}>
        Log in
      </h1>
      {endedReason && <p class="notice warning">{endedReason}</p>}
      <form onSubmit={submit} class="stack">
        <label>
          Username
          <input
            name="username"
            autocomplete="username"
            required
            value={username}
            onInput={(e) => setUsername(e.currentTarget.value)}
          />
        </label>
        <label>
          Password
          <input
            name="password"
            type="password"
            autocomplete="current-password"
            required
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </label>
        <ErrorText error={error} />
        <Button type="submit" class="primary" busy={busy}>
          {busy ? "Logging in…" : "Log in"}
        </Button>
      </form>
      <p>
        New here? <Link href="/signup">Sign up</Link>. Your session lives in this tab's memory only: reloading the page
        logs you out, and no token is ever stored in the browser.
      </p>
    </div>
  );
}

export const REGIONS: [string, string][] = [
  ["us", "United States (us)"],
  ["eu", "European Union (eu)"],
  ["row", "Rest of the world (row)"],
];

function ageOn(birthdate: string, today = new Date()): number | null {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(birthdate);
  if (!match) return null;
  const [y, m, d] = [Number(match[1]), Number(match[2]), Number(match[3])];
  let age = today.getFullYear() - y;
  if (today.getMonth() + 1 < m || (today.getMonth() + 1 === m && today.getDate() < d)) age -= 1;
  return age;
}

export function ageRuleText(age: number | null): string | null {
  if (age === null) return null;
  if (age < 13) return "Under 13: you cannot have a Keyhold account.";
  if (age < 16) return "13–15: direct messaging is off: you cannot start conversations, be added to groups, or send messages.";
  if (age < 18) return "16–17: you can message friends only (people you follow who follow you back), and you are hidden from strangers.";
  return "18 or older: you choose who may message you (everyone, friends, or no one).";
}

export function Signup() {
  const heading = usePage("Sign up");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [birthdate, setBirthdate] = useState("");
  const [region, setRegion] = useState("us");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const age = ageOn(birthdate);
  async function submit(event: Event) {
    event.preventDefault();
    setError(null);
    if (age !== null && age < 13) {
      setError("Keyhold accounts need an age of at least 13.");
      return;
    }
    setBusy(true);
    try {
      await api("POST", "/accounts", { body: { username: username.trim(), password, birthdate, region } });
      await signIn(username.trim(), password);
      navigate("/", { replace: true });
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  }
  return (
    <div class="narrow">
      <h1 ref={heading} tabIndex={-1}>
        Sign up
      </h1>
      <form onSubmit={submit} class="stack">
        <label>
          Username
          <input
            name="username"
            autocomplete="username"
            required
            minLength={3}
            maxLength={32}
            pattern="[a-z0-9_]{3,32}"
            aria-describedby="username-help"
            value={username}
            onInput={(e) => setUsername(e.currentTarget.value)}
          />
        </label>
        <p class="help" id="username-help">
          3 to 32 characters: lowercase letters, digits and _. It can never be reused.
        </p>
        <label>
          Password
          <input
            name="password"
            type="password"
            autocomplete="new-password"
            required
            minLength={8}
            maxLength={1024}
            aria-describedby="password-help"
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </label>
        <p class="help" id="password-help">
          At least 8 characters.
        </p>
        <label>
          Birthdate
          <input
            name="birthdate"
            type="date"
            required
            aria-describedby="minors-rules"
            value={birthdate}
            onInput={(e) => setBirthdate(e.currentTarget.value)}
          />
        </label>
        <div class="help rules" id="minors-rules">
          <p>Your birthdate decides what Keyhold lets you do, and it changes on your birthday:</p>
          <ul>
            <li>under 13: no account (some regions ask for more);</li>
            <li>13–15: direct messaging is off (no conversations, no group adds, no sending);</li>
            <li>16–17: messages with friends only (mutual follows); strangers cannot find you;</li>
            <li>18 and over: you choose who may message you.</li>
          </ul>
          {age !== null && <p class="rule-now">{ageRuleText(age)}</p>}
        </div>
        <label>
          Region
          <select name="region" value={region} onChange={(e) => setRegion(e.currentTarget.value)} aria-describedby="region-help">
            {REGIONS.map(([value, label]) => (
              <option value={value} key={value}>
                {label}
              </option>
            ))}
          </select>
        </label>
        <p class="help" id="region-help">
          Your region decides which rules apply and which region's staff could reach your standard conversations under
          an approved case.
        </p>
        <ErrorText error={error} />
        <Button type="submit" class="primary" busy={busy}>
          {busy ? "Creating your account…" : "Create account"}
        </Button>
      </form>
      <p>
        Already have an account? <Link href="/login">Log in</Link>.
      </p>
    </div>
  );
}
