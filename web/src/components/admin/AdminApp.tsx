// /admin: the same sign-in as the trader's app, then the console for operators, or a plain refusal.
import { useCallback, useEffect, useMemo, useState, useSyncExternalStore } from "react";
import { AdminConsole } from "../../admin/console";
import type { Controller } from "../../controller";
import { SignIn } from "../SignIn";
import { StatusBanner, TopBar } from "../StatusBar";
import { Console } from "./Console";

export function AdminApp({ ctl }: { ctl: Controller }) {
  const state = useSyncExternalStore(ctl.store.subscribe, ctl.store.get);
  const token = state.session?.token ?? null;
  // One console per session: signing in as someone else starts afresh.
  const admin = useMemo(() => (token ? new AdminConsole(ctl.api, () => token) : null), [ctl, token]);
  /** Bumped by a sign-in in this tab: the console's first control takes the focus the removed sign-in
   *  button had (the browser would leave it on <body>, the top of the page). */
  const [consoleFocus, setConsoleFocus] = useState(0);
  const onSignedIn = useCallback(() => setConsoleFocus((n) => n + 1), []);
  useEffect(() => {
    document.title = "Operator console · Tap Trading";
  }, []);
  return (
    <div className="app admin">
      <TopBar state={state} onSignOut={() => void ctl.signOut()} />
      <StatusBanner state={state} />
      <nav className="views" aria-label="Views">
        <a href="/">Trading</a>
      </nav>
      {!state.session || !admin ? (
        <SignIn ctl={ctl} reason={state.signedOutReason} onSignedIn={onSignedIn} />
      ) : (
        <Console admin={admin} focusRequest={consoleFocus} />
      )}
    </div>
  );
}
