"""The graph retriever: normalisation, extraction, incremental updates, persistence, local and global search."""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from generation.base import GenerationError
from generation.registry import BackboneSpec
from retrievers.base import IndexedChunk
from retrievers.graph import GraphRetriever, local_search, store as store_module
from retrievers.graph.communities import CommunityIndex
from retrievers.graph.extraction import EntityExtractor, is_proper_name
from retrievers.graph.linking import VECTORS_FILE, EntityNameIndex
from retrievers.graph.llm_extraction import LLMExtractor, parse_extraction
from retrievers.graph.local_search import WalkMatrix
from retrievers.graph.normalisation import normalise_entity
from retrievers.graph.store import SNAPSHOT_FILE, GraphStore
from tests.conftest import create_tenant, make_settings, upload_ndjson
from tests.fakes import FakeEmbedder, ScriptedGenerator


def chunk(rowid: int, text: str) -> IndexedChunk:
    return IndexedChunk(rowid=rowid, text=text, embedding=np.zeros(0, dtype=np.float32))


# A two-hop corpus: the film names its director, and only the director's page names his country.
FILM_CHUNKS = [
    chunk(1, "Hotel By The Hour\nHotel By The Hour is a 1946 film directed by Emil Ortwin Krause."),
    chunk(2, "Emil Ortwin Krause\nEmil Ortwin Krause was a film director from Austria. Krause was born in Graz."),
    chunk(3, "Garden Of Lanterns\nGarden Of Lanterns is a 1950 film directed by Mira Sollen."),
    chunk(4, "Mira Sollen\nMira Sollen was a film director from Norway."),
    chunk(5, "Tidal Notes\nTidal Notes is an album by the band Velvet Harbour."),
]


def entity_keys(text: str) -> list[str]:
    return [mention.key for mention in EntityExtractor().mentions(text)]


class TestNormalisation:
    @pytest.mark.parametrize("variant", ["Ｎｏｒｔｈｗｉｎｄ Labs", "NORTHWIND LABS", "Northwind  labs",
                                         "northwind-lab", "Northwind Lab's"])
    def test_variants_share_one_key(self, variant):
        assert normalise_entity(variant) == "northwind lab"

    @pytest.mark.parametrize(("name", "key"), [
        ("IL-10", "il10"), ("IL 10", "il10"), ("TNF–alpha", "tnf alpha"), ("The Fighting Demon", "fighting demon"),
        ("Benoît Pilon", "benoit pilon"), ("studies", "study"), ("analysis", "analysis"), ("CD4+", "cd4+"),
    ])
    def test_key(self, name, key):
        assert normalise_entity(name) == key

    def test_punctuation_only_is_empty(self):
        assert normalise_entity(" -- ") == ""


class TestExtraction:
    def test_capitalised_name_with_connector(self):
        assert entity_keys("The founder of Les Films du Losange was born in Tehran.") == [
            "les films du losange", "tehran"]

    def test_domain_terms(self):
        assert entity_keys("IL-10 and TNF-alpha levels rose with mRNA of p53.") == [
            "il10", "tnf alpha", "levels rose", "mrna", "p53"]

    def test_initials_join_a_name(self):
        assert entity_keys("It was directed by E. W. Emo in Vienna.") == ["e w emo", "vienna"]

    def test_text_without_entities(self):
        assert EntityExtractor().mentions("it is what it is, and so on.") == []

    def test_sentences_split_on_line_breaks_and_full_stops(self):
        sentences = EntityExtractor().extract("Title Here\nAnna Berg met Otto Lind. They left for Oslo.")
        assert [sentence.text for sentence in sentences] == ["Title Here", "Anna Berg met Otto Lind.",
                                                              "They left for Oslo."]
        assert [mention.key for mention in sentences[1].mentions] == ["anna berg", "otto lind"]


