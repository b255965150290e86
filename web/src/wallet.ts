// Wallet discovery (EIP-6963, falling back to window.ethereum) and the few EIP-1193 calls we need.
import type { Hex } from "./wire";

export interface Eip1193Provider {
  request(args: { method: string; params?: unknown[] | object }): Promise<unknown>;
}

export interface WalletInfo {
  uuid: string;
  name: string;
  icon: string;
  rdns: string;
}

export interface DiscoveredWallet {
  info: WalletInfo;
  provider: Eip1193Provider;
}

interface AnnounceEvent extends Event {
  detail: { info: WalletInfo; provider: Eip1193Provider };
}

declare global {
  interface Window {
    ethereum?: Eip1193Provider;
  }
}

/** Listen for EIP-6963 announcements; calls `onChange` with the full list each time one arrives. */
export function discoverWallets(onChange: (wallets: DiscoveredWallet[]) => void): () => void {
  const found = new Map<string, DiscoveredWallet>();
  const publish = () => {
    const list = [...found.values()];
    if (list.length === 0 && window.ethereum) {
      list.push({
        info: { uuid: "window.ethereum", name: "Browser wallet", icon: "", rdns: "window.ethereum" },
        provider: window.ethereum,
      });
    }
    onChange(list);
  };
  const onAnnounce = (e: Event) => {
    const d = (e as AnnounceEvent).detail;
    if (!d || typeof d.provider?.request !== "function" || !d.info?.uuid) return;
    found.set(d.info.uuid, { info: d.info, provider: d.provider });
    publish();
  };
  window.addEventListener("eip6963:announceProvider", onAnnounce);
  window.dispatchEvent(new Event("eip6963:requestProvider"));
  publish();
  return () => window.removeEventListener("eip6963:announceProvider", onAnnounce);
}

export class WalletError extends Error {
  override name = "WalletError";
}

function providerError(e: unknown): { code: number | null; message: string } {
  if (typeof e === "object" && e !== null) {
    const o = e as { code?: unknown; message?: unknown };
    return { code: typeof o.code === "number" ? o.code : null, message: typeof o.message === "string" ? o.message : String(e) };
  }
  return { code: null, message: String(e) };
}

export async function requestAccount(p: Eip1193Provider): Promise<Hex> {
  let accounts: unknown;
  try {
    accounts = await p.request({ method: "eth_requestAccounts" });
  } catch (e) {
    const { code, message } = providerError(e);
    throw new WalletError(code === 4001 ? "You declined the connection in your wallet." : `The wallet refused: ${message}`);
  }
  if (!Array.isArray(accounts) || typeof accounts[0] !== "string" || !/^0x[0-9a-fA-F]{40}$/.test(accounts[0]))
    throw new WalletError("The wallet returned no account. Unlock it and try again.");
  return accounts[0] as Hex;
}

export async function chainId(p: Eip1193Provider): Promise<number> {
  const id = await p.request({ method: "eth_chainId" });
  if (typeof id !== "string" || !/^0x[0-9a-fA-F]+$/.test(id)) throw new WalletError("The wallet did not say which chain it is on.");
  return Number.parseInt(id, 16);
}

/** Make sure the wallet is on `want`; ask it to switch; explain when it cannot. */
export async function ensureChain(p: Eip1193Provider, want: number): Promise<void> {
  const have = await chainId(p);
  if (have === want) return;
  try {
    await p.request({ method: "wallet_switchEthereumChain", params: [{ chainId: `0x${want.toString(16)}` }] });
  } catch (e) {
    const { code } = providerError(e);
    if (code === 4001) throw new WalletError(`Tap Trading signs in on chain ${want}; you declined to switch from chain ${have}.`);
    if (code === 4902)
      throw new WalletError(`Your wallet does not know chain ${want}. Add it in the wallet, then sign in again.`);
    throw new WalletError(`Your wallet is on chain ${have} and could not switch to chain ${want}. Switch it by hand, then sign in again.`);
  }
  const now = await chainId(p);
  if (now !== want) throw new WalletError(`Your wallet is still on chain ${now}; Tap Trading needs chain ${want}.`);
}

/** personal_sign (EIP-191) of a UTF-8 message, hex-encoded as wallets expect. */
export async function personalSign(p: Eip1193Provider, address: Hex, message: string): Promise<Hex> {
  const hexMsg = ("0x" + Array.from(new TextEncoder().encode(message), (b) => b.toString(16).padStart(2, "0")).join("")) as Hex;
  let sig: unknown;
  try {
    sig = await p.request({ method: "personal_sign", params: [hexMsg, address] });
  } catch (e) {
    const { code, message: m } = providerError(e);
    throw new WalletError(code === 4001 ? "You declined to sign in." : `The wallet could not sign: ${m}`);
  }
  if (typeof sig !== "string" || !/^0x[0-9a-fA-F]{130}$/.test(sig)) throw new WalletError("The wallet returned an invalid signature.");
  return sig as Hex;
}
