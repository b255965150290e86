// Wallet choice and Sign-In with Ethereum. No wallet: say so, and how to get one.
import { useEffect, useState } from "react";
import type { Controller } from "../controller";
import { discoverWallets, type DiscoveredWallet } from "../wallet";
import { ApiFailure } from "../api";

/** `onSignedIn`: called once the session is in place (this panel is gone then, and the focus with it). */
export function SignIn({ ctl, reason, onSignedIn }: { ctl: Controller; reason: string | null; onSignedIn?: () => void }) {
  const [wallets, setWallets] = useState<DiscoveredWallet[]>([]);
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => discoverWallets(setWallets), []);

  const go = async (w: DiscoveredWallet) => {
    setBusy(w.info.uuid);
    setError(null);
    try {
      await ctl.signIn(w);
      onSignedIn?.();
    } catch (e) {
      setError(e instanceof ApiFailure ? `Sign-in refused: ${e.message}` : e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(null);
    }
  };

  return (
    <section className="panel signin" aria-labelledby="signin-title">
      <h2 id="signin-title">Sign in with your wallet</h2>
      {reason && (
        <p className="alert" role="alert">
          {reason}
        </p>
      )}
      {wallets.length === 0 ? (
        <div className="no-wallet" role="status">
          <p>
            <strong>No Ethereum wallet found in this browser.</strong>
          </p>
          <p>
            Install a wallet extension that supports EIP-6963 (for example MetaMask, Rabby or Coinbase Wallet) from
            its official site, or open this page in a wallet's built-in browser on your phone. Then reload.
          </p>
        </div>
      ) : (
        <>
          <p>Pick a wallet. You sign one message; after that every tap is signed by a key kept in this tab.</p>
          <ul className="wallets">
            {wallets.map((w) => (
              <li key={w.info.uuid}>
                <button type="button" className="wallet" disabled={busy !== null} onClick={() => void go(w)}>
                  {w.info.icon && <img src={w.info.icon} alt="" width={24} height={24} />}
                  <span>{busy === w.info.uuid ? `Waiting for ${w.info.name}…` : `Sign in with ${w.info.name}`}</span>
                </button>
              </li>
            ))}
          </ul>
        </>
      )}
      {error && (
        <p className="alert" role="alert" data-testid="signin-error">
          {error}
        </p>
      )}
    </section>
  );
}