class TestStore:
    def test_unicode_variants_are_one_node(self):
        retriever = GraphRetriever()
        retriever.add([chunk(1, "Ｎｏｒｔｈｗｉｎｄ Labs hired Ada Stone."), chunk(2, "NORTHWIND LABS moved to Leeds."),
                       chunk(3, "Northwind  labs won.")])
        assert retriever.store.entity_ids["northwind lab"] == 0
        assert retriever.store.entity_chunks[0] == {1: 1, 2: 1, 3: 1}
        assert sorted(retriever.store.entity_ids) == ["ada stone", "leed", "northwind lab"]

    def test_relations_count_sentence_co_occurrence(self):
        retriever = GraphRetriever()
        retriever.add([chunk(1, "Anna Berg met Otto Lind. Otto Lind left."), chunk(2, "Anna Berg and Otto Lind.")])
        anna, otto = retriever.store.entity_ids["anna berg"], retriever.store.entity_ids["otto lind"]
        assert retriever.store.graph[anna][otto]["weight"] == 2

    def test_delete_removes_orphaned_entities_and_relations(self):
        retriever = GraphRetriever()
        retriever.add([chunk(1, "Anna Berg met Otto Lind."), chunk(2, "Anna Berg visited Bergen.")])
        retriever.delete([1])
        assert sorted(retriever.store.entity_ids) == ["anna berg", "bergen"]
        assert retriever.store.graph.number_of_edges() == 1
        assert len(retriever) == 1

    def test_adding_a_chunk_again_replaces_it(self):
        retriever = GraphRetriever()
        retriever.add([chunk(1, "Anna Berg met Otto Lind.")])
        retriever.add([chunk(1, "Anna Berg met Karl Dahl.")])
        assert sorted(retriever.store.entity_ids) == ["anna berg", "karl dahl"]
        assert retriever.store.graph.number_of_edges() == 1

    def test_incremental_add_keeps_the_graph(self):
        retriever = GraphRetriever()
        retriever.add(FILM_CHUNKS[:4])
        graph = retriever.store.graph
        krause = retriever.store.entity_ids["emil ortwin krause"]
        retriever.add([chunk(9, "Emil Ortwin Krause also directed Night Ferry.")])
        assert retriever.store.graph is graph
        assert retriever.store.entity_ids["emil ortwin krause"] == krause
        assert retriever.store.entity_chunks[krause] == {1: 1, 2: 2, 9: 1}

    def test_empty_text_adds_nothing(self):
        retriever = GraphRetriever()
        retriever.add([chunk(1, ""), chunk(2, "it is so.")])
        assert len(retriever) == 2
        assert retriever.store.entity_count == 0
        assert retriever.search("anything at all", None, 5) == []

    def test_save_and_load_round_trip(self, tmp_path):
        retriever = GraphRetriever()
        retriever.add(FILM_CHUNKS)
        retriever.delete([5])
        retriever.save(tmp_path)
        loaded = GraphRetriever()
        loaded.load(tmp_path)
        assert loaded.store.entity_ids == retriever.store.entity_ids
        assert loaded.store.names == retriever.store.names
        assert loaded.store.entity_chunks == retriever.store.entity_chunks
        assert sorted(loaded.store.graph.edges(data="weight")) == sorted(retriever.store.graph.edges(data="weight"))
        assert loaded.search("Who directed Hotel By The Hour?", None, 3) == \
            retriever.search("Who directed Hotel By The Hour?", None, 3)
        assert not (tmp_path / (SNAPSHOT_FILE + ".tmp")).exists()

    def test_snapshot_of_another_format_is_rejected(self, tmp_path):
        GraphRetriever().save(tmp_path)
        with np.load(tmp_path / SNAPSHOT_FILE) as arrays:
            contents = dict(arrays)
        contents["format"] = np.array([999])
        np.savez(tmp_path / SNAPSHOT_FILE, **contents)
        with pytest.raises(ValueError, match="has format 999, expected 1"):
            GraphStore.read(tmp_path)


