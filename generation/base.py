"""The generator protocol: the backbone that writes answers from numbered context."""

from typing import Protocol, runtime_checkable

Message = dict[str, str]


@runtime_checkable
class Generator(Protocol):
    name: str
    context_window: int  # tokens the backbone reads, prompt and answer together

    def count_tokens(self, text: str) -> int: ...

    def generate(self, messages: list[Message], *, max_new_tokens: int) -> str: ...


class GeneratorLoadError(RuntimeError):
    pass
