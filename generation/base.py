"""The generator protocol: the backbone that writes answers from numbered context."""

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

Message = dict[str, str]


@runtime_checkable
class Generator(Protocol):
    name: str
    context_window: int  # tokens the backbone reads, prompt and answer together

    def count_tokens(self, text: str) -> int: ...

    def generate(self, messages: list[Message], *, max_new_tokens: int) -> str: ...

    def stream(self, messages: list[Message], *, max_new_tokens: int) -> Iterator[str]:
        """Yield the answer in pieces as they are produced."""
        ...


class GeneratorLoadError(RuntimeError):
    pass


class GenerationError(RuntimeError):
    """A backbone failed while answering, for example a remote server that dropped the stream."""