class TestLocalSearch:
    def test_second_hop_ranks_above_unrelated(self):
        retriever = GraphRetriever()
        retriever.add(FILM_CHUNKS)
        hits = retriever.search("Which country is the director of Hotel By The Hour from?", None, 5)
        assert [hit.rowid for hit in hits[:2]] == [1, 2]
        assert all(hit.source == "graph" for hit in hits)
        assert 5 not in [hit.rowid for hit in hits]

    def test_partial_name_links_to_full_name(self):
        retriever = GraphRetriever()
        retriever.add(FILM_CHUNKS)
        hits = retriever.search("Where was Sollen born?", None, 2)
        assert [hit.rowid for hit in hits] == [4, 3]

    def test_unlinked_query_returns_nothing(self):
        retriever = GraphRetriever()
        retriever.add(FILM_CHUNKS)
        assert retriever.search("what is this about?", None, 5) == []

    def test_search_sees_changes(self):
        retriever = GraphRetriever()
        retriever.add(FILM_CHUNKS)
        assert retriever.search("Velvet Harbour", None, 1)[0].rowid == 5
        retriever.delete([5])
        assert retriever.search("Velvet Harbour", None, 1) == []


class TestCommunities:
    def test_communities_group_related_entities(self):
        retriever = GraphRetriever()
        retriever.add([
            chunk(1, "Anna Berg met Otto Lind in Oslo."), chunk(2, "Otto Lind and Anna Berg sailed from Oslo."),
            chunk(3, "Anna Berg, Otto Lind and Oslo again."),
            chunk(4, "Karl Dahl studied with Eva Moen in Bergen."), chunk(5, "Eva Moen and Karl Dahl left Bergen."),
            chunk(6, "Karl Dahl, Eva Moen and Bergen again."),
        ])
        communities = retriever.communities()
        assert sorted(sorted(community.entity_names) for community in communities) == [
            ["Anna Berg", "Oslo", "Otto Lind"], ["Bergen", "Eva Moen", "Karl Dahl"]]
        oslo = next(community for community in communities if "Oslo" in community.entity_names)
        assert oslo.summary.startswith("Entities: ")
        assert "Anna Berg met Otto Lind in Oslo." in oslo.summary

    def test_global_search_ranks_matching_summary_first(self):
        retriever = GraphRetriever()
        retriever.add([
            chunk(1, "Anna Berg met Otto Lind in Oslo."), chunk(2, "Otto Lind and Anna Berg sailed from Oslo."),
            chunk(3, "Karl Dahl studied with Eva Moen in Bergen."), chunk(4, "Eva Moen and Karl Dahl left Bergen."),
        ])
        hits = retriever.global_search("What happened around Bergen?", 2)
        assert "Bergen" in hits[0].community.entity_names
        assert hits[0].score > 0

    def test_single_chunk_has_no_communities(self):
        retriever = GraphRetriever()
        retriever.add([chunk(1, "Anna Berg met Otto Lind in Oslo.")])
        assert retriever.communities() == []
        assert retriever.global_search("Oslo", 3) == []


GRAPH_DOCUMENTS = [
    {"id": "film", "title": "Hotel By The Hour", "text": "Hotel By The Hour is a 1946 film directed by Emil Krause."},
    {"id": "director", "title": "Emil Krause", "text": "Emil Krause was a film director from Austria."},
    {"id": "album", "title": "Tidal Notes", "text": "Tidal Notes is an album by Velvet Harbour."},
]


