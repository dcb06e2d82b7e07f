// The member app: signed out, the landing page, sign up and log in; signed in, the chats,
// requests, settings, devices, standing and access history, over one live stream.
import { lazy, Suspense } from "preact/compat";
import { useEffect, useState } from "preact/hooks";
import { e2eeStatus } from "../e2ee/runtime";
import { memberSession, type Session } from "../session";
import { Button } from "../ui/components";
import { MemberContext, useMember, usePage } from "./context";
import { ConversationPage } from "./conversation/Conversation";
import { ChatsHome, ConversationList } from "./pages/Chats";
import { Devices } from "./pages/Devices";
import { Landing, Login, rememberTarget, Signup } from "./pages/Public";
import { Requests } from "./pages/Requests";
import { logOut, Settings } from "./pages/Settings";
import { Standing } from "./pages/Standing";
import { Link, matchRoute, navigate, type Route, useLocation } from "./router";
import { MemberState } from "./state";

const AccessHistory = lazy(() => import("../verify/AccessHistory"));
// Verification requests from the member's other devices or contacts, wherever they are in the
// app: only once this browser's e2ee device runs (the chunk is loaded by then).
const VerificationRequests = lazy(() => import("../e2ee/VerifyDevice").then((m) => ({ default: m.VerificationRequests })));

function E2eeRequests() {
  const [ready, setReady] = useState(e2eeStatus.get().phase === "ready");
  useEffect(() => e2eeStatus.subscribe((status) => setReady(status.phase === "ready")), []);
  if (!ready) return null;
  return (
    <Suspense fallback={null}>
      <VerificationRequests />
    </Suspense>
  );
}

export default function MemberApp() {
  const [session, setSession] = useState<Session | null>(memberSession.get());
  const [state, setState] = useState<MemberState | null>(null);
  useEffect(() => memberSession.subscribe(setSession), []);
  useEffect(() => {
    if (!session) {
      setState(null);
      return;
    }
    const created = new MemberState(session);
    setState(created);
    void created.start();
    return () => created.stop();
  }, [session?.token]);

  const { path } = useLocation();
  const route = matchRoute(path);

  if (!session || !state) return <SignedOut route={route} path={path} />;
  return (
    <MemberContext.Provider value={state}>
      <SignedIn route={route} />
    </MemberContext.Provider>
  );
}

function SignedOut({ route, path }: { route: Route; path: string }) {
  const needsSession = !["home", "signup", "login", "not-found"].includes(route.name);
  useEffect(() => {
    if (needsSession) {
      rememberTarget(path);
      navigate("/login", { replace: true });
    }
  }, [needsSession, path]);
  let page;
  switch (route.name) {
    case "signup":
      page = <Signup />;
      break;
    case "login":
      page = <Login />;
      break;
    case "not-found":
      page = <NotFound />;
      break;
    default:
      page = needsSession ? <Login /> : <Landing />;
  }
  return (
    <div class="app signed-out">
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <Link href="/" class="brand">
          Keyhold
        </Link>
        <nav aria-label="Account">
          <ul class="nav-list open">
            <li>
              <Link href="/login" aria-current={route.name === "login" ? "page" : undefined}>
                Log in
              </Link>
            </li>
            <li>
              <Link href="/signup" aria-current={route.name === "signup" ? "page" : undefined}>
                Sign up
              </Link>
            </li>
            <li>
              <a href="/transparency">Transparency</a>
            </li>
          </ul>
        </nav>
      </header>
      <main id="main" tabIndex={-1} class="page">
        {page}
      </main>
    </div>
  );
}

const NAV: [Route["name"], string, string][] = [
  ["home", "/", "Chats"],
  ["requests", "/requests", "Requests"],
  ["settings", "/settings", "Settings"],
  ["devices", "/devices", "Devices"],
  ["standing", "/standing", "Standing"],
  ["access", "/access", "Access history"],
];

