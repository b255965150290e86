"""The market (SPEC §3, §4): prices, the feed's health, the grid and its quotes.

- `prices`  ticks in Redis: the last one, a 7-day history, the fenced publisher, window statistics
- `feed`    the feed monitor and its circuit breaker (healthy / degraded / critical, hysteresis)
- `grid`    cells, bands and which cells are placeable (SPEC §3)
- `quotes`  the touch-probability model, multipliers and the quote book (SPEC §4)
- `routes`  GET /api/v1/grid and GET /api/v1/prices

May import: `app.config`, `app.errors`, `app.units`, `app.services`. Never `app.bets` or `workers`.
"""