class TestGraphApi:
    def test_search_with_graph(self, client, tenant):
        client.post("/v1/knowledge-bases", json={"name": "films"}, headers=tenant)
        upload_ndjson(client, tenant, "films", GRAPH_DOCUMENTS)
        response = client.post("/v1/knowledge-bases/films/search",
                               json={"query": "Where is the director of Hotel By The Hour from?",
                                     "retrievers": ["graph"], "top_k": 2}, headers=tenant)
        assert response.status_code == 200, response.text
        assert [hit["document_id"] for hit in response.json()["hits"]] == ["film", "director"]
        assert response.json()["hits"][0]["ranks"] == {"graph": 1}

    def test_search_links_a_variant_name(self, client, tenant):
        client.post("/v1/knowledge-bases", json={"name": "films"}, headers=tenant)
        upload_ndjson(client, tenant, "films", GRAPH_DOCUMENTS)
        response = client.post("/v1/knowledge-bases/films/search",
                               json={"query": "Where is the director of Hotels By The Hours from?",
                                     "retrievers": ["graph"], "top_k": 2}, headers=tenant)
        assert response.status_code == 200, response.text
        assert [hit["document_id"] for hit in response.json()["hits"]] == ["film", "director"]

    def test_unknown_retriever_lists_graph(self, client, tenant):
        client.post("/v1/knowledge-bases", json={"name": "films"}, headers=tenant)
        response = client.post("/v1/knowledge-bases/films/search", json={"query": "x", "retrievers": ["sparse"]},
                               headers=tenant)
        assert response.status_code == 422
        assert response.json()["detail"] == ("retrievers must be a non-empty list drawn from "
                                             "['bm25', 'dense', 'graph'], got ['sparse']")

    def test_entities_route(self, client, tenant):
        client.post("/v1/knowledge-bases", json={"name": "films"}, headers=tenant)
        upload_ndjson(client, tenant, "films", GRAPH_DOCUMENTS)
        response = client.get("/v1/knowledge-bases/films/graph/entities", params={"q": "EMIL-KRAUSE"},
                              headers=tenant)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["count"] == 1
        entity = body["data"][0]
        assert entity["name"] == "Emil Krause"
        assert entity["key"] == "emil krause"
        assert entity["mention_count"] == 3
        assert entity["chunk_ids"] == ["film#0", "director#0"]
        # Ties in weight keep the order in which the entities were first seen.
        assert [neighbour["name"] for neighbour in entity["neighbours"]] == [
            "Hotel By The Hour", "film directed", "film director", "Austria"]
        assert [neighbour["weight"] for neighbour in entity["neighbours"]] == [1.0, 1.0, 1.0, 1.0]

    def test_entities_route_needs_q(self, client, tenant):
        client.post("/v1/knowledge-bases", json={"name": "films"}, headers=tenant)
        response = client.get("/v1/knowledge-bases/films/graph/entities", headers=tenant)
        assert response.status_code == 422

    def test_other_tenants_graph_is_404(self, client, tenant):
        client.post("/v1/knowledge-bases", json={"name": "films"}, headers=tenant)
        other = create_tenant(client, "other")
        response = client.get("/v1/knowledge-bases/films/graph/communities", headers=other)
        assert response.status_code == 404

    def test_communities_and_global_query(self, client, tenant):
        client.post("/v1/knowledge-bases", json={"name": "people"}, headers=tenant)
        upload_ndjson(client, tenant, "people", [
            {"id": "a", "text": "Anna Berg met Otto Lind in Oslo."},
            {"id": "b", "text": "Otto Lind and Anna Berg sailed from Oslo."},
            {"id": "c", "text": "Karl Dahl studied with Eva Moen in Bergen."},
            {"id": "d", "text": "Eva Moen and Karl Dahl left Bergen."},
        ])
        listing = client.get("/v1/knowledge-bases/people/graph/communities", headers=tenant).json()
        assert listing["count"] == 2
        assert listing["computing"] is False
        assert sorted(community["size"] for community in listing["data"]) == [3, 3]

        response = client.post("/v1/knowledge-bases/people/query",
                               json={"query": "What happened in Bergen?", "mode": "global", "top_k": 1},
                               headers=tenant)
        assert response.status_code == 200, response.text
        citations = response.json()["citations"]
        assert [citation["document_id"] for citation in citations] == ["c"]
        assert citations[0]["snippet"].startswith("Entities: ")

    def test_invalid_mode_is_422(self, client, tenant):
        client.post("/v1/knowledge-bases", json={"name": "people"}, headers=tenant)
        response = client.post("/v1/knowledge-bases/people/query", json={"query": "x", "mode": "everything"},
                               headers=tenant)
        assert response.status_code == 422


