"""How the integrations' overhead benchmarks print a case: the run without the integration, with a do-nothing
stand-in (the framework's own cost of dispatching to one), and with the integration; what it adds, per LLM call
and as a share of the run."""

from __future__ import annotations


def report(title: str, got: dict[str, float], llm_calls: int, labels: tuple[str, str, str]) -> None:
    """Print ``got`` (µs per run for the cases ``none``, ``nothing`` and ``lightning``), labelled ``labels``."""
    none, nothing, ours = got["none"], got["nothing"], got["lightning"]
    print(title)
    print(f"  {labels[0]:28s} {none:8.1f} µs")
    print(f"  {labels[1]:28s} {nothing:8.1f} µs   (the framework's dispatch to it)")
    print(f"  {labels[2]:28s} {ours:8.1f} µs")
    print(
        f"  {'it adds':28s} {ours - nothing:8.1f} µs over the do-nothing one "
        f"({(ours - nothing) / llm_calls:.1f} µs per LLM call), {(ours - nothing) / ours * 100:.1f} % of the run"
    )
    print(
        f"  {'all of it adds':28s} {ours - none:8.1f} µs over none "
        f"({(ours - none) / llm_calls:.1f} µs per LLM call), {(ours - none) / ours * 100:.1f} % of the run"
    )
