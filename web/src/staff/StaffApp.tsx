// The staff console at /staff: its own sign-in (password and TOTP code, POST /staff/sessions),
// its own session (staffSession, memory only: a reload signs out; a member's session is another
// store and token), and the screens of the staff member's role (docs/governance.md):
// moderators — report queue, held messages; legal — cases; auditors — the access log and the
// transparency report; admins — report cases (read-only), the log and the report.
import { useEffect, useState } from "preact/hooks";
import { api } from "../api";
import { staffSession } from "../session";
import { errorText } from "../verify/words";
import { AuditLog, AuditReport } from "./audit";
import { ErrorBox, Field, inputValue, Link, MeContext, navigate, PageTitle, sessionEnded, type StaffMe, usePath } from "./common";
import { HeldCase, HeldQueue } from "./held";
import { LegalCase, LegalIntake, LegalList } from "./legal";
import { ReportCase, ReportQueue } from "./reports";
import "./staff.css";

interface Section {
  path: string;
  label: string;
}

const SECTIONS: Record<StaffMe["role"], Section[]> = {
  moderator: [
    { path: "/staff/reports", label: "Report queue" },
    { path: "/staff/held", label: "Held messages" },
  ],
  legal: [
    { path: "/staff/legal", label: "Legal cases" },
    { path: "/staff/legal/new", label: "New legal request" },
  ],
  auditor: [
    { path: "/staff/log", label: "Access log" },
    { path: "/staff/transparency", label: "Transparency report" },
  ],
  admin: [
    { path: "/staff/reports", label: "Report cases" },
    { path: "/staff/log", label: "Access log" },
    { path: "/staff/transparency", label: "Transparency report" },
  ],
};

function SignIn({ onSignedIn }: { onSignedIn: (me: StaffMe) => void }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [totp, setTotp] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [ended] = useState(() => {
    const m = sessionEnded.message;
    sessionEnded.message = "";
    return m;
  });
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const session = await api<{ token: string; username: string; role: StaffMe["role"]; region: string; expires_at: string }>(
        "POST",
        "/staff/sessions",
        { body: { username: username.trim(), password, totp: totp.replace(/\s/g, "") } },
      );
      const me = await api<{ id: number; username: string; role: StaffMe["role"]; region: string }>("GET", "/staff/me", {
        token: session.token,
      });
      setPassword("");
      setTotp("");
      onSignedIn({ ...me, token: session.token, expires_at: session.expires_at });
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="st-signin" id="main">
      <PageTitle>Keyhold staff sign-in</PageTitle>
      <p class="st-muted">
        For Keyhold's moderators, legal staff and auditors. Every read of members' content is logged where they can see
        it.
      </p>
      {ended && <p class="st-notice st-notice-warn">{ended}</p>}
      <form class="st-form" onSubmit={submit} aria-describedby={error ? "signin-error" : undefined}>
        <Field id="st-username" label="Username">
          <input
            id="st-username"
            name="username"
            autoComplete="username"
            autoCapitalize="none"
            spellcheck={false}
            required
            value={username}
            onInput={(e) => setUsername(inputValue(e))}
          />
        </Field>
        <Field id="st-password" label="Password">
          <input
            id="st-password"
            name="password"
            type="password"
            autoComplete="current-password"
            required
            value={password}
            onInput={(e) => setPassword(inputValue(e))}
          />
        </Field>
        <Field id="st-totp" label="Authenticator code" hint="The 6-digit code from your authenticator app.">
          <input
            id="st-totp"
            name="totp"
            inputMode="numeric"
            autoComplete="one-time-code"
            pattern="[0-9 ]{6,9}"
            minLength={6}
            maxLength={9}
            required
            aria-describedby="st-totp-hint"
            value={totp}
            onInput={(e) => setTotp(inputValue(e))}
          />
        </Field>
        <div id="signin-error">
          <ErrorBox error={error} prefix="Sign-in failed" />
        </div>
        <button class="st-button st-primary" type="submit" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}

/** The screen for a path, if this role has it (a plain function: no hooks of its own). */
function screen(me: StaffMe, path: string) {
  const allowed = SECTIONS[me.role].map((s) => s.path);
  const m = (re: RegExp) => path.match(re);
  let match: RegExpMatchArray | null;
  const can = (prefix: string) => allowed.some((p) => p === prefix);
  if (can("/staff/reports") && (match = m(/^\/staff\/reports\/(\d+)$/))) return <ReportCase id={Number(match[1])} key={path} />;
  if (can("/staff/reports") && path === "/staff/reports") return <ReportQueue />;
  if (can("/staff/held") && (match = m(/^\/staff\/held\/(\d+)$/))) return <HeldCase id={Number(match[1])} key={path} />;
  if (can("/staff/held") && path === "/staff/held") return <HeldQueue />;
  if (can("/staff/legal") && path === "/staff/legal/new") return <LegalIntake />;
  if (can("/staff/legal") && (match = m(/^\/staff\/legal\/(\d+)$/))) return <LegalCase id={Number(match[1])} key={path} />;
  if (can("/staff/legal") && path === "/staff/legal") return <LegalList />;
  if (can("/staff/log") && path === "/staff/log") return <AuditLog />;
  if (can("/staff/transparency") && path === "/staff/transparency") return <AuditReport />;
  return null;
}

function Console({ me, onSignOut }: { me: StaffMe; onSignOut: () => void }) {
  const path = usePath();
  const sections = SECTIONS[me.role];
  const content = screen(me, path);
  useEffect(() => {
    // /staff itself, or a screen of another role: go to this role's first screen.
    if (content === null) navigate(sections[0].path);
  }, [path]);
  const [signingOut, setSigningOut] = useState(false);
  return (
    <MeContext.Provider value={me}>
      <a class="st-skip" href="#main">
        Skip to content
      </a>
      <header class="st-header">
        <div class="st-brand">
          <span class="st-brand-name">Keyhold</span> <span class="st-brand-sub">staff console</span>
        </div>
        <nav class="st-nav" aria-label="Console">
          <ul>
            {sections.map((s) => (
              <li key={s.path}>
                <Link
                  href={s.path}
                  class="st-nav-link"
                  current={path === s.path || (s.path !== "/staff/legal/new" && path.startsWith(s.path + "/") && path !== "/staff/legal/new")}
                >
                  {s.label}
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        <div class="st-who">
          <span>
            {me.username} · {me.role} · region {me.region}
          </span>
          <button
            type="button"
            class="st-button"
            disabled={signingOut}
            onClick={async () => {
              setSigningOut(true);
              try {
                await api("DELETE", "/staff/sessions/current", { token: me.token });
              } catch {
                // Signed out here either way: the token is dropped from memory.
              }
              onSignOut();
            }}
          >
            Sign out
          </button>
        </div>
      </header>
      <main class="st-main" id="main">
        {content ?? <p class="st-muted">Opening…</p>}
      </main>
    </MeContext.Provider>
  );
}

export default function StaffApp() {
  const [me, setMe] = useState<StaffMe | null>(null);
  useEffect(() => {
    document.title = "Staff console — Keyhold";
    return staffSession.subscribe((s) => {
      if (!s) setMe(null);
    });
  }, []);
  if (!me) {
    return (
      <SignIn
        onSignedIn={(m) => {
          staffSession.set({ token: m.token, username: m.username });
          setMe(m);
          if (window.location.pathname === "/staff" || window.location.pathname === "/staff/") navigate(SECTIONS[m.role][0].path);
        }}
      />
    );
  }
  return (
    <Console
      me={me}
      onSignOut={() => {
        staffSession.set(null);
        navigate("/staff");
      }}
    />
  );
}
