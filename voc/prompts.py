"""Prompt templates: Jinja files under `templates/`, rendered in a sandbox.

Each prompt is one template file made of named blocks: `system` and `user` are the chat
messages; the other blocks (`answer_prefix`, `candidate`, `verdict_prefix`, ...) are the
pieces the strategies put in the assistant's turn. Question, context and option texts are
passed as values, so template syntax inside them is plain text, never evaluated.
A user folder given as `templates=` overrides any built-in file of the same name.

Safety: templates run in Jinja's `SandboxedEnvironment` (access to internals such as
`''.__class__` raises `jinja2.exceptions.SecurityError`) with `StrictUndefined`, so a misspelt
variable raises `TemplateVariableError` naming the file, line and the variables that exist; an empty
`stop` block raises `TemplateBlockError` naming the file (an empty stop string would end nothing).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, Template, TemplateNotFound, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from voc.engines.base import ChatPrompt

MESSAGE_BLOCKS = ("system", "user")  # stripped of surrounding whitespace; other blocks are kept verbatim
STOP_BLOCK = "stop"  # the text that ends a generation (cot reasoning, voc verifications); must not be empty


class TemplateVariableError(ValueError):
    """A template uses a variable or attribute that does not exist (usually a typo in a user template)."""


class TemplateBlockError(ValueError):
    """A block renders to something its strategy cannot use (an empty `stop` block); the message names file and block."""


def _template_line(error: BaseException) -> str:
    """'file.jinja line N' of the innermost template frame of a (rewritten) Jinja traceback, or ''."""
    where, tb = "", error.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".jinja"):
            where = f"{Path(filename).name} line {tb.tb_lineno}"
        tb = tb.tb_next
    return where


def builtin_templates_dir() -> Path:
    """The templates shipped with the package (inside the wheel), else the source checkout's `templates/`."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"voc's built-in templates are missing (looked in {here}/templates); reinstall voc")


class Templates:
    """Loads and renders the prompt templates; `folder` overrides the built-in files."""

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        loaders = []
        if folder is not None:
            path = Path(folder)
            if not path.is_dir():
                raise FileNotFoundError(f"templates folder {path} does not exist; give a folder of .jinja files")
            loaders.append(FileSystemLoader(str(path)))
        self.folder = Path(folder) if folder is not None else None
        loaders.append(FileSystemLoader(str(builtin_templates_dir())))
        self.env = SandboxedEnvironment(
            loader=ChoiceLoader(loaders), undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False
        )

    def get(self, name: str) -> Template:
        try:
            return self.env.get_template(name)
        except TemplateNotFound:
            raise FileNotFoundError(f"template {name!r} not found in {self.folder or 'the built-in templates'}") from None

    def block(self, name: str, block: str, **variables: Any) -> str:
        """Render one named block of a template file."""
        template = self.get(name)
        if block not in template.blocks:
            raise KeyError(f"template {name!r} has no block {block!r}; it defines {sorted(template.blocks)}")
        try:
            try:
                text = "".join(template.blocks[block](template.new_context(variables)))
            except UndefinedError:
                self.env.handle_exception()  # re-raises with template file names and line numbers in the traceback
        except UndefinedError as error:
            where = _template_line(error) or name
            raise TemplateVariableError(
                f"template {where} (block {block!r}): {error.message}; "
                f"check the spelling, the variables here are: {', '.join(sorted(variables)) or 'none'}"
            ) from None
        if block == STOP_BLOCK and not text:
            raise TemplateBlockError(
                f"template {template.filename or name} (block {block!r}) is empty; write the text that ends a generation in it "
                f"(the built-in {name} has {self.builtin_block(name, block)!r}) or remove your {name} to use the built-in"
            )
        return text.strip() if block in MESSAGE_BLOCKS else text

    def builtin_block(self, name: str, block: str) -> str:
        """The built-in template's rendering of a block that needs no variables (for messages); '' if it has none."""
        try:
            return Templates().block(name, block) if self.folder is not None else ""
        except (FileNotFoundError, KeyError, ValueError):
            return ""

    def chat(self, name: str, response_prefix: str = "", **variables: Any) -> ChatPrompt:
        """The system and user messages of a template file, with the start of the assistant's reply."""
        messages = [{"role": role, "content": self.block(name, role, **variables)} for role in MESSAGE_BLOCKS]
        return ChatPrompt(tuple(m for m in messages if m["content"]), response_prefix)

    def source_hash(self) -> str:
        """A hash of every template's source, for run fingerprints: a changed template is a changed run."""
        import hashlib

        digest = hashlib.sha256()
        for name in sorted(self.env.list_templates(extensions=["jinja"])):
            source, _, _ = self.env.loader.get_source(self.env, name)  # type: ignore[union-attr]
            digest.update(name.encode() + b"\0" + source.encode() + b"\0")
        return digest.hexdigest()
