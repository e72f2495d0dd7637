"""Phases that optimise several objectives at once: loss = Σ_i w_i · loss_i, each on its own data.

A phase names its main objective and, in `aux`, extra ones with weights (`--grpo.aux=sft=0.5` keeps the SFT
loss alongside RL; `--sft.aux=pretrain=0.1` keeps some next-token loss on plain text). Every component
draws a full step of its own data (the phase's batch sizes) and normalises by its own step-wide count, so
each weight means what it says; the loop sees one source and one objective as usual.
"""
from __future__ import annotations


class MixedSource:
    """Draws one step from every component's source; each micro-batch remembers which component it is."""

    def __init__(self, parts: list[tuple[str, object]]):
        self.names = [name for name, _ in parts]  # (kind name, source), the phase's main source first
        self.sources = [source for _, source in parts]

    def next_step(self, rows: int, micro_rows: int, model=None) -> list:
        out = []
        for i, source in enumerate(self.sources):
            for b in source.next_step(rows, micro_rows, model):
                b.component = i
                out.append(b)
        return out

    def metrics(self) -> dict[str, float]:
        """Every component's source metrics; an aux component's prefixed with its kind, as its loss is."""
        return {("" if i == 0 else f"{name}_") + k: v
                for i, (name, source) in enumerate(zip(self.names, self.sources)) for k, v in source.metrics().items()}

    def state_dict(self) -> dict:
        return {"sources": [s.state_dict() for s in self.sources]}

    def load_state_dict(self, state: dict) -> None:
        for s, st in zip(self.sources, state["sources"]):
            s.load_state_dict(st)


class MixedObjective:
    """Routes each micro-batch to its component's objective and weighs its loss; aux metrics get a prefix."""

    def __init__(self, parts: list[tuple[str, float, object]]):
        self.parts = parts  # (name, weight, objective), the phase's main objective first with weight 1

    def __call__(self, model, batch):
        name, weight, objective = self.parts[batch.component]
        loss, metrics = objective(model, batch)
        prefix = "" if batch.component == 0 else f"{name}_"
        return weight * loss, {prefix + k: v for k, v in metrics.items()}
