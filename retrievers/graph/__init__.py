"""GraphRAG retrieval over an entity graph built from a knowledge base's chunks."""

from retrievers.graph.retriever import GraphRetriever

__all__ = ["GraphRetriever"]
