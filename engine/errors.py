"""Errors the engine reports to its client with a clear message (no traceback needed)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence


class Gen3DError(Exception):
    """Base class: an error whose message is meant for the user."""


class MissingModelError(Gen3DError):
    """The weights of a model could not be found (or fetched)."""

    def __init__(self, model: str, tried: Sequence[str], hint: str = "", reasons: Sequence[str] = ()):
        self.model = model
        self.tried = tuple(tried)
        self.reasons = tuple(reasons)
        lines = [f"model {model!r} is missing: no usable weights were found."]
        if self.tried:
            lines.append("Tried, in order:")
            for i, source in enumerate(self.tried):
                why = f" ({self.reasons[i]})" if i < len(self.reasons) and self.reasons[i] else ""
                lines.append(f"  - {source}{why}")
        else:
            lines.append("The profile names no source for it.")
        lines.append(
            hint
            or (
                f"Put a local copy on disk and point to it with --model {model}=/path/to/weights "
                "(or the add-on preferences), or allow downloads so the Hugging Face id can be fetched."
            )
        )
        super().__init__("\n".join(lines))


class BadInputError(Gen3DError):
    """The user's input (image, depth, camera, settings) cannot be used."""


class Cancelled(Gen3DError):
    """The client asked the engine to stop."""

    stage = ""  # the stage that was running, set by the pipeline (the "cancelled" event's field)


@contextmanager
def cancel_inside(model: Any, should_stop: Callable[[], bool] | None, what: str) -> Iterator[None]:
    """Within the block, ``should_stop()`` is polled before every submodule of ``model`` (a torch
    module) runs, and a cancel raises ``Cancelled``: one model call (MoGe-2's inference, SAM's image
    encoder) stops within one of its blocks instead of at its end.  The hooks are removed after."""
    if should_stop is None:
        yield
        return

    def check(module, inputs) -> None:
        if should_stop():
            raise Cancelled(f"cancelled during {what}")

    hooks = [module.register_forward_pre_hook(check) for module in model.modules()]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


class OutOfMemory(Gen3DError):
    """The device ran out of memory in a stage; the message names the peak and the setting to lower."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.hint = hint


def is_out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ in ("OutOfMemoryError", "MemoryError") or "out of memory" in str(exc).lower()
