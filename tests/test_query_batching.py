import threading
import time

import numpy as np
import pytest

from retrievers.batching import EmbedderClosed, QueryEmbeddingBatcher
from retrievers.embedders import set_torch_threads_of_current_thread
from tests.fakes import FakeEmbedder


class RecordingEmbedder(FakeEmbedder):
    """The fake embedder, recording each batch; it can hold a call until released and fail chosen texts."""

    def __init__(self, *, fail_on: str | None = None) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail_on = fail_on

    def embed(self, texts: list[str], *, is_query: bool = False) -> np.ndarray:
        assert is_query
        self.batches.append(list(texts))
        self.entered.set()
        assert self.release.wait(10), "test never released the embedder"
        if self.fail_on is not None and self.fail_on in texts:
            raise ValueError(f"cannot embed {self.fail_on!r}")
        return super().embed(texts, is_query=is_query)


def embed_concurrently(batcher: QueryEmbeddingBatcher, texts: list[str]) -> dict[str, np.ndarray | Exception]:
    results: dict[str, np.ndarray | Exception] = {}

    def call(text: str) -> None:
        try:
            results[text] = batcher.embed_query(text)
        except Exception as error:
            results[text] = error

    threads = [threading.Thread(target=call, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads), "a caller is still waiting"
    return results


def wait_for_queue(batcher: QueryEmbeddingBatcher, length: int) -> None:
    deadline = time.monotonic() + 5
    while len(batcher._queue) < length:
        assert time.monotonic() < deadline, f"the queue never reached {length} queries"
        time.sleep(0.001)


def queue_while_busy(batcher: QueryEmbeddingBatcher, embedder: RecordingEmbedder, first: str,
                     others: list[str]) -> dict[str, np.ndarray | Exception]:
    """Hold the worker inside the embedding of `first` while `others` queue up in order, then let all finish."""
    embedder.release.clear()
    results: dict[str, np.ndarray | Exception] = {}
    callers = [threading.Thread(target=lambda: results.update(embed_concurrently(batcher, [first])))]
    callers[0].start()
    assert embedder.entered.wait(5)
    for position, text in enumerate(others):
        callers.append(threading.Thread(target=lambda text=text: results.update(embed_concurrently(batcher, [text]))))
        callers[-1].start()
        wait_for_queue(batcher, position + 1)
    embedder.release.set()
    for caller in callers:
        caller.join(10)
    return results


class TestQueryEmbeddingBatcher:
    def test_each_caller_gets_its_own_vector(self):
        embedder = RecordingEmbedder()
        batcher = QueryEmbeddingBatcher(embedder, max_batch_size=8, max_wait_s=0.002)
        texts = [f"query about topic {number} and protein {number * 7}" for number in range(40)]
        results = embed_concurrently(batcher, texts)
        batcher.close()

        reference = FakeEmbedder()
        for text in texts:
            np.testing.assert_array_equal(results[text], reference.embed([text], is_query=True)[0])
        assert sorted(text for batch in embedder.batches for text in batch) == sorted(texts)
        assert max(len(batch) for batch in embedder.batches) <= 8

    def test_queued_queries_share_next_batch(self):
        embedder = RecordingEmbedder()
        batcher = QueryEmbeddingBatcher(embedder, max_batch_size=16, max_wait_s=0.002)
        others = [f"waiting query {number}" for number in range(6)]
        results = queue_while_busy(batcher, embedder, "first query", others)
        batcher.close()

        assert embedder.batches == [["first query"], others]
        for text in ["first query", *others]:
            np.testing.assert_array_equal(results[text], FakeEmbedder().embed([text])[0])

    def test_batch_size_bounds_each_forward_pass(self):
        embedder = RecordingEmbedder()
        batcher = QueryEmbeddingBatcher(embedder, max_batch_size=4, max_wait_s=0.002)
        others = [f"waiting query {number}" for number in range(10)]
        queue_while_busy(batcher, embedder, "first query", others)
        batcher.close()

        assert [len(batch) for batch in embedder.batches] == [1, 4, 4, 2]
        assert [text for batch in embedder.batches[1:] for text in batch] == others

    def test_lone_query_does_not_wait(self):
        embedder = RecordingEmbedder()
        batcher = QueryEmbeddingBatcher(embedder, max_batch_size=16, max_wait_s=5.0)
        started = time.perf_counter()
        batcher.embed_query("alone")
        elapsed = time.perf_counter() - started
        batcher.close()
        assert elapsed < 1.0
        assert embedder.batches == [["alone"]]

    def test_error_reaches_only_its_batch(self):
        embedder = RecordingEmbedder(fail_on="poison")
        batcher = QueryEmbeddingBatcher(embedder, max_batch_size=2, max_wait_s=0.002)
        results = queue_while_busy(batcher, embedder, "first query", ["poison", "shares its batch", "next batch"])

        assert embedder.batches == [["first query"], ["poison", "shares its batch"], ["next batch"]]
        assert isinstance(results["poison"], ValueError)
        assert str(results["poison"]) == "cannot embed 'poison'"
        assert results["shares its batch"] is results["poison"]
        assert isinstance(results["first query"], np.ndarray)
        assert isinstance(results["next batch"], np.ndarray)
        # The worker survives the failure and serves later queries.
        np.testing.assert_array_equal(batcher.embed_query("after"), FakeEmbedder().embed(["after"])[0])
        batcher.close()

    def test_wrong_vector_count_raises(self):
        class ShortEmbedder(FakeEmbedder):
            def embed(self, texts, *, is_query=False):
                return super().embed(texts[:1], is_query=is_query)

        batcher = QueryEmbeddingBatcher(ShortEmbedder(), max_batch_size=1)
        with pytest.raises(RuntimeError, match="returned 1 vectors for 2 queries"):
            batcher._embed(["one", "two"])
        batcher.close()

    def test_close_drains_queue_then_rejects(self):
        embedder = RecordingEmbedder()
        batcher = QueryEmbeddingBatcher(embedder, max_batch_size=16, max_wait_s=0.002)
        embedder.release.clear()
        results = {}
        first = threading.Thread(target=lambda: results.update(embed_concurrently(batcher, ["first"])))
        first.start()
        assert embedder.entered.wait(5)
        queued = threading.Thread(target=lambda: results.update(embed_concurrently(batcher, ["queued"])))
        queued.start()
        wait_for_queue(batcher, 1)
        closer = threading.Thread(target=batcher.close)
        closer.start()
        embedder.release.set()
        for thread in (first, queued, closer):
            thread.join(10)

        assert not any(worker.is_alive() for worker in batcher._workers)
        assert embedder.batches == [["first"], ["queued"]]
        assert all(isinstance(value, np.ndarray) for value in results.values())
        with pytest.raises(EmbedderClosed, match="shut down"):
            batcher.embed_query("too late")

    @pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
    def test_dead_worker_fails_waiting_callers(self):
        class Crash(BaseException):
            pass

        class CrashingEmbedder(RecordingEmbedder):
            def embed(self, texts, *, is_query=False):
                super().embed(texts, is_query=is_query)
                raise Crash()

        embedder = CrashingEmbedder()
        batcher = QueryEmbeddingBatcher(embedder, max_batch_size=2, max_wait_s=0.002)
        results = queue_while_busy(batcher, embedder, "first", ["second", "third", "fourth"])

        # The crash took the worker down in the first batch; the queued callers were failed, not forgotten.
        assert embedder.batches == [["first"]]
        assert sorted(results) == ["first", "fourth", "second", "third"]
        assert all(isinstance(value, EmbedderClosed) for value in results.values())
        batcher._workers[0].join(5)
        assert not batcher._workers[0].is_alive()
        with pytest.raises(EmbedderClosed):
            batcher.embed_query("after the crash")

    def test_batch_size_one_embeds_in_the_callers_thread(self):
        callers = []

        class ThreadRecordingEmbedder(FakeEmbedder):
            def embed(self, texts, *, is_query=False):
                callers.append(threading.current_thread())
                return super().embed(texts, is_query=is_query)

        batcher = QueryEmbeddingBatcher(ThreadRecordingEmbedder(), max_batch_size=1)
        vector = batcher.embed_query("direct")
        assert batcher._workers == []
        assert callers == [threading.current_thread()]
        np.testing.assert_array_equal(vector, FakeEmbedder().embed(["direct"])[0])
        batcher.close()
        with pytest.raises(EmbedderClosed):
            batcher.embed_query("after close")

    def test_invalid_settings_are_rejected(self):
        with pytest.raises(ValueError, match="max_batch_size must be at least 1, got 0"):
            QueryEmbeddingBatcher(FakeEmbedder(), max_batch_size=0)
        with pytest.raises(ValueError, match="max_wait_s must not be negative, got -1"):
            QueryEmbeddingBatcher(FakeEmbedder(), max_wait_s=-1)
        with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
            QueryEmbeddingBatcher(FakeEmbedder(), workers=0)


class TestSeveralWorkers:
    def test_workers_embed_batches_side_by_side(self):
        in_forward_pass = threading.Barrier(2, timeout=5)

        class MeetingEmbedder(RecordingEmbedder):
            """Returns only once two forward passes run at the same time, which one worker never does."""

            def embed(self, texts, *, is_query=False):
                self.batches.append(list(texts))
                self.entered.set()
                in_forward_pass.wait()
                return FakeEmbedder.embed(self, texts, is_query=is_query)

        embedder = MeetingEmbedder()
        batcher = QueryEmbeddingBatcher(embedder, max_batch_size=4, workers=2)
        results = {}
        first = threading.Thread(target=lambda: results.update(embed_concurrently(batcher, ["first query"])))
        first.start()
        # The first worker is inside its forward pass before the second query arrives, so another worker takes it.
        assert embedder.entered.wait(5)
        second = threading.Thread(target=lambda: results.update(embed_concurrently(batcher, ["second query"])))
        second.start()
        first.join(10)
        second.join(10)
        batcher.close()

        assert embedder.batches == [["first query"], ["second query"]]
        for text, vector in results.items():
            np.testing.assert_array_equal(vector, FakeEmbedder().embed([text])[0])
        assert not any(worker.is_alive() for worker in batcher._workers)

    def test_setup_runs_in_every_worker(self):
        names = []
        batcher = QueryEmbeddingBatcher(FakeEmbedder(), max_batch_size=4, workers=3,
                                        worker_setup=lambda: names.append(threading.current_thread().name))
        assert sorted(names) == ["query-embedder-0", "query-embedder-1", "query-embedder-2"]
        batcher.close()


class TestWorkerSetup:
    def test_setup_runs_in_worker_first(self):
        calls = []
        embedder = RecordingEmbedder()
        batcher = QueryEmbeddingBatcher(embedder, max_batch_size=4,
                                        worker_setup=lambda: calls.append(threading.current_thread().name))
        # The constructor returns only after the set-up ran, so the caller may rely on its effects.
        assert calls == ["query-embedder-0"]
        batcher.embed_query("after set-up")
        batcher.close()
        assert embedder.batches == [["after set-up"]]

    def test_failed_setup_still_embeds(self, caplog):
        def fail() -> None:
            raise RuntimeError("no such setting")

        with caplog.at_level("ERROR", logger="retrievers.batching"):
            batcher = QueryEmbeddingBatcher(FakeEmbedder(), max_batch_size=4, worker_setup=fail)
        assert [record.message for record in caplog.records] == [
            "query embedder set-up failed; embedding with default settings"]
        np.testing.assert_array_equal(batcher.embed_query("still works"), FakeEmbedder().embed(["still works"])[0])
        batcher.close()


class TestTorchThreadsOfCurrentThread:
    def test_only_calling_thread_changes(self):
        torch = pytest.importorskip("torch")
        process_threads = torch.get_num_threads()
        seen = {}

        # One more than the process uses, so that the check tells the two counts apart on any machine.
        wanted = process_threads + 1

        def limited() -> None:
            set_torch_threads_of_current_thread(wanted)
            seen["limited"] = torch.get_num_threads()

        def other() -> None:
            seen["other"] = torch.get_num_threads()

        for target in (limited, other):
            thread = threading.Thread(target=target)
            thread.start()
            thread.join()
        assert seen["limited"] == wanted
        assert seen["other"] == process_threads
        assert torch.get_num_threads() == process_threads
