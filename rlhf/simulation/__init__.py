"""Simulated annotators with planted truth: gold scoring, planted profiles, and runs through the annotation engine.

- `rlhf.simulation.gold`: `gold_score(prompt, response, category)`, the deterministic gold.
- `rlhf.simulation.annotators`: `SimulationConfig`, `AnnotatorProfile`, how each annotator
  judges and rates, and `best_achievable_accuracy` (the ceiling the noise allows).
- `rlhf.simulation.runner`: `simulate(engine, project, config)`, acting through
  `next_task` / `submit_*` like the app's pages.

No torch here: simulating needs only the database.
"""

from rlhf.simulation.annotators import (
    AnnotatorProfile,
    GoldPair,
    SimulationConfig,
    best_achievable_accuracy,
    majority_accuracy,
    plant_annotators,
    planted_summary,
    profiles_from_dicts,
    vote_accuracy,
)
from rlhf.simulation.gold import GOLD_WEIGHTS, GoldComponents, gold_components, gold_score
from rlhf.simulation.runner import PlantedAnnotator, SimulationError, SimulationResult, simulate

__all__ = [
    "GOLD_WEIGHTS",
    "AnnotatorProfile",
    "GoldComponents",
    "GoldPair",
    "PlantedAnnotator",
    "SimulationConfig",
    "SimulationError",
    "SimulationResult",
    "best_achievable_accuracy",
    "gold_components",
    "gold_score",
    "majority_accuracy",
    "plant_annotators",
    "planted_summary",
    "profiles_from_dicts",
    "simulate",
    "vote_accuracy",
]
