"""Which candidates the beam keeps: the best means, or the Pareto front across validation tasks."""

from __future__ import annotations

from agentlightning_apo import Candidate, best_of, select_beam, select_pareto


def candidate(number: int, *scores: float) -> Candidate:
    return Candidate(
        f"c{number}", 1, None, None, {"p": f"text {number}"}, task_scores={f"t{i}": s for i, s in enumerate(scores)}
    )


def ids(candidates: list[Candidate]) -> list[str]:
    return [c.id for c in candidates]


def test_beam_keeps_the_best_means_and_ties_go_to_the_older() -> None:
    pool = [candidate(0, 0.5, 0.5), candidate(1, 1.0, 0.0), candidate(2, 0.0, 0.2), candidate(3, 0.9, 0.9)]
    assert ids(select_beam(pool, 3)) == ["c3", "c0", "c1"]  # c0 and c1 tie at .5: the older first
    assert best_of(pool).id == "c3"
    assert ids(select_beam(pool, 10)) == ["c3", "c0", "c1", "c2"]


def test_an_edit_must_do_strictly_better_to_displace_its_parent() -> None:
    assert ids(select_beam([candidate(2, 0.5), candidate(0, 0.5)], 1)) == ["c0"]


def test_pareto_keeps_whoever_is_best_on_some_task_and_not_dominated() -> None:
    pool = [
        candidate(0, 0.0, 0.0, 0.0),  # best on nothing
        candidate(1, 1.0, 0.0, 0.0),  # best on t0 only: low mean, but kept
        candidate(2, 0.0, 1.0, 0.6),  # best mean, best on t1 and t2
        candidate(3, 0.0, 0.6, 0.5),  # dominated by c2
    ]
    assert ids(select_pareto(pool, 2)) == ["c2", "c1"]
    assert ids(select_beam(pool, 2)) == ["c2", "c3"]
    assert ids(select_pareto(pool, 10)) == ["c2", "c1"]


def test_pareto_always_keeps_the_best_mean_even_when_it_wins_no_task() -> None:
    pool = [candidate(0, 1.0, 0.0), candidate(1, 0.0, 1.0), candidate(2, 0.9, 0.9)]
    assert ids(select_pareto(pool, 3)) == ["c2", "c0", "c1"]
    assert ids(select_pareto(pool, 1)) == ["c2"]


def test_pareto_ranks_by_tasks_won_then_mean() -> None:
    pool = [candidate(0, 1.0, 0.0, 0.0, 0.3), candidate(1, 0.0, 1.0, 1.0, 0.0), candidate(2, 0.2, 0.1, 0.1, 1.0)]
    # Means: .325, .5, .35. Wins: c0 1, c1 2, c2 1 -> c1 first (best mean), then c2 (1 win, mean .35) before c0.
    assert ids(select_pareto(pool, 3)) == ["c1", "c2", "c0"]