class TestNameLinking:
    """Query phrases with no exact match link to entities whose names embed close to them."""

    def retriever(self) -> GraphRetriever:
        retriever = GraphRetriever(embedder=FakeEmbedder())
        retriever.add(FILM_CHUNKS)
        retriever.sync_names()
        return retriever

    def test_variant_name_links_by_embedding(self):
        # "Hotels By The Hours" normalises to "hotels by the hour", which is no key, and no entity name contains
        # the word "hotels". The fake embedder stems both names to the same terms.
        query = "Who directed Hotels By The Hours?"
        unlinked = GraphRetriever()
        unlinked.add(FILM_CHUNKS)
        assert unlinked.search(query, None, 5) == []
        hits = self.retriever().search(query, None, 5)
        assert [hit.rowid for hit in hits[:2]] == [1, 2]

    def test_dissimilar_phrase_does_not_link(self):
        assert self.retriever().search("Which studio made Blue Comet?", None, 5) == []

    def test_lower_case_phrase_does_not_link_by_embedding(self):
        retriever = GraphRetriever(embedder=FakeEmbedder())
        retriever.add([chunk(1, "Seasonal Rainfall Levels rose."), chunk(2, "Nothing else here.")])
        retriever.sync_names()
        # Both queries embed close to "Seasonal Rainfall Levels", whose key neither matches; only the name links.
        assert retriever.search("did seasonal rainfalls levels rise?", None, 5) == []
        assert [hit.rowid for hit in retriever.search("did Seasonal Rainfalls Levels rise?", None, 5)] == [1]

    def test_threshold_is_respected(self):
        retriever = GraphRetriever(embedder=FakeEmbedder(), link_similarity=1.01)
        retriever.add(FILM_CHUNKS)
        retriever.sync_names()
        assert retriever.search("Who directed Hotels By The Hours?", None, 5) == []

    def test_query_without_mentions_is_embedded_whole(self):
        retriever = GraphRetriever(embedder=FakeEmbedder())
        retriever.add([chunk(1, "Velvet Harbour released Tidal Notes."), chunk(2, "Nothing else here.")])
        retriever.sync_names()
        assert [hit.rowid for hit in retriever.search("velvet harbours", None, 5)] == [1]

    def test_names_are_embedded_in_one_batch_and_incrementally(self):
        embedder = FakeEmbedder()
        retriever = GraphRetriever(embedder=embedder)
        retriever.add(FILM_CHUNKS)
        names = proper_name_count(retriever)
        assert retriever.sync_names() == names
        assert embedder.calls == 1
        assert retriever.sync_names() == 0
        entities = retriever.store.entity_count
        retriever.add([chunk(9, "Emil Ortwin Krause also directed Night Ferry.")])
        # Two new entities, "Night Ferry" and the phrase "also directed"; only the name is embedded.
        assert retriever.store.entity_count - entities == 2
        assert retriever.sync_names() == 1
        assert embedder.calls == 2
        assert len(retriever.names) == names + 1
        retriever.delete([9, 5])
        retriever.sync_names()
        assert len(retriever.names) == proper_name_count(retriever)

    def test_lower_case_phrases_are_not_embedded(self):
        retriever = GraphRetriever(embedder=FakeEmbedder())
        retriever.add([chunk(1, "The seasonal rainfall levels rose near Lake Odell.")])
        assert retriever.sync_names() == 1
        assert [retriever.store.names[entity] for entity in retriever.names._row] == ["Lake Odell"]

    def test_removed_rows_are_reused(self):
        index = EntityNameIndex(2, "test")
        index.add([1, 2], ["a", "b"], np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
        index.remove([1])
        index.add([3], ["c"], np.array([[0.6, 0.8]], dtype=np.float32))
        assert len(index._keys) == 2
        assert index.nearest(np.array([[1.0, 0.0]], dtype=np.float32), threshold=0.5, limit=3) == [[(3, 0.6000000238418579)]]

    def test_vectors_persist_so_a_restart_embeds_nothing(self, tmp_path):
        retriever = self.retriever()
        retriever.save(tmp_path)
        assert (tmp_path / VECTORS_FILE).exists()
        embedder = FakeEmbedder()
        loaded = GraphRetriever(embedder=embedder)
        loaded.load(tmp_path)
        assert loaded.sync_names() == 0
        assert embedder.calls == 0
        query = "Who directed Hotels By The Hours?"
        assert [hit.rowid for hit in loaded.search(query, None, 2)] == [1, 2]

    def test_vectors_of_another_embedder_are_embedded_again(self, tmp_path):
        self.retriever().save(tmp_path)

        class OtherEmbedder(FakeEmbedder):
            name = "other-embedder"

        loaded = GraphRetriever(embedder=OtherEmbedder())
        loaded.load(tmp_path)
        assert loaded.sync_names() == proper_name_count(loaded)


def proper_name_count(retriever: GraphRetriever) -> int:
    return sum(is_proper_name(name) for name in retriever.store.names.values())


VALID_EXTRACTION = json.dumps({
    "entities": [{"name": "Hotel By The Hour", "type": "film"}, {"name": "Emil Krause", "type": "person"},
                 {"name": "Austria", "type": "country"}],
    "relations": [{"source": "Hotel By The Hour", "target": "Emil Krause", "description": "directed by"}],
})


class TestLLMExtraction:
    TEXT = "Hotel By The Hour is a 1946 film directed by Emil Krause, who was from Austria."

    def test_valid_answer_builds_entities_and_relations(self):
        generator = ScriptedGenerator([VALID_EXTRACTION])
        retriever = GraphRetriever()
        retriever.use_generator(generator)
        retriever.add([chunk(1, self.TEXT)])
        store = retriever.store
        assert sorted(store.entity_ids) == ["austria", "emil krause", "hotel by the hour"]
        film, krause = store.entity_ids["hotel by the hour"], store.entity_ids["emil krause"]
        assert store.graph[film][krause]["weight"] == 1
        assert store.graph.degree(store.entity_ids["austria"]) == 0
        assert store.chunks[1].linking_sentences == [("Hotel By The Hour directed by Emil Krause",
                                                      sorted([film, krause]))]
        assert generator.calls == 1
        assert self.TEXT in generator.prompts[0][-1]["content"]

    def test_invalid_answer_is_retried_once(self):
        generator = ScriptedGenerator(["not json at all", "```json\n" + VALID_EXTRACTION + "\n```"])
        retriever = GraphRetriever()
        retriever.use_generator(generator)
        retriever.add([chunk(1, self.TEXT)])
        assert generator.calls == 2
        assert "emil krause" in retriever.store.entity_ids
        assert retriever.llm_extractor.failures == 0

    def test_two_invalid_answers_fall_back_to_the_rules(self):
        generator = ScriptedGenerator(['{"entities": [{"name": "X", "colour": "red"}]}', "{broken"])
        retriever = GraphRetriever()
        retriever.use_generator(generator)
        retriever.add([chunk(1, self.TEXT)])
        rules = GraphRetriever()
        rules.add([chunk(1, self.TEXT)])
        assert generator.calls == 2
        assert retriever.llm_extractor.failures == 1
        assert retriever.store.entity_ids == rules.store.entity_ids

    def test_backbone_error_falls_back_without_retry(self):
        generator = ScriptedGenerator([GenerationError("server went away")])
        retriever = GraphRetriever()
        retriever.use_generator(generator)
        retriever.add([chunk(1, self.TEXT), chunk(2, "Mira Sollen was born in Norway.")])
        assert generator.calls == 2  # once per chunk, no retry after a backbone error
        assert {"emil krause", "mira sollen", "norway"} <= set(retriever.store.entity_ids)

    def test_each_chunk_falls_back_on_its_own(self):
        generator = ScriptedGenerator([VALID_EXTRACTION, "{}", "{}"])
        retriever = GraphRetriever()
        retriever.use_generator(generator)
        retriever.add([chunk(1, self.TEXT), chunk(2, "Mira Sollen was born in Norway.")])
        assert "austria" in retriever.store.entity_ids  # chunk 1, by the model
        assert "mira sollen" in retriever.store.entity_ids  # chunk 2, by the rules
        assert retriever.llm_extractor.failures == 1

    def test_prepared_extraction_is_used_by_add(self):
        generator = ScriptedGenerator([VALID_EXTRACTION])
        retriever = GraphRetriever()
        retriever.use_generator(generator)
        retriever.prepare([chunk(1, self.TEXT)])
        retriever.use_generator(None)  # add must not ask again
        retriever.add([chunk(1, self.TEXT)])
        assert generator.calls == 1
        assert "austria" in retriever.store.entity_ids

    @pytest.mark.parametrize("answer", [
        '{"entities": [{"name": "A"}], "relations": [{"source": "A", "target": "B"}]}',  # B is no entity
        '{"entities": [{"name": "A"}], "extra": 1}',
        '{"entities": [{"name": ""}]}',
        '{"relations": []}',
        '[]',
    ])
    def test_schema_is_strict(self, answer):
        with pytest.raises(ValueError):
            parse_extraction(answer)

    def test_relation_ends_match_after_normalisation(self):
        extraction = parse_extraction('{"entities": [{"name": "IL-10"}, {"name": "T cells"}], '
                                      '"relations": [{"source": "IL 10", "target": "T-cell"}]}')
        assert len(extraction.relations) == 1

    def test_capable_backbone_extracts_through_the_api(self, data_dir):
        generator = ScriptedGenerator([VALID_EXTRACTION])
        settings = make_settings(data_dir, generator="capable",
                                 backbones={"capable": BackboneSpec(kind="extractive", capable=True)})
        with TestClient(create_app(settings, embedder=FakeEmbedder(), generator=generator)) as client:
            headers = create_tenant(client)
            client.post("/v1/knowledge-bases", json={"name": "films"}, headers=headers)
            upload_ndjson(client, headers, "films", [{"id": "film", "text": self.TEXT}])
            response = client.get("/v1/knowledge-bases/films/graph/entities", params={"q": "krause"},
                                  headers=headers)
        assert [entity["name"] for entity in response.json()["data"]] == ["Emil Krause"]
        assert response.json()["data"][0]["neighbours"][0]["name"] == "Hotel By The Hour"
        extraction_prompts = [prompt for prompt in generator.prompts if "knowledge graph" in prompt[0]["content"]]
        assert len(extraction_prompts) == 1

    def test_backbone_not_marked_capable_uses_the_rules(self, client, tenant, generator):
        client.post("/v1/knowledge-bases", json={"name": "films"}, headers=tenant)
        upload_ndjson(client, tenant, "films", GRAPH_DOCUMENTS)
        assert generator.prompts == []


PEOPLE_CHUNKS = [
    chunk(1, "Anna Berg met Otto Lind in Oslo."), chunk(2, "Otto Lind and Anna Berg sailed from Oslo."),
    chunk(3, "Karl Dahl studied with Eva Moen in Bergen."), chunk(4, "Eva Moen and Karl Dahl left Bergen."),
]


class TestLLMSummaries:
    def test_capable_backbone_writes_the_summary(self):
        generator = ScriptedGenerator(["Karl Dahl and Eva Moen studied together and left Bergen."])
        retriever = GraphRetriever()
        retriever.use_generator(None)
        retriever.add(PEOPLE_CHUNKS)
        retriever.community_index.writer = generator
        hits = retriever.write_summaries(retriever.global_search("What happened around Bergen?", 1))
        assert hits[0].community.summary == "Karl Dahl and Eva Moen studied together and left Bergen."
        assert hits[0].community.summary_kind == "llm"
        assert "Entities: " in generator.prompts[0][-1]["content"]
        # The written summary is kept, listed, and not asked for again.
        listed = {community.summary_kind for community in retriever.communities()}
        assert listed == {"llm", "extractive"}
        retriever.write_summaries(retriever.global_search("What happened around Bergen?", 1))
        assert generator.calls == 1

    @pytest.mark.parametrize("reply", [GenerationError("boom"), "   "])
    def test_failure_keeps_the_extractive_summary(self, reply):
        retriever = GraphRetriever()
        retriever.add(PEOPLE_CHUNKS)
        retriever.community_index.writer = ScriptedGenerator([reply])
        hits = retriever.write_summaries(retriever.global_search("What happened around Bergen?", 1))
        assert hits[0].community.summary_kind == "extractive"
        assert hits[0].community.summary.startswith("Entities: ")

    def test_extractive_is_the_default(self):
        index = CommunityIndex()
        assert index.writer is None
        retriever = GraphRetriever()
        retriever.add(PEOPLE_CHUNKS)
        hits = retriever.write_summaries(retriever.global_search("Bergen", 2))
        assert all(hit.community.summary_kind == "extractive" for hit in hits)


class TestWalkMatrixUpdates:
    def ranking(self, retriever: GraphRetriever, query: str) -> list[tuple[int, float]]:
        return [(hit.rowid, round(hit.score, 9)) for hit in retriever.search(query, None, 10)]

    def test_writes_update_the_matrix_in_place(self):
        retriever = GraphRetriever()
        retriever.add(FILM_CHUNKS[:3])
        retriever.search("Hotel By The Hour", None, 3)
        matrix = retriever._matrix
        retriever.add([FILM_CHUNKS[3], chunk(9, "Emil Ortwin Krause also directed Night Ferry in Austria.")])
        retriever.delete([3])
        query = "Which country is the director of Hotel By The Hour from?"
        updated = self.ranking(retriever, query)
        assert retriever._matrix is matrix  # replayed the changes instead of building a new matrix

        fresh = GraphRetriever()
        fresh.add([FILM_CHUNKS[0], FILM_CHUNKS[1], FILM_CHUNKS[3],
                   chunk(9, "Emil Ortwin Krause also directed Night Ferry in Austria.")])
        assert updated == self.ranking(fresh, query)
        assert 3 not in [rowid for rowid, _ in updated]

    def test_overflowing_the_change_log_rebuilds(self, monkeypatch):
        monkeypatch.setattr(store_module, "MAX_CHANGE_LOG", 5)
        retriever = GraphRetriever()
        retriever.add(FILM_CHUNKS[:2])
        retriever.search("Hotel By The Hour", None, 3)
        matrix = retriever._matrix
        retriever.add(FILM_CHUNKS[2:])
        assert retriever.store.changes_since(matrix.log_position) is None
        assert [hit.rowid for hit in retriever.search("Velvet Harbour", None, 1)] == [5]
        assert retriever._matrix is not matrix

    def test_log_is_trimmed_once_replayed(self):
        retriever = GraphRetriever()
        retriever.add(FILM_CHUNKS)
        assert retriever.store.change_log
        retriever.search("Hotel By The Hour", None, 3)
        assert retriever.store.change_log == []
        assert retriever._matrix.log_position == retriever.store.log_end

    def test_step_keeps_mass_after_deletes(self):
        store = GraphStore()
        retriever = GraphRetriever()
        retriever.store = store
        retriever.add(FILM_CHUNKS)
        matrix = WalkMatrix.build(store)
        retriever.delete([1, 2])
        assert matrix.update(store)
        live = matrix.out_weight > 0
        for node in range(matrix.size):
            distribution = np.zeros(matrix.size)
            distribution[node] = 1.0
            expected = 1.0 if live[node] else 0.0
            assert matrix.step(distribution).sum() == pytest.approx(expected)
        assert np.count_nonzero(~live) > 0  # the deleted chunks' nodes have no edges left

    def test_delta_merges_into_the_base(self, monkeypatch):
        monkeypatch.setattr(local_search, "MERGE_SHARE", 0.0)
        retriever = GraphRetriever()
        retriever.add(FILM_CHUNKS[:3])
        retriever.search("Hotel By The Hour", None, 3)
        retriever.add(FILM_CHUNKS[3:])
        hits = self.ranking(retriever, "Velvet Harbour")
        assert retriever._matrix.delta.nnz == 0
        fresh = GraphRetriever()
        fresh.add(FILM_CHUNKS)
        assert hits == self.ranking(fresh, "Velvet Harbour")
