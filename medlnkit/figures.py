"""Figures for the notebooks: loss curves and parameters against accuracy."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless under papermill and CI; notebooks still display the returned figures
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plot_loss_curves(losses: pd.DataFrame, title: str, smooth: int = 1):
    """Plot training loss against optimizer step, one line per paradigm.

    ``losses`` has the columns paradigm, step, loss; ``smooth`` is a moving-average window in steps.
    """
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.get_cmap("tab20").colors
    styles = ("-", "--", ":", "-.")
    for index, (paradigm, frame) in enumerate(losses.groupby("paradigm", sort=False)):
        values = frame["loss"].rolling(smooth, min_periods=1).mean() if smooth > 1 else frame["loss"]
        # 20 colours and 4 line styles keep up to 80 curves distinguishable.
        ax.plot(frame["step"], values, label=paradigm, linewidth=1.4,
                color=colors[index % len(colors)], linestyle=styles[(index // len(colors)) % len(styles)])  # fmt: skip
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (cross-entropy per answer token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, title="paradigm (ViT,JTM,DEC)", title_fontsize=8)
    fig.tight_layout()
    return fig


def plot_params_vs_accuracy(table: pd.DataFrame, accuracy: str = "global_acc", title: str = ""):
    """Scatter trainable parameters (log scale) against accuracy, each point named by its paradigm."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(table["trainable_params"], table[accuracy])
    for _, row in table.iterrows():
        ax.annotate(row["paradigm"], (row["trainable_params"], row[accuracy]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(f"{accuracy.replace('_', ' ')} (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> Path:
    """Save a figure as PNG (150 dpi), creating the folder; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path
