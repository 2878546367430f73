"""Moved to rt.records.accounts and rt.records.trading."""

from rt.records.accounts import Account as Account
from rt.records.accounts import ApiKey as ApiKey
from rt.records.accounts import AuditEntry as AuditEntry
from rt.records.accounts import Usage as Usage
from rt.records.accounts import UsageDelta as UsageDelta
from rt.records.accounts import VenueRecord as VenueRecord
from rt.records.trading import IdempotencyRecord as IdempotencyRecord
from rt.records.trading import StoredResponse as StoredResponse
from rt.records.trading import TradeBatch as TradeBatch
