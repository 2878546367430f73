"""Which venue an account's order goes to: `paper` for everyone, ccxt venues per account."""

from __future__ import annotations

from rt.errors import BadRequest, Forbidden
from rt.exchanges import Exchange, ExchangeUnavailable


class Venues:
    def __init__(self, paper: Exchange) -> None:
        self.paper = paper
        self._accounts: dict[tuple[str, str], Exchange] = {}

    def add(self, account_id: str, exchange: Exchange) -> None:
        self._accounts[(account_id, exchange.id)] = exchange

    def all(self) -> list[Exchange]:
        return [self.paper, *self._accounts.values()]

    def names(self, account_id: str) -> list[str]:
        return ["paper", *(name for (acct, name) in self._accounts if acct == account_id)]

    def get(self, account_id: str, exchange_id: str, *, test_key: bool = False) -> Exchange:
        if exchange_id == "paper":
            return self.paper
        if test_key:
            raise Forbidden("rt_test_ keys trade only on the paper venue", code="INSUFFICIENT_SCOPE")
        venue = self._accounts.get((account_id, exchange_id))
        if venue is None:
            raise BadRequest(
                f"exchange {exchange_id!r} is not configured for this account",
                errors=[{"field": "exchange", "message": f"one of {', '.join(self.names(account_id))}"}],
            )
        if not venue.connected:
            raise ExchangeUnavailable(f"exchange {exchange_id} is not connected; rt is reconnecting")
        return venue
