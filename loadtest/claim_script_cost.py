"""Redis CPU per bet claim, before and after the exposure caps and the halt switch (issue 14).

    .venv/bin/python loadtest/claim_script_cost.py [--claims 20000]

The caps cost no extra round trip (they are decided inside the claim script), but the script does
more: a GET of the halt switch, two HGETs, two HINCRBYs and an HSET (two EXPIREs and a ZADD for a
column's first bet only). This runs `--claims` accepted claims (distinct traders, nonces and cells
over 10 columns × 21 rows) through the script as it was before (its text is kept here) and as it is
now, each on a fresh private redis-server, and reads Redis's own
`usec_per_call` for EVALSHA (time inside Redis, unaffected by the client; a busy machine's scheduling
still shows, so the runs alternate and the minimum is the figure to compare).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.bets.claims import _CLAIM
from app.keys import (
    BETTING_HALT_KEY,
    EXPOSURE_COLUMNS,
    PENDING_INDEX,
    bet_key,
    cell_key,
    exposure_bets_key,
    exposure_key,
    nonce_key,
)
from tests.support.servers import RedisServer

# The claim script before issue 14 (nonce, cell claim, pending record, index).
OLD_CLAIM = """
local old = redis.call('GET', KEYS[1])
if old then return {0, old} end
if ARGV[3] == '0' then return {1, ''} end
local owner = redis.call('GET', KEYS[2])
if owner then return {2, owner} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[5])
redis.call('SET', KEYS[3], ARGV[6], 'EX', ARGV[7])
redis.call('ZADD', KEYS[4], ARGV[8], ARGV[4])
return {3, ''}
"""


def run(script_text: str, new: bool, claims: int, tmp: Path) -> float:
    server = RedisServer(tmp / ("new" if new else "old"))
    server.start()
    try:
        r = server.client()
        script = r.register_script(script_text)
        record = orjson.dumps({"bet_id": "x" * 20, "status": "pending", "cell": "1:1", "stake": 1_000_000})
        pipe = r.pipeline(transaction=False)
        for i in range(claims):
            address = f"0x{i:040x}"
            t_start, row = 1_763_712_000 + 5 * (i % 10), 6700 + i % 21
            cell = f"{t_start}:{row}"
            bet_id = f"b{i:019d}"
            keys = [nonce_key(address, f"n{i}"), cell_key(address, cell), bet_key(bet_id), PENDING_INDEX]
            args: list = [f"fp|{bet_id}", 90, "1", bet_id, 120, record, 86400, 1_763_711_990_000 + i]
            if new:
                keys += [
                    BETTING_HALT_KEY,
                    exposure_key(t_start),
                    exposure_bets_key(t_start),
                    EXPOSURE_COLUMNS,
                ]
                args += [3_000_000, row, 10**15, 10**15, 3700, t_start]
            script(keys=keys, args=args, client=pipe)
            if len(pipe) >= 500:
                pipe.execute()
        pipe.execute()
        stats = r.info("commandstats")
        return float(stats["cmdstat_evalsha"]["usec_per_call"])
    finally:
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--claims", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5, help="runs of each, alternating; min and median shown")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="claim-cost-"))
    old: list[float] = []
    new: list[float] = []
    try:
        for i in range(args.rounds):
            old.append(run(OLD_CLAIM, False, args.claims, tmp / f"{i}"))
            new.append(run(_CLAIM, True, args.claims, tmp / f"{i}"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"| claim script | Redis µs per accepted claim, min / median of {args.rounds} runs"
        f" (EVALSHA usec_per_call, {args.claims} claims each) |"
    )
    print("|---|---:|")
    print(f"| before (nonce, cell, record, index) | {min(old):.2f} / {statistics.median(old):.2f} |")
    print(f"| with the halt switch and the exposure caps | {min(new):.2f} / {statistics.median(new):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
