"""SFT: iterated rejection-sampling fine-tuning of the LLMs inside agents, from their own best runs.

``SFT`` (:mod:`agentlightning_sft.algorithm`) is the loop; run it with a trainer::

    sft = SFT(TransformersEngine("smollm2-135m"), SFTConfig(iterations=3, rollouts_per_task=4))
    result = agl.Trainer(algorithm=sft, store=agl.SqliteStore("runs.db")).fit(agent, train_tasks, val_tasks)
    print(result.report())                       # validation before -> after
    result.to_jsonl("selected.jsonl")            # OpenAI chat fine-tuning format

The pieces, in the order an iteration uses them::

    candidates = await read_candidates(store, finished_rollouts, agents)    # reward + calls (tokens and chat)
    selected = select_rollouts(candidates, min_reward=1.0, best_of_n=1)     # or config.select(candidates)
    write_jsonl([e for c in selected for e in c.examples], "iteration-1.jsonl")
    metrics = fine_tune(model, optimizer, token_examples(selected), config) # loss on generated tokens only
"""

from agentlightning_sft.algorithm import SFT, NothingToTrain, SFTResult
from agentlightning_sft.config import ConfigError, LoraSettings, SelectFunction, SFTConfig
from agentlightning_sft.export import openai_chat_record, to_hf_dataset, write_jsonl
from agentlightning_sft.metrics import IterationRecord, MetricsLog, ValidationRecord
from agentlightning_sft.selection import Candidate, read_candidates, select_rollouts
from agentlightning_sft.training import (
    IGNORE_INDEX,
    Batch,
    FineTuneMetrics,
    TokenExample,
    collate,
    completion_nll,
    fine_tune,
    make_optimizer,
    token_examples,
)

__all__ = [
    # the loop
    "SFT",
    "SFTResult",
    "NothingToTrain",
    "IterationRecord",
    "ValidationRecord",
    "MetricsLog",
    # configuration
    "SFTConfig",
    "LoraSettings",
    "SelectFunction",
    "ConfigError",
    # selection
    "Candidate",
    "read_candidates",
    "select_rollouts",
    # export
    "openai_chat_record",
    "write_jsonl",
    "to_hf_dataset",
    # fine-tuning
    "TokenExample",
    "Batch",
    "IGNORE_INDEX",
    "FineTuneMetrics",
    "token_examples",
    "collate",
    "completion_nll",
    "make_optimizer",
    "fine_tune",
]
