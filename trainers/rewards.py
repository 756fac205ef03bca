"""Rewards for GRPO and pass@k from dataflow's own verifiers, chosen per prompt by the prompt set's
``verifier`` column (or one name for the whole set): the reward a policy is trained on is the check
that measured the prompt's pass rate when the data was built."""

from __future__ import annotations

import json
from typing import Any, Callable

from dataflow.errors import DataflowError
from dataflow.operators.rewards import CodeVerify, JsonSchemaVerify, MatchVerify, MathVerify
from dataflow.operators.rewards.base import Verifier

# verifier name -> (output column) -> the verifier of a `response` against the gold `answer` (for code: its tests);
# a JSON schema's verifier is per row (PER_ROW)
VERIFIERS: dict[str, Callable[..., Verifier]] = {
    "math": lambda output="reward": MathVerify(output=output),
    "exact": lambda output="reward": MatchVerify(mode="exact", output=output),
    "contains": lambda output="reward": MatchVerify(mode="contains", output=output),
    "regex": lambda output="reward": MatchVerify(mode="regex", output=output),
    "code": lambda output="reward": CodeVerify(tests="answer", output=output),
}
# the details by which a verifier says it found no answer in a response (format correctness counts those)
NO_ANSWER = frozenset({"empty response", "no answer found in the response",  # MathVerify
                       "empty program",  # CodeVerify
                       "missing response or answer"})  # MatchVerify
PER_ROW = {"json_schema"}  # the answer is the schema the response must satisfy
NAMES = sorted([*VERIFIERS, *PER_ROW])


def verifier_problems(names: set[str]) -> list[str]:
    """What stops these verifiers (a prompt set's ``verifier`` values) from checking answers here: an
    unknown name, or a verifier that cannot run on this machine (code without its sandbox)."""
    unknown = sorted(n for n in names if n not in VERIFIERS and n not in PER_ROW)
    found = [f"no verifier named {', '.join(map(repr, unknown))}; known: {', '.join(NAMES)}"] if unknown else []
    return found + [f"{name}: {problem}" for name in sorted(names & set(VERIFIERS))
                    for problem in VERIFIERS[name]().check()]


def check(verifier: str, responses: list[str], answers: list[Any]) -> list[float | None]:
    """The reward of each response against its gold answer (None: the check could not finish)."""
    if verifier in PER_ROW:
        return [JsonSchemaVerify(schema=json.loads(a)).check_rows([{"response": r}])[0][0]
                for r, a in zip(responses, answers)]
    if verifier not in VERIFIERS:
        raise DataflowError(f"unknown verifier {verifier!r}; known: {', '.join(NAMES)}")
    rows = [{"response": r, "answer": a} for r, a in zip(responses, answers)]
    return [result[0] for result in VERIFIERS[verifier]().check_rows(rows)]


def rewards_by_verifier(verifiers: list[str], responses: list[str], answers: list[Any]) -> list[float | None]:
    """``check`` for rows that may each name another verifier, one batch per verifier."""
    rewards: list[float | None] = [None] * len(responses)
    for name in sorted(set(verifiers)):
        index = [i for i, v in enumerate(verifiers) if v == name]
        for i, reward in zip(index, check(name, [responses[i] for i in index], [answers[i] for i in index])):
            rewards[i] = reward
    return rewards


def completion_text(completion: Any) -> str:
    """A TRL completion (text, or a conversational list of turns) as the text a verifier reads."""
    if isinstance(completion, str):
        return completion
    return "".join(turn.get("content") or "" for turn in completion)


def grpo_reward(default: str | None) -> Callable[..., list[float]]:
    """A TRL GRPO reward function: the verifier named by each row's ``verifier`` column, else ``default``. A
    completion whose check could not finish in time gets 0, not None: TRL gives an unscored completion no
    advantage, so a policy would learn to escape a wrong answer's negative one by writing what cannot be
    checked in time (``\\boxed{9^{9^9}}``)."""

    def verified_answer(prompts, completions, answer, verifier=None, **columns) -> list[float]:
        names = [v or default for v in (verifier or [None] * len(completions))]
        rewards = rewards_by_verifier(names, [completion_text(c) for c in completions], list(answer))
        return [0.0 if reward is None else reward for reward in rewards]

    return verified_answer