function SignedIn({ route }: { route: Route }) {
  const state = useMember();
  const [menuOpen, setMenuOpen] = useState(false);
  const [logoutError, setLogoutError] = useState<string | null>(null);
  useEffect(() => {
    if (route.name === "login" || route.name === "signup") navigate("/", { replace: true });
    setMenuOpen(false);
  }, [route.name, route.name === "conversation" ? route.id : 0]);

  let page;
  switch (route.name) {
    case "conversation":
      page = <ConversationPage id={route.id} />;
      break;
    case "requests":
      page = <Requests />;
      break;
    case "settings":
      page = <Settings />;
      break;
    case "devices":
      page = <Devices />;
      break;
    case "standing":
      page = <Standing />;
      break;
    case "access":
      page = <AccessPage />;
      break;
    case "not-found":
      page = <NotFound />;
      break;
    default:
      page = <ChatsHome />;
  }
  const requests = state.requests.size;
  const withSidebar = route.name === "conversation";
  return (
    <div class={`app signed-in${withSidebar ? " in-conversation" : ""}`}>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <Link href="/" class="brand">
          Keyhold
        </Link>
        <button
          type="button"
          class="menu-toggle"
          aria-expanded={menuOpen ? "true" : "false"}
          aria-controls="main-nav"
          onClick={() => setMenuOpen(!menuOpen)}
        >
          Menu
        </button>
        <nav aria-label="Main" id="main-nav" class={menuOpen ? "open" : ""}>
          <ul class="nav-list">
            {NAV.map(([name, href, label]) => (
              <li key={name}>
                <Link href={href} aria-current={route.name === name ? "page" : undefined}>
                  {label}
                  {name === "requests" && requests > 0 && (
                    <span class="count" aria-label={`, ${requests} waiting`}>
                      {requests}
                    </span>
                  )}
                </Link>
              </li>
            ))}
            <li class="me">
              <span class="muted">@{state.username}</span>{" "}
              <Button
                class="small"
                onClick={() => {
                  logOut(state, false).catch((err) => setLogoutError(String(err)));
                }}
              >
                Log out
              </Button>
            </li>
          </ul>
        </nav>
      </header>
      <ConnectionBanner />
      {logoutError && (
        <p class="error" role="alert">
          {logoutError}
        </p>
      )}
      <Toasts />
      <E2eeRequests />
      <div class={`shell${withSidebar ? " with-sidebar" : ""}`}>
        {withSidebar && (
          <aside class="sidebar" aria-label="Your conversations">
            <ConversationList compact activeId={route.id} />
          </aside>
        )}
        <main id="main" tabIndex={-1} class="page" key={route.name === "conversation" ? `c${route.id}` : route.name}>
          {page}
        </main>
      </div>
    </div>
  );
}

function ConnectionBanner() {
  const state = useMember();
  const status = state.streamStatus;
  if (status === "online" || status === "connecting") return null;
  if (status === "ended") {
    return (
      <p class="connection ended" role="status">
        Live updates stopped{state.refusedReason ? `: ${state.refusedReason}` : ""}.
      </p>
    );
  }
  // 4429: every stream this member may have is taken (other tabs, other devices).
  const full = state.stream.lastCloseCode === 4429;
  return (
    <p class="connection offline" role="status" data-testid="offline-banner">
      {full
        ? "Not connected: too many of your tabs and devices are connected to Keyhold. Close one, and this tab connects by itself; messages you send are kept and sent meanwhile."
        : "Offline: reconnecting to Keyhold… Messages you send are kept and sent when the connection is back; nothing you missed is lost."}{" "}
      <button type="button" class="link-button" onClick={() => state.stream.reconnectNow()}>
        Retry now
      </button>
    </p>
  );
}

function Toasts() {
  const state = useMember();
  return (
    <div class="toasts" aria-live="polite">
      {state.toasts.map((toast) => (
        <div key={toast.id} class={`toast ${toast.tone}`}>
          <p>
            {toast.text}{" "}
            {toast.href && (
              <Link href={toast.href} onClick={() => state.dismissToast(toast.id)}>
                {toast.linkText ?? "Open"}
              </Link>
            )}
          </p>
          <button type="button" class="link-button" onClick={() => state.dismissToast(toast.id)}>
            Dismiss<span class="sr-only"> this notice</span>
          </button>
        </div>
      ))}
    </div>
  );
}

function AccessPage() {
  const state = useMember();
  const heading = usePage("Access history");
  return (
    <div>
      <h1 ref={heading} tabIndex={-1} class="sr-only">
        Access history
      </h1>
      <Suspense fallback={<p class="muted">Loading the access history…</p>}>
        <AccessHistory token={state.session.token} />
      </Suspense>
    </div>
  );
}

function NotFound() {
  const heading = usePage("Not found");
  return (
    <div>
      <h1 ref={heading} tabIndex={-1}>
        Page not found
      </h1>
      <p>
        There is no page here. <Link href="/">Go to the start</Link>.
      </p>
    </div>
  );
}
