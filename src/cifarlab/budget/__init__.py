"""`train --budget`: the most accurate recipe of the measured accuracy-cost front that fits the time given."""

from cifarlab.budget.frontier import Frontier, FrontPoint, load_frontier
from cifarlab.budget.planner import BudgetResult, Plan, parse_budget, plan_budget, train_within

__all__ = [
    "BudgetResult",
    "FrontPoint",
    "Frontier",
    "Plan",
    "load_frontier",
    "parse_budget",
    "plan_budget",
    "train_within",
]
