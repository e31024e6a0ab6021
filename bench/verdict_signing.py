"""The cost of guard's verdict signature per record, against the serde work on the same record.

    .venv/bin/python bench/verdict_signing.py --records 5000

One process, no Kafka: a realistic ``inference.requests.safe`` record (a redacted prompt of
about 1 KiB with guard's verdict, in the Confluent wire format) is, in turn:

* encoded by guard and decoded by infer with the topic's schema (the baseline: what
  every record already costs on this hop);
* signed as guard's runner signs it and verified as infer verifies it (Ed25519 over the
  topic name, key and value).

Best of five rounds each; prints microseconds per record and the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable

from streams.contracts.catalog import catalog_for
from streams.contracts.records import GuardVerdict, InferenceRequest, utcnow
from streams.contracts.serde import AvroSerde
from streams.runtime.signing import Signer, Verifier, new_keypair
from streams.runtime.testing import MemoryRegistry
from streams.settings import Settings

SAFE = "inference.requests.safe"


def best_us(work: Callable[[], None], records: int) -> float:
    """Best of five rounds of ``work`` (which handles ``records`` records), µs per record."""
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        work()
        rounds.append(time.perf_counter() - started)
    return min(rounds) / records * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    args = parser.parse_args()
    settings = Settings()
    catalog = catalog_for(settings)
    serde = AvroSerde(MemoryRegistry.for_catalog(catalog), catalog, settings.registry)  # type: ignore[arg-type]
    encode, schema = serde.encoder(SAFE), catalog.value_schema(SAFE)
    verdict = GuardVerdict("1", "pass", True, utcnow(), {"EMAIL_ADDRESS": 1}, 0.02)
    text = "Please refund order <EMAIL_ADDRESS> placed last week; " * 18  # ~1 KiB
    request = dataclasses.replace(InferenceRequest.new("acme", "minilm", text), guard=verdict)
    avro = request.to_avro()
    value, key = encode(avro), request.request_id.encode()
    private, public = new_keypair()
    signer = Signer.from_secret(private, "bench key")
    verifier = Verifier.from_settings([public], "bench keys")
    n = args.records

    def serde_round() -> None:
        for _ in range(n):
            serde.decode(encode(avro), schema, topic=SAFE)

    def sign_round() -> None:
        for _ in range(n):
            verifier.verify(SAFE, key, value, signer.headers(SAFE, key, value))

    def sign_only() -> None:
        for _ in range(n):
            signer.headers(SAFE, key, value)

    baseline = best_us(serde_round, n)
    both = best_us(sign_round, n)
    sign = best_us(sign_only, n)
    print(f"record: {len(value)} bytes")
    print(f"encode + decode (baseline): {baseline:8.1f} µs/record")
    split = f"sign {sign:.1f}, verify {both - sign:.1f}"
    print(f"sign + verify:              {both:8.1f} µs/record ({split})")
    print(f"sign + verify / encode + decode = {both / baseline:.2f}")


if __name__ == "__main__":
    main()
