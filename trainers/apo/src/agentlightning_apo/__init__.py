"""APO: automatic prompt optimization for the agents of Agent Lightning.

``APO`` (:mod:`agentlightning_apo.algorithm`) is a textual-gradient beam search over the named ``PromptTemplate``
resources of an agent, scored by the agent's own rollouts; run it with a trainer::

    apo = APO(APOConfig(rounds=3, beam_width=2, branch_factor=2, optimizer_model="gpt-4.1-mini"))
    trainer = agl.Trainer(algorithm=apo, initial_resources={"llm": llm, "system_prompt": agl.PromptTemplate(...)})
    result = trainer.fit(agent, train_tasks, val_tasks)
    print(result.best_score, result.best_prompt.template)

The pieces, in the order a round uses them::

    runs = [make_run(rollout, spans, agl.TraceToMessages(agents).adapt(spans), missing_reward), ...]
    text = render_runs(runs, max_chars, message_max_chars)         # messages, tool calls, rewards, failures
    critique = await optimizer.critique(name, template, reward, text)  # prompts/critique.md
    reply = await optimizer.edit(name, template, critique)         # prompts/edit.md
    child = check_edit(template, reply)                            # or UnusablePrompt(reason): skipped
    beam = select_beam(candidates, width) / select_pareto(candidates, width)
"""

from agentlightning_apo.algorithm import APO, APOResult, NoPromptToOptimize
from agentlightning_apo.candidates import Candidate, RoundRecord, SkippedEdit, best_of, select_beam, select_pareto
from agentlightning_apo.config import AgentSelector, APOConfig, ConfigError, Selection
from agentlightning_apo.edits import UnusablePrompt, check_edit, extract_prompt, load_prompt, placeholders_text
from agentlightning_apo.history import round_table, write_history
from agentlightning_apo.optimizer import Optimizer, OptimizerError
from agentlightning_apo.runs import Run, make_run, render_runs

__all__ = [
    # the loop
    "APO",
    "APOResult",
    "NoPromptToOptimize",
    # configuration
    "APOConfig",
    "Selection",
    "AgentSelector",
    "ConfigError",
    # candidates and selection
    "Candidate",
    "RoundRecord",
    "SkippedEdit",
    "best_of",
    "select_beam",
    "select_pareto",
    # the optimizer: runs, critique, edit
    "Run",
    "make_run",
    "render_runs",
    "Optimizer",
    "OptimizerError",
    "load_prompt",
    "placeholders_text",
    "extract_prompt",
    "check_edit",
    "UnusablePrompt",
    # history
    "round_table",
    "write_history",
]
