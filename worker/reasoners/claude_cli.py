"""The seed's reasoner: ``claude --print -p PROMPT`` as a subprocess, with a timeout."""

from __future__ import annotations

import subprocess

from schemas.scratchpad import ScratchpadSummary
from worker import prompts
from worker.reasoners.base import (
    DistillReply,
    EpisodeRequest,
    PermanentReasonerError,
    ReasonerReply,
    TransientReasonerError,
)
from worker.reasoners.parsing import parse_answer, parse_wisdom

DISTILL_FORMAT = (
    "Answer with one JSON object after the line 'JSON:', with keys presets (list of "
    "{name, params: {all 17 parameters}, when_to_use}), heuristics (list of {condition, "
    "adjustment, rationale}), warnings (list of strings), intuitions (string)."
)


class ClaudeCliReasoner:
    """Runs the ``claude`` command line tool once per episode."""

    name = "claude-cli"

    def __init__(self, timeout: float, command: str = "claude") -> None:
        self.timeout = timeout
        self.command = command

    def reason(self, request: EpisodeRequest) -> ReasonerReply:
        """One CLI call; the markdown or JSON answer is parsed and validated."""
        prompt = "\n\n".join(
            [prompts.system_prompt(), prompts.episode_prompt(request), prompts.ANSWER_FORMAT]
        )
        raw = self._call(prompt)
        answer, dropped = parse_answer(raw)
        return ReasonerReply(raw=raw, answer=answer, dropped=dropped)

    def distill(self, summary: ScratchpadSummary) -> DistillReply:
        """One CLI call for the distillation."""
        raw = self._call(prompts.distill_prompt(summary) + "\n\n" + DISTILL_FORMAT)
        return DistillReply(raw=raw, draft=parse_wisdom(raw))

    def _call(self, prompt: str) -> str:
        try:
            done = subprocess.run(
                [self.command, "--print", "-p", prompt],
                capture_output=True, text=True, errors="replace", timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise PermanentReasonerError(f"{self.command!r} is not installed") from exc
        except subprocess.TimeoutExpired as exc:
            raise TransientReasonerError(f"{self.command} timed out after {self.timeout}s") from exc
        if done.returncode != 0:
            raise TransientReasonerError(
                f"{self.command} exited {done.returncode}: {done.stderr[-300:].strip()}"
            )
        return done.stdout.strip()
