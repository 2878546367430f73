"""The trading core: accounts and ledger, orders, positions, P&L; Cerberus (risk.py) and Charon (kill.py)."""
