"""LoRA fine-tuning: example construction, and a short real training run that the service then loads."""

import pytest

from generation.finetune import LoraOptions, build_examples, train_lora
from generation.prompts import Passage
from generation.registry import BackboneSpec, builtin_backbones, load_backbone, resolve_checkpoint


def passage(marker: int, document_id: str) -> Passage:
    return Passage(marker=marker, rowid=marker, document_id=document_id, chunk_id=f"{document_id}#0", title="",
                   text=f"Text of {document_id}.", score=1.0)


class TestBuildExamples:
    def test_answer_then_relevance_judgements(self):
        examples = build_examples("Does X work?", "yes [1]", [passage(1, "gold"), passage(2, "other")], {"gold"})
        assert [example.target for example in examples] == ["yes [1]", "True", "False"]
        assert examples[0].messages[-1]["content"].endswith("Question: Does X work?\nAnswer with citations:")
        assert "Text of gold." in examples[1].messages[0]["content"]
        assert "Text of other." in examples[2].messages[0]["content"]

    def test_uncited_answer_gets_the_gold_markers(self):
        passages = [passage(1, "other"), passage(2, "gold"), passage(3, "gold")]
        examples = build_examples("Does X work?", "yes", passages, {"gold"})
        assert examples[0].target == "yes [2][3]"

    def test_cited_answer_is_kept(self):
        examples = build_examples("Does X work?", "no [1]", [passage(1, "other"), passage(2, "gold")], {"gold"})
        assert examples[0].target == "no [1]"

    def test_without_gold_only_answer_example(self):
        examples = build_examples("Q?", "A", [passage(1, "a")], set())
        assert [example.target for example in examples] == ["A"]


@pytest.mark.integration
def test_trained_adapter_loads_as_backbone(tmp_path):
    specs = builtin_backbones()
    tokenizer, model = resolve_checkpoint("smollm2", specs, cache_root=tmp_path / "models")
    examples = build_examples("Does aspirin prevent infarction?", "yes [1]", [passage(1, "gold")], {"gold"})
    summary = train_lora(tokenizer, model, examples, tmp_path / "adapter",
                         options=LoraOptions(epochs=2, max_tokens=256))
    assert summary["steps"] == 4
    assert (tmp_path / "adapter" / "adapter_config.json").exists()

    specs["tuned"] = BackboneSpec(kind="peft", path=str(tmp_path / "adapter"), base="smollm2")
    generator = load_backbone("tuned", specs, cache_root=tmp_path / "models")
    assert generator.name == "tuned"
    assert generator.generate([{"role": "user", "content": "Say yes."}], max_new_tokens=3)
