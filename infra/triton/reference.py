"""In-process reference for minilm: sentence-transformers itself, in the Triton venv.

Tests and benchmarks run this with the Triton venv's python (Sluice's own
environment has no torch): it reads a JSON list of texts on stdin and writes
``{"embeddings": [[...], ...], "num_input_tokens": [...]}`` on stdout, computed
by ``SentenceTransformer.encode`` on the package's model folder and by the
package's tokenizer (padding and truncation off).

    echo '["hello world"]' | <venv>/bin/python infra/triton/reference.py
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    """Embed stdin's texts with sentence-transformers on the CPU, in fp32."""
    from minilm import counting_tokenizer, model_dir  # noqa: PLC0415
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415

    texts = json.load(sys.stdin)
    folder = model_dir()
    model = SentenceTransformer(str(folder), device="cpu")
    embeddings = model.encode(texts, batch_size=64, convert_to_numpy=True)
    counts = [len(e.ids) for e in counting_tokenizer(folder / "tokenizer.json").encode_batch(texts)]
    json.dump({"embeddings": embeddings.tolist(), "num_input_tokens": counts}, sys.stdout)


if __name__ == "__main__":
    main()
