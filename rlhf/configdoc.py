"""Reading config dataclasses back: each field's docstring and scalar type (standard library only).

Configs keep a docstring under every field (the CleanRL habit); the CLI help, the job forms and
the docs read them from here, so a setting is documented once. Standard library only: the CLI
builds options from these while `rlhf --help` must stay fast and free of torch.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing


def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under a dataclass's fields (`x: int = 1` then `\"\"\"doc\"\"\"`), bases included.

    Read from the class source with `ast`; a class whose source is unavailable (a frozen app)
    contributes nothing rather than failing.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = next((node.body for node in tree.body if isinstance(node, ast.ClassDef)), [])
        for current, following in zip(body, body[1:]):
            if (
                isinstance(current, ast.AnnAssign)
                and isinstance(current.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[current.target.id] = " ".join(following.value.value.split())
    return docs


def field_types(cls: type) -> dict[str, tuple[type, bool]]:
    """Each field's scalar type and whether it accepts None: `int | None` → (int, True)."""
    hints = typing.get_type_hints(cls)
    result: dict[str, tuple[type, bool]] = {}
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        args = typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            scalars = [a for a in args if a is not type(None)]
            result[field.name] = (scalars[0], type(None) in args)
        else:
            result[field.name] = (hint, False)
    return result
