import { describe, expect, it } from "vitest";
import { compareEventIds, parseBetRecord, parseGridResponse, parseLedgerPage, parseServerMsg, WireError } from "../wire";

const settings = {
  column_seconds: 5, price_step: "10.00", columns_ahead: 12, min_lead_columns: 2, rows_each_side: 10,
  house_edge: "0.05", stake_presets: ["1", "5", "10", "25", "100"], min_stake: "1", max_stake: "1000",
  chain_id: 1, siwe_domain: "localhost:8443",
};

describe("wire", () => {
  it("parses every server message type of SPEC §8 / §8a", () => {
    expect(parseServerMsg('{"type":"price","price":"67123.45","ts":1763711990123}')).toEqual({ type: "price", price: "67123.45", ts: 1763711990123 });
    expect(parseServerMsg('{"type":"status","feed":"critical","betting":false}')).toEqual({ type: "status", feed: "critical", betting: false });
    expect(parseServerMsg('{"type":"status","feed":"healthy","betting":false,"reason":"maintenance"}')).toMatchObject({ reason: "maintenance" });
    expect(parseServerMsg('{"type":"balance","balance":"90"}')).toEqual({ type: "balance", balance: "90" });
    expect(
      parseServerMsg('{"type":"bet:accepted","req":"t-1","bet_id":"b1","status":"pending","cell":"100:5","stake":"10","multiplier":"2.5","payout":"25"}'),
    ).toMatchObject({ type: "bet:accepted", req: "t-1", bet_id: "b1" });
    expect(
      parseServerMsg('{"type":"bet:error","req":"t-2","status":503,"error":{"code":"betting_suspended","message":"Betting is suspended."},"retry_after":5}'),
    ).toEqual({ type: "bet:error", req: "t-2", status: 503, error: { code: "betting_suspended", message: "Betting is suspended." }, retry_after: 5 });
    expect(parseServerMsg('{"type":"bet:confirmed","bet_id":"b1","status":"confirmed","cell":"100:5","stake":"10","multiplier":"2.5","payout":"25"}')).toMatchObject({ type: "bet:confirmed" });
    expect(parseServerMsg('{"type":"bet:rejected","bet_id":"b1","cell":"100:5","reason":"insufficient_funds"}')).toMatchObject({ reason: "insufficient_funds" });
    expect(parseServerMsg('{"type":"bet:resolved","bet_id":"b1","status":"won","payout":"25"}')).toMatchObject({ status: "won" });
    const grid = parseServerMsg('{"type":"grid","ts":1,"price":"100.00","current_row":10,"column_seconds":5,"price_step":"10.00","columns":[10,15],"rows":[9,10,11],"quotes":[["2.5",null,"3"],["1.5","1.2",null]]}');
    expect(grid.type === "grid" && grid.quotes[0]?.[1]).toBeNull();
  });
  it("refuses money as a JSON number, unknown types, and malformed matrices", () => {
    expect(() => parseServerMsg('{"type":"balance","balance":90}')).toThrow(WireError);
    expect(() => parseServerMsg('{"type":"balance","balance":"1.0000001"}')).toThrow(WireError);
    expect(() => parseServerMsg('{"type":"price","price":67123.45,"ts":1}')).toThrow(WireError);
    expect(() => parseServerMsg('{"type":"nope"}')).toThrow(WireError);
    expect(() => parseServerMsg("not json")).toThrow(WireError);
    expect(() => parseServerMsg('{"type":"status","feed":"fine","betting":true}')).toThrow(WireError);
    expect(() => parseServerMsg('{"type":"bet:resolved","bet_id":"b","status":"pending","payout":"0"}')).toThrow(WireError);
    expect(() =>
      parseServerMsg('{"type":"grid","ts":1,"price":"1.00","current_row":0,"column_seconds":5,"price_step":"10.00","columns":[10],"rows":[1,2],"quotes":[["2"]]}'),
    ).toThrow(WireError);
  });
  it("parses GET /grid, including an empty book", () => {
    const full = parseGridResponse({
      server_time: 5, ts: 4, price: "67123.45", current_row: 6712, column_seconds: 5, price_step: "10.00",
      columns: [100], rows: [6712], quotes: [["2"]], feed: { type: "status", feed: "healthy", betting: true }, settings,
    });
    expect(full.settings.stake_presets).toEqual(["1", "5", "10", "25", "100"]);
    const empty = parseGridResponse({ server_time: 5, price: null, columns: [], rows: [], quotes: [], feed: { type: "status", feed: "critical", betting: false }, settings });
    expect(empty.price).toBeNull();
    expect(() => parseGridResponse({ server_time: 5, price: null, feed: {}, settings: { ...settings, stake_presets: [1] } })).toThrow(WireError);
  });
  it("parses bets and signed ledger amounts", () => {
    const b = parseBetRecord({ bet_id: "b", status: "lost", cell: "1:2", stake: "10", multiplier: "2", payout: "0", potential_payout: "20", placed_at: 1, settled_at: 2 });
    expect(b.potential_payout).toBe("20");
    const l = parseLedgerPage({ entries: [{ id: 3, amount: "-10", balance_after: "90", ref_type: "bet", ref_id: "b", created_at: 1 }], next_cursor: null });
    expect(l.entries[0]?.amount).toBe("-10");
  });
});

describe("auth:ok", () => {
  it("parses the server's answer to the auth message", () => {
    expect(parseServerMsg('{"type":"auth:ok","address":"0x1563915e194D8CfBA1943570603F7606A3115508"}')).toEqual({
      type: "auth:ok",
      address: "0x1563915e194D8CfBA1943570603F7606A3115508",
    });
  });
});

describe("resume (docs/API.md: Resuming after a reconnect)", () => {
  it("parses the id of owner events and the resumed answer", () => {
    expect(parseServerMsg('{"id":"1764230000000-3","type":"balance","balance":"90"}')).toEqual({ type: "balance", balance: "90", id: "1764230000000-3" });
    expect(parseServerMsg('{"id":"1-0","type":"bet:resolved","bet_id":"b","status":"lost","payout":"0"}')).toMatchObject({ id: "1-0" });
    expect(parseServerMsg('{"type":"resumed","after":"1-0","last":null,"complete":false}')).toEqual({ type: "resumed", after: "1-0", last: null, complete: false });
    expect(parseServerMsg('{"type":"resumed","after":"1-0","last":"2-5","complete":true}')).toMatchObject({ last: "2-5", complete: true });
    expect(() => parseServerMsg('{"id":"1.5","type":"balance","balance":"90"}')).toThrow(WireError);
    expect(() => parseServerMsg('{"type":"resumed","after":"1-0","last":null}')).toThrow(WireError);
  });
  it("orders ids as (ms, seq) integer pairs, not as strings or floats", () => {
    expect(compareEventIds("999-5", "1000-0")).toBeLessThan(0);
    expect(compareEventIds("1-10", "1-9")).toBeGreaterThan(0);
    expect(compareEventIds("1764230000000-3", "1764230000000-3")).toBe(0);
    expect(compareEventIds("9007199254740993-0", "9007199254740992-0")).toBeGreaterThan(0);
  });
});
