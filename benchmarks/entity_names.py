"""Measure how the embedder scores pairs of entity names, to set the graph's name-linking threshold.

Extracts entity names with the rule-based extractor from a sample of passages of each dataset and embeds a
random sample of them. It prints percentiles of the cosine similarity of random pairs of distinct names, which
are chance links. It also scores name variants made from multi-word capitalised names: the last word alone, the
first word cut to an initial, and the words reversed. It runs in one process, with no service.

Example:
    python -m benchmarks.entity_names --datasets 2wiki musique scifact
"""

from __future__ import annotations

import argparse
import random
import sys

import numpy as np

from benchmarks.common import SHARED_DATA_DIR, read_jsonl
from retrievers.embedders import load_embedder
from retrievers.graph.extraction import EntityExtractor
from retrievers.graph.linking import LINK_SIMILARITY


def sample_names(datasets: list[str], passages: int, rng: random.Random) -> list[tuple[str, str]]:
    """Return (normalised key, name as written) for the distinct entities of `passages` passages per dataset."""
    extractor = EntityExtractor()
    names: dict[str, str] = {}
    for dataset in datasets:
        records = list(read_jsonl(SHARED_DATA_DIR / dataset / "corpus.jsonl"))
        rng.shuffle(records)
        for record in records[:passages]:
            text = f"{record.get('title', '')}\n{record['text']}"
            for mention in extractor.mentions(text):
                names.setdefault(mention.key, mention.surface)
    return list(names.items())


def variant_names(names: list[str]) -> dict[str, list[str]]:
    return {
        "last word alone": [name.split()[-1] for name in names],
        "first word as initial": [name.split()[0][0] + ". " + " ".join(name.split()[1:]) for name in names],
        "words reversed": [" ".join(reversed(name.split())) for name in names],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["2wiki", "musique", "scifact"],
                        help="datasets under ../shared/data to draw passages from (default: %(default)s)")
    parser.add_argument("--passages", type=int, default=1500, help="passages per dataset (default: %(default)s)")
    parser.add_argument("--names", type=int, default=4000, help="names to embed (default: %(default)s)")
    parser.add_argument("--pairs", type=int, default=200_000, help="random pairs to score (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    names = sample_names(args.datasets, args.passages, rng)
    sample = rng.sample(names, min(args.names, len(names)))
    embedder = load_embedder("minilm")
    vectors = embedder.embed([surface for _, surface in sample])

    similarities = []
    for _ in range(args.pairs):
        first, second = rng.randrange(len(sample)), rng.randrange(len(sample))
        if sample[first][0] != sample[second][0]:
            similarities.append(float(vectors[first] @ vectors[second]))
    percentiles = np.percentile(similarities, [50, 99, 99.9, 99.99]).round(3)
    print(f"{len(names)} distinct names, {len(sample)} embedded; threshold in use {LINK_SIMILARITY}")
    print(f"random pairs of distinct names, percentiles 50/99/99.9/99.99: {percentiles.tolist()}")

    multi_word = [surface for _, surface in sample
                  if len(surface.split()) >= 2 and all(word[:1].isupper() for word in surface.split())][:1000]
    full = embedder.embed(multi_word)
    for label, variants in variant_names(multi_word).items():
        scores = (full * embedder.embed(variants)).sum(axis=1)
        share = float((scores >= LINK_SIMILARITY).mean())
        print(f"{label} ({len(multi_word)} names): median {np.median(scores):.3f}, "
              f"share at or above the threshold {share:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
