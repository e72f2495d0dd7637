"""Show the thoughts a checkpoint writes where an answer starts (README, "RL in pretraining").

    python -m train.think RUN_DIR --phase=NAME [--n=6] [--show=6] [--samples=2] [--max_new_tokens=16] [--horizon=4]

The documents are held-out problems of the run's own task (its seed, digits and operations) rendered as
answer-only chat turns, `<|user|>Q<|assistant|>Answer: N<|end|>`, and the position t is just before the
answer's first digit, where a thought would help most. At each the model writes a greedy thought and
`samples` sampled ones (temperature 1, one seed per thought) after doc[:t] + <|assistant|>, as an `rlp` phase
does, and each is printed with its information gain on the next `horizon` tokens against the same model
without a thought (train/thoughts.py information_gain); the last lines give the means over all `n` problems
of the greedy and of the sampled thoughts. Read-only: it loads the phase-end checkpoint and
writes nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from model.gpt import GPT, GPTConfig
from model.sampler import generate
from train import branch, checkpoint
from train.checkpoint import CheckpointError
from train.config import TaskConfig
from train.tasks import ArithmeticTask
from train.thoughts import information_gain
from train.tokenizer import Tokenizer


def readable(tok: Tokenizer, ids: list[int]) -> str:
    """The text of `ids`, with an id past the tokenizer's vocabulary (the model's vocabulary is padded to a
    multiple of 64, and a policy trained hard enough can sample a padding id) shown as <|id N|>."""
    out, run = [], []
    for t in ids + [-1]:
        if 0 <= t < tok.n_vocab:
            run.append(t)
            continue
        out.append(tok.decode(run))
        run = []
        if t >= 0:
            out.append(f"<|id {t}|>")
    return "".join(out)


def answer_positions(task: ArithmeticTask, tok: Tokenizer, n: int) -> list[tuple[list[int], int]]:
    """(document, t) for held-out problems 0..n−1: the answer-only chat turn and the index of the answer's
    first token (doc[:t] ends with "Answer:" and whatever the tokenizer joins to it before the digits)."""
    out = []
    for i in range(n):
        problem = task.problem("eval", i)
        doc = tok.render_chat(problem.messages(direct=True)).ids
        answer = tok.encode(str(problem.answer))
        t = max(j for j in range(len(doc) - len(answer) + 1) if doc[j : j + len(answer)] == answer)
        out.append((doc, t))
    return out


@torch.no_grad()
def show(model: GPT, tok: Tokenizer, task: ArithmeticTask, *, n: int, samples: int, max_new_tokens: int,
         horizon: int, seed: int = 0, micro_rows: int = 64) -> list[dict]:
    """One record per (position, thought), the greedy thought of a position first: the context, the thought,
    the text it precedes, the information gain, and whether it is the greedy thought."""
    positions = answer_positions(task, tok, n)
    contexts = [doc[:t] for doc, t in positions]
    prompts = [c + [tok.assistant] for c in contexts]
    kw = dict(max_new_tokens=max_new_tokens, stop_id=tok.end, pad_id=tok.pad)
    thoughts = [[c] for c in generate(model, prompts, temperature=0.0, **kw)]
    if samples:  # one seed per thought: a thought does not depend on which others are sampled beside it
        sampled = generate(model, [p for p in prompts for _ in range(samples)], temperature=1.0,
                           seeds=[seed * 1_000_003 + i * 101 + j for i in range(n) for j in range(samples)], **kw)
        for i in range(n):
            thoughts[i] += sampled[i * samples : (i + 1) * samples]
    flat = [(i, c) for i in range(n) for c in thoughts[i]]
    gains = information_gain(model, model, [contexts[i] for i, _ in flat], [c for _, c in flat],
                             [doc[t : t + horizon] for i, _ in flat for doc, t in [positions[i]]],
                             tok=tok, micro_rows=micro_rows, backend="reference")
    records = []
    for k, ((i, c), g) in enumerate(zip(flat, gains.tolist())):
        doc, t = positions[i]
        records.append({"context": tok.decode(contexts[i]), "thought": readable(tok, c), "thought_ids": c,
                        "continuation": tok.decode(doc[t : t + horizon]), "info_gain": g,
                        "greedy": k == 0 or flat[k - 1][0] != i})
    return records


def load(run_dir: str, phase: str) -> tuple[GPT, Tokenizer, ArithmeticTask]:
    """The model at the end of `phase` of a finished or interrupted run, its tokenizer and its task."""
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)["config"]
    path = branch.checkpoint_path(argparse.Namespace(init_from=run_dir, init_phase=phase))
    state = checkpoint.read(path)
    tok = Tokenizer.loads(state["tokenizer"], source=path)
    model = GPT(GPTConfig(**state["identity"]["model"], kernels="reference")).eval()
    checkpoint.load_model_state(model, state["model"], path)
    return model, tok, TaskConfig(**config["task"]).arithmetic(config["seed"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.think", description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a run folder")
    ap.add_argument("--phase", required=True, help="the phase whose end checkpoint to load")
    ap.add_argument("--n", type=int, default=6, help="held-out problems the means are taken over")
    ap.add_argument("--show", type=int, default=6, help="problems whose thoughts are printed")
    ap.add_argument("--samples", type=int, default=2, help="sampled thoughts per problem, beside the greedy one")
    ap.add_argument("--max_new_tokens", type=int, default=16, help="thought length limit")
    ap.add_argument("--horizon", type=int, default=4, help="tokens of text the information gain is scored on")
    ap.add_argument("--seed", type=int, default=0, help="seeds the sampled thoughts")
    args = ap.parse_args(argv)
    if min(args.n, args.max_new_tokens, args.horizon) < 1 or args.samples < 0:
        print("error: --n, --max_new_tokens and --horizon must be >= 1 and --samples >= 0", file=sys.stderr)
        return 2
    try:
        model, tok, task = load(args.run, args.phase)
    except (CheckpointError, OSError, ValueError, KeyError) as e:
        print(f"error: {args.run}: {e}", file=sys.stderr)
        return 2
    records = show(model, tok, task, n=args.n, samples=args.samples, max_new_tokens=args.max_new_tokens,
                   horizon=args.horizon, seed=args.seed)
    for r in records[: args.show * (1 + args.samples)]:
        mark = "greedy " if r["greedy"] else "sampled"
        print(f"{r['context'].splitlines()[-1][-40:]!r:44} {mark} {r['thought']!r:42} → "
              f"{r['continuation']!r:12} gain {r['info_gain']:+7.2f}")
    for label, rs in (("greedy", [r for r in records if r["greedy"]]), ("sampled", [r for r in records if not r["greedy"]])):
        if rs:
            print(f"{label:8} thoughts: {len(rs)}, mean information gain {sum(r['info_gain'] for r in rs) / len(rs):+.2f} "
                  f"nats, mean length {sum(len(r['thought_ids']) for r in rs) / len(rs):.1f} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
