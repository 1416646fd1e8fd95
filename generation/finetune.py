"""LoRA fine-tuning of a generator backbone on question/answer pairs with retrieved context.

RankRAG's recipe in miniature. Every training question gives one answer-with-context example: the numbered
passages retrieved for it, then the reference answer. Where gold documents are known, it also gives relevance
judgements, "True" for a gold passage and "False" for a retrieved passage that is not gold. Loss is computed
on the target tokens only. Runs on CPU; one step on a ~400-token example takes seconds on two cores.
"""

import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from generation.base import Message
from generation.prompts import Passage, build_messages, cited_markers, relevance_messages

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingExample:
    messages: list[Message]
    target: str


@dataclass(frozen=True)
class LoraOptions:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    learning_rate: float = 2e-4
    epochs: int = 1
    max_tokens: int = 1024
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = 0


def build_examples(question: str, answer: str, passages: list[Passage], gold_documents: set[str],
                   *, judgements_per_question: int = 2) -> list[TrainingExample]:
    """Return the answer example and up to `judgements_per_question` relevance examples for one question.

    A reference answer without citation markers gets the markers of the gold passages in its context
    appended, so that the adapter learns to cite the way the service expects ("yes [2]").
    """
    positives = [passage for passage in passages if passage.document_id in gold_documents]
    if positives and not cited_markers(answer, len(passages)):
        answer = f"{answer.rstrip()} " + "".join(f"[{passage.marker}]" for passage in positives)
    examples = [TrainingExample(messages=build_messages(question, passages), target=answer)]
    if not gold_documents:
        return examples
    negatives = [passage for passage in passages if passage.document_id not in gold_documents]
    # Alternate positives and negatives so that a small budget still sees both labels.
    for positive, negative in zip(positives + [None] * len(negatives), negatives + [None] * len(positives)):
        for passage, label in ((positive, "True"), (negative, "False")):
            if passage is not None and len(examples) <= judgements_per_question:
                examples.append(TrainingExample(messages=relevance_messages(question, passage.text), target=label))
    return examples


def _encode(tokenizer, example: TrainingExample, max_tokens: int):
    import torch

    prompt_ids = tokenizer.apply_chat_template(example.messages, add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]
    target_ids = tokenizer.encode(example.target, add_special_tokens=False) + [tokenizer.eos_token_id]
    # Keep the end of the prompt (question and answer cue) when an example is too long.
    prompt_ids = list(prompt_ids)[-(max_tokens - len(target_ids)):]
    input_ids = torch.tensor([prompt_ids + target_ids])
    labels = torch.tensor([[-100] * len(prompt_ids) + target_ids])
    return input_ids, labels


def train_lora(tokenizer, model, examples: list[TrainingExample], output: Path, *, options: LoraOptions,
               on_step: Callable[[int, float], None] | None = None) -> dict:
    """Train a LoRA adapter on `examples` and save it (with the tokenizer) to `output`; returns a summary."""
    import torch
    from peft import LoraConfig, get_peft_model

    if not examples:
        raise ValueError("no training examples; check the training file and the knowledge base")
    torch.manual_seed(options.seed)
    random.Random(options.seed).shuffle(examples)
    config = LoraConfig(r=options.rank, lora_alpha=options.alpha, lora_dropout=options.dropout,
                        target_modules=list(options.target_modules), task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    peft_model.train()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=options.learning_rate)

    losses = []
    step = 0
    for _ in range(options.epochs):
        for example in examples:
            input_ids, labels = _encode(tokenizer, example, options.max_tokens)
            loss = peft_model(input_ids=input_ids, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            losses.append(float(loss))
            if on_step is not None:
                on_step(step, float(loss))

    output.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    summary = {"examples": len(examples), "steps": step, "first_loss": losses[0],
               "last_loss": sum(losses[-10:]) / len(losses[-10:]), "options": options.__dict__}
    (output / "domainrag_training.json").write_text(json.dumps(summary, indent=2, default=list))
    return summary
