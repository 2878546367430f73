"""Which venue an account's order goes to: `paper` for everyone, its simulated aliases (RT_PAPER_VENUES) for everyone,
and per account its real ccxt venues and its own simulated ones (`rt venues add --paper`)."""

from __future__ import annotations

from collections.abc import Iterable

from rt.errors import BadRequest, Forbidden
from rt.exchanges import Exchange, ExchangeUnavailable
from rt.exchanges.alias import PaperAlias
from rt.exchanges.paper import PaperExchange


class Venues:
    def __init__(self, paper: PaperExchange, aliases: Iterable[str] = ()) -> None:
        self.paper = paper
        self._accounts: dict[tuple[str, str], Exchange] = {}
        # One alias per name, shared by every account that trades under it: one set of tick listeners each.
        self._aliases: dict[str, PaperAlias] = {}
        self._global: set[str] = set()
        for name in aliases:
            self._global.add(self.alias(name).id)

    def alias(self, exchange_id: str) -> PaperAlias:
        """The simulated venue named `exchange_id` (made on first use). ValueError for a name that cannot be one."""
        alias = self._aliases.get(exchange_id)
        if alias is None:
            alias = self._aliases[exchange_id] = PaperAlias(exchange_id, self.paper)
        return alias

    def add(self, account_id: str, exchange: Exchange) -> None:
        self._accounts[(account_id, exchange.id)] = exchange

    def add_simulated(self, account_id: str, exchange_id: str) -> PaperAlias:
        """Give one account a simulated venue under `exchange_id` (a venue record marked paper)."""
        alias = self.alias(exchange_id)
        self.add(account_id, alias)
        return alias

    def all(self) -> list[Exchange]:
        """Every venue once. The aliases come before the paper venue: a tick marks their positions before the paper
        venue's listeners (the hub's among them) hear it, so whoever hears of a tick reads P&L at its price."""
        seen: set[int] = set()
        out: list[Exchange] = []
        candidates: list[Exchange] = [*self._aliases.values(), self.paper, *self._accounts.values()]
        for venue in candidates:
            if id(venue) not in seen:
                seen.add(id(venue))
                out.append(venue)
        return out

    def names(self, account_id: str) -> list[str]:
        own = [name for (acct, name) in self._accounts if acct == account_id]
        return ["paper", *sorted(self._global - set(own)), *own]

    def resolve(self, account_id: str, exchange_id: str) -> Exchange | None:
        """The venue this account trades `exchange_id` on, or None. The account's own venue of that id (a real ccxt
        one, or its own simulated one) wins over a global alias of the same name."""
        if exchange_id == "paper":
            return self.paper
        venue = self._accounts.get((account_id, exchange_id))
        if venue is None and exchange_id in self._global:
            return self._aliases[exchange_id]
        return venue

    def get(self, account_id: str, exchange_id: str, *, test_key: bool = False) -> Exchange:
        venue = self.resolve(account_id, exchange_id)
        if venue is None:
            if test_key:
                raise Forbidden("rt_test_ keys trade only on simulated venues", code="INSUFFICIENT_SCOPE")
            raise BadRequest(
                f"exchange {exchange_id!r} is not configured for this account",
                errors=[{"field": "exchange", "message": f"one of {', '.join(self.names(account_id))}"}],
            )
        # A test key stays on the simulated market: paper and its aliases. A ccxt sandbox venue is simulated too,
        # but it is a real venue's test network reached with the account's credentials.
        if test_key and not (venue is self.paper or isinstance(venue, PaperAlias)):
            raise Forbidden("rt_test_ keys trade only on simulated venues", code="INSUFFICIENT_SCOPE")
        if not venue.connected:
            raise ExchangeUnavailable(f"exchange {exchange_id} is not connected; rt is reconnecting")
        return venue
