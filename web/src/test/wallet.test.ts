import { describe, expect, it } from "vitest";
import { ensureChain, personalSign, WalletError, type Eip1193Provider } from "../wallet";

function provider(chain: number, onSwitch: (want: string) => { code: number } | number): Eip1193Provider & { calls: string[] } {
  let current = chain;
  const calls: string[] = [];
  return {
    calls,
    async request({ method, params }) {
      calls.push(method);
      if (method === "eth_chainId") return `0x${current.toString(16)}`;
      if (method === "wallet_switchEthereumChain") {
        const want = (params as { chainId: string }[])[0]!.chainId;
        const r = onSwitch(want);
        if (typeof r === "number") {
          current = r;
          return null;
        }
        throw Object.assign(new Error("nope"), r);
      }
      if (method === "personal_sign") throw Object.assign(new Error("User rejected"), { code: 4001 });
      throw new Error(method);
    },
  };
}

describe("chain check", () => {
  it("does nothing when the wallet is already on the server's chain", async () => {
    const p = provider(1, () => 1);
    await ensureChain(p, 1);
    expect(p.calls).toEqual(["eth_chainId"]);
  });
  it("asks the wallet to switch, then checks again", async () => {
    const p = provider(5, (want) => Number.parseInt(want, 16));
    await ensureChain(p, 1);
    expect(p.calls).toEqual(["eth_chainId", "wallet_switchEthereumChain", "eth_chainId"]);
  });
  it("explains a refusal, an unknown chain, and a wallet that cannot switch", async () => {
    await expect(ensureChain(provider(5, () => ({ code: 4001 })), 1)).rejects.toThrow(/declined to switch from chain 5/);
    await expect(ensureChain(provider(5, () => ({ code: 4902 })), 1)).rejects.toThrow(/does not know chain 1/);
    await expect(ensureChain(provider(5, () => ({ code: -32603 })), 1)).rejects.toThrow(/Switch it by hand/);
    await expect(ensureChain(provider(5, () => 7), 1)).rejects.toThrow(WalletError);
  });
  it("says so when the trader declines to sign", async () => {
    await expect(personalSign(provider(1, () => 1), "0x1563915e194D8CfBA1943570603F7606A3115508", "hi")).rejects.toThrow(
      "You declined to sign in.",
    );
  });
});
