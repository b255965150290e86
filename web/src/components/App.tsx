import { useCallback, useEffect, useRef, useState, useSyncExternalStore } from "react";
import type { Controller } from "../controller";
import { displayMoney, parsePriceCents } from "../money";
import { balanceShort } from "../store";
import { Account } from "./Account";
import { Grid } from "./Grid";
import { SignIn } from "./SignIn";
import { Stakes } from "./Stakes";
import { StatusBanner, TopBar } from "./StatusBar";
import { Taps } from "./Taps";

/** How long a notice (a refused tap's reason) stays. */
const NOTICE_MS = 6000;

export function App({ ctl }: { ctl: Controller }) {
  const state = useSyncExternalStore(ctl.store.subscribe, ctl.store.get);
  const view = state.view;
  /** Bumped by a sign-in in this tab: the view the trader returns to takes the focus the removed
   *  sign-in button had — the grid's tab stop, or the pressed Account button. */
  const [gridFocus, setGridFocus] = useState(0);
  const [navFocus, setNavFocus] = useState(0);
  const onSignedIn = useCallback(() => {
    if (ctl.store.get().view === "trade") setGridFocus((n) => n + 1);
    else setNavFocus((n) => n + 1);
  }, [ctl]);
  const accountButton = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    if (navFocus === 0) return;
    const active = document.activeElement;
    if (active && active !== document.body) return; // the trader is somewhere already: left there
    accountButton.current?.focus();
  }, [navFocus]);
  const onTap = useCallback((cell: string) => void ctl.tap(cell), [ctl]);
  /** The way from a stake the balance does not cover to a deposit: the Account, the amount focused. */
  const [focusDeposit, setFocusDeposit] = useState(false);
  const onDepositFocused = useCallback(() => setFocusDeposit(false), []);
  const toAccount = useCallback(() => {
    ctl.store.dispatch({ type: "clearNotice" });
    ctl.setView("account");
    setFocusDeposit(true);
  }, [ctl]);
  // Keep the reconnect countdown moving while disconnected.
  const [, tick] = useState(0);
  useEffect(() => {
    if (state.conn.state === "open") return;
    const id = setInterval(() => tick((n) => n + 1), 500);
    return () => clearInterval(id);
  }, [state.conn.state]);
  // A notice goes after NOTICE_MS, but not from under the focus: a keyboard user on its button
  // ("Go to Account") would be dropped on <body>. It goes once the focus has left it.
  const messages = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!state.notice) return;
    let id: ReturnType<typeof setTimeout>;
    const arm = () => {
      id = setTimeout(() => {
        if (messages.current?.contains(document.activeElement)) arm();
        else ctl.store.dispatch({ type: "clearNotice" });
      }, NOTICE_MS);
    };
    arm();
    return () => clearTimeout(id);
  }, [state.notice, ctl]);

  return (
    <div className="app">
      <TopBar state={state} onSignOut={() => void ctl.signOut()} consoleLink />
      {/* Over the page, not in its flow: a message that pushed the grid down between two taps would
          put the second one on another band than the one aimed at. */}
      <div className="messages" ref={messages}>
        <StatusBanner state={state} />
        {state.notice && (
          <p className="notice" role="alert" data-testid="notice">
            {state.notice.text}
            {state.notice.action === "account" && state.session && (
              <>
                {" "}
                <button type="button" className="notice-action" onClick={toAccount}>
                  Go to Account
                </button>
              </>
            )}
          </p>
        )}
      </div>
      {!state.session ? (
        <SignIn ctl={ctl} reason={state.signedOutReason} onSignedIn={onSignedIn} />
      ) : (
        <nav className="views" aria-label="Views">
          <button type="button" aria-pressed={view === "trade"} onClick={() => ctl.setView("trade")}>
            Trade
          </button>
          <button type="button" ref={accountButton} aria-pressed={view === "account"} onClick={() => ctl.setView("account")}>
            Account
          </button>
        </nav>
      )}
      {state.session && view === "account" ? (
        <Account ctl={ctl} focusDeposit={focusDeposit} onDepositFocused={onDepositFocused} />
      ) : (
        <main className="trade">
          {state.settings && (
            <Stakes
              settings={state.settings}
              stake={state.stake}
              slippage={state.slippage}
              onPick={(s) => ctl.store.dispatch({ type: "stake", stake: s })}
              onSlippage={(s) => ctl.store.dispatch({ type: "slippage", slippage: s })}
            />
          )}
          <Grid state={state} series={ctl.series} onTap={onTap} focusRequest={gridFocus} />
          {/* Under the grid, never above it: it comes and goes with the balance, and must not move the cells. */}
          {state.session && state.balance !== null && balanceShort(state) && (
            <p className="low-balance" data-testid="low-balance">
              Your balance ({displayMoney(state.balance)}) does not cover a stake of {state.stake}: taps are not sent.{" "}
              <button type="button" onClick={toAccount}>
                Deposit in Account
              </button>
            </p>
          )}
          <Taps taps={state.taps} stepCents={state.settings ? parsePriceCents(state.settings.price_step) : null} />
        </main>
      )}
    </div>
  );
}
