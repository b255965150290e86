"""Exchange price sources: Binance and Coinbase public websockets (see each module)."""

from workers.exchanges.binance import BinanceSource
from workers.exchanges.coinbase import CoinbaseSource

__all__ = ["BinanceSource", "CoinbaseSource"]
