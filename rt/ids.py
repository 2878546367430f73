"""Moved to rt.records.ids."""

from rt.records.ids import ALPHABET as ALPHABET
from rt.records.ids import base62 as base62
from rt.records.ids import new_id as new_id
