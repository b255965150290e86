import { describe, expect, it } from "vitest";
import {
  displayMoney,
  formatMoney,
  minMultiplierFor,
  normaliseMoneyInput,
  parseMoney,
  parseMultiplier,
  parseSignedMoney,
  payoutOf,
} from "../money";

describe("money", () => {
  it("parses decimal strings into micro-units exactly", () => {
    expect(parseMoney("10")).toBe(10_000_000n);
    expect(parseMoney("2.5")).toBe(2_500_000n);
    expect(parseMoney("0.000001")).toBe(1n);
    expect(parseMoney("123456789012345.123456")).toBe(123456789012345123456n);
    expect(parseSignedMoney("-10")).toBe(-10_000_000n);
  });
  it("refuses what is not a money string", () => {
    for (const bad of ["", "1.", ".5", "1e3", "-1", "01", "1.0000001", " 1", "NaN", "1,5"]) {
      expect(() => parseMoney(bad), bad).toThrow(RangeError);
    }
  });
  it("formats back to the shortest string", () => {
    expect(formatMoney(10_000_000n)).toBe("10");
    expect(formatMoney(2_500_000n)).toBe("2.5");
    expect(formatMoney(1n)).toBe("0.000001");
    expect(formatMoney(-1_500_000n)).toBe("-1.5");
    expect(formatMoney(0n)).toBe("0");
  });
  it("floors payout = stake × multiplier in micro-units (SPEC §2)", () => {
    expect(payoutOf("10", "3.25")).toBe("32.5");
    expect(payoutOf("0.000003", "1.5")).toBe("0.000004"); // 4.5 µ floored
    expect(payoutOf("1", "1.0101")).toBe("1.0101");
    expect(payoutOf("0.1", "3.3333")).toBe("0.33333");
    // where float would go wrong: 0.1 * 3 = 0.30000000000000004
    expect(payoutOf("0.1", "3")).toBe("0.3");
  });
  it("computes the accepted minimum multiplier with integer arithmetic", () => {
    expect(minMultiplierFor("3.25", 500n)).toBe("3.0875");
    expect(minMultiplierFor("1.02", 500n)).toBe("1.01"); // never below the floor
    expect(minMultiplierFor("1.005", 500n)).toBe("1.005"); // never above the quote
    expect(parseMultiplier(minMultiplierFor("99.9999", 500n))).toBeLessThan(parseMultiplier("99.9999"));
  });
  it("normalises typed amounts or refuses them", () => {
    expect(normaliseMoneyInput("100")).toBe("100");
    expect(normaliseMoneyInput("007.50")).toBe("7.5");
    expect(normaliseMoneyInput("0")).toBeNull();
    expect(normaliseMoneyInput("1.1234567")).toBeNull();
    expect(normaliseMoneyInput("-3")).toBeNull();
    expect(normaliseMoneyInput("1e2")).toBeNull();
  });
  it("displays with grouping and two decimals at least", () => {
    expect(displayMoney("1234567.5")).toBe("1,234,567.50");
    expect(displayMoney("-10")).toBe("−10.00");
    expect(displayMoney("0.000001")).toBe("0.000001");
  });
});

describe("slippage choices", () => {
  it("'any' sends the 1.01 floor; 25 % takes a quarter off, floored", () => {
    expect(minMultiplierFor("3.2", 10_000n)).toBe("1.01");
    expect(minMultiplierFor("3.2", 2500n)).toBe("2.4");
    expect(minMultiplierFor("5.3819", 1000n)).toBe("4.8437");
  });
});
