"""The reward ``trl grpo --config`` loads by the dotted path in an exported YAML (``reward_funcs``): each row's
own verifier (the prompt set's ``verifier`` column) on its gold ``answer``, the check that measured its pass rate."""

from dataflow.trainers.rewards import grpo_reward

verified_answer = grpo_reward(default=None)
