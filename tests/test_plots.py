"""The run's plots: plain tick labels on the log-scale loss axis, whole steps, and single points visible."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from train.report import loss_figure  # noqa: E402


def records():
    """Two pretraining steps with losses close together, one SFT step, and three GRPO steps."""
    rows = [("pretrain", 1, 5.9, None), ("pretrain", 2, 5.6, None), ("sft", 3, 5.5, None),
            ("grpo", 4, 0.0, 0.1), ("grpo", 5, 0.0, 0.3), ("grpo", 6, 0.0, 0.2)]
    return [{"kind": "train", "phase": p, "step": s, "loss": loss} | ({} if r is None else {"reward": r})
            for p, s, loss, r in rows]


def labels(axis) -> list[str]:
    return [t.get_text() for t in axis.get_majorticklabels() + axis.get_minorticklabels() if t.get_text()]


def test_the_log_loss_axis_is_labelled_with_plain_numbers():
    fig = loss_figure(records())
    fig.canvas.draw()
    ys = labels(fig.axes[0].yaxis)
    assert ys and all("10^" not in y and "times" not in y and "×" not in y for y in ys), ys
    assert all(float(y) > 0 for y in ys)
    plt.close(fig)


def test_step_axes_have_whole_numbers_only():
    fig = loss_figure(records())
    fig.canvas.draw()
    for ax in fig.axes:
        steps = [float(t.replace("−", "-")) for t in labels(ax.xaxis)]
        assert steps and all(s == int(s) for s in steps), steps
    plt.close(fig)


def test_a_phase_with_one_logged_step_is_drawn():
    fig = loss_figure(records())
    sft = next(line for line in fig.axes[0].get_lines() if line.get_label() == "sft")
    assert len(sft.get_xdata()) == 1 and sft.get_marker() not in (None, "None", "", " ")
    plt.close(fig)


def test_a_run_of_rl_phases_only_draws_the_reward_panel_without_warnings(recwarn):
    fig = loss_figure([r for r in records() if r["phase"] == "grpo"])
    assert [ax.get_title() for ax in fig.axes] == ["RL reward"]
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["grpo"]
    assert not [w for w in recwarn if "artists" in str(w.message)], [str(w.message) for w in recwarn]
    plt.close(fig)
