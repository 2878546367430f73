"""rt/store Meta: the first value claimed under a name is the one every process on the store reads back."""

from __future__ import annotations

import asyncio

from rt.store import Store, open_store


async def test_the_first_claim_stays_and_every_later_one_reads_it(store: Store) -> None:
    assert await store.claim("key_pepper_fingerprint", "aaaa") == "aaaa"
    assert await store.claim("key_pepper_fingerprint", "aaaa") == "aaaa"
    assert await store.claim("key_pepper_fingerprint", "bbbb") == "aaaa"
    assert await store.claim("secret_key_fingerprint", "cccc") == "cccc", "each name is claimed on its own"


async def test_another_process_reads_the_claim_and_cannot_replace_it(store_url: str) -> None:
    first, second = await open_store(store_url), await open_store(store_url)
    try:
        assert await first.claim("name", "from-first") == "from-first"
        assert await second.claim("name", "from-second") == "from-first"
    finally:
        await first.close()
        await second.close()
    again = await open_store(store_url)
    try:
        assert await again.claim("name", "after-a-restart") == "from-first"
    finally:
        await again.close()


async def test_claims_made_at_once_all_agree_on_one_value(store_url: str) -> None:
    stores = [await open_store(store_url) for _ in range(3)]
    try:
        claims = [s.claim("name", f"value-{i}-{j}") for j in range(4) for i, s in enumerate(stores)]
        answers = await asyncio.gather(*claims)
        assert len(set(answers)) == 1
        assert answers[0] in {f"value-{i}-{j}" for j in range(4) for i in range(3)}
    finally:
        for s in stores:
            await s.close()
