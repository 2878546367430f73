"""Plain data every layer shares: events, books, orders, positions, accounts, keys, strategies, venues. Nothing here
imports any other part of rt, so the store, the bus, the engine and the API can all import it."""
