"""Real time (SPEC §8, §8a): the websocket at `/ws`, the fan-out to bounded per-client queues, and
taps (bets) placed over the socket.

- `ws`     the `/ws` route: one writer greenlet per socket, one reader greenlet handling messages
- `taps`   the messages a client sends (`auth`, `bet`, `resume`): adapters over `app.bets.placement`
- `fanout` one bounded queue per connected client; a slow client is dropped, never waited for

Channel names are in `app.keys`.
"""
