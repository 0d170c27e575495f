"""Where training metrics go: metrics.jsonl (always; training steps carry ``loss``, evaluations
``eval_loss``), samples.jsonl (generated replies), a progress bar or log lines, TensorBoard,
Weights & Biases, and a loss-curve PNG at the end. Only rank 0 reports."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from .evaluate import EvalResult

REPORTERS = {"tensorboard", "wandb"}


def resolve_reporters(requested: list[str] | str) -> list[str]:
    """``auto``: TensorBoard when installed, W&B when installed and configured (WANDB_API_KEY or
    WANDB_MODE set), so that an unconfigured W&B never stops a run to ask for a login."""
    if requested != "auto":
        return [requested] if isinstance(requested, str) else list(requested)
    chosen = []
    if importlib.util.find_spec("tensorboard") is not None:
        chosen.append("tensorboard")
    if importlib.util.find_spec("wandb") is not None and (os.environ.get("WANDB_API_KEY") or
                                                           os.environ.get("WANDB_MODE")):
        chosen.append("wandb")
    return chosen


class Reporter:
    def __init__(self, out: Path, total_steps: int, reporters: list[str], run_config: dict[str, Any],
                 first_step: int = 0) -> None:
        self.out = out
        self.metrics = (out / "metrics.jsonl").open("a")
        self.samples = (out / "samples.jsonl").open("a")
        self.total_steps = total_steps
        self.tensorboard: Any = None
        self.wandb: Any = None
        if "tensorboard" in reporters:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415

            self.tensorboard = SummaryWriter(str(out / "tensorboard"))
        if "wandb" in reporters:
            import wandb  # noqa: PLC0415

            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "sftpack"), config=run_config,
                                    dir=str(out), resume="allow")
        self.bar: Any = None
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm  # noqa: PLC0415

                self.bar = tqdm(total=total_steps, initial=first_step, unit="step", dynamic_ncols=True)
            except ImportError:
                pass

    def log(self, record: dict[str, Any], eta_s: float) -> None:
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(f"train/{key}", value, record["step"])
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in scalars.items()}, step=record["step"])
        mfu = f"  MFU {record['mfu']:.1%}" if "mfu" in record else ""
        summary = (f"loss {record['loss']:.4f}  lr {record['lr']:.2e}  {record['tokens_per_s']:,.0f} tokens/s{mfu}")
        if self.bar is not None:
            self.bar.n = record["step"]
            self.bar.set_postfix_str(summary)
            self.bar.refresh()
        else:
            print(f"step {record['step']}/{self.total_steps}  {summary}  ETA {eta_s:.0f}s", flush=True)

    def _say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def log_eval(self, step: int, result: EvalResult, best: float, best_step: int) -> None:
        record = {"step": step, "eval_loss": round(result.loss, 6), "eval_tokens": result.tokens,
                  "eval_s": round(result.seconds, 2), "best_eval_loss": round(best, 6), "best_step": best_step}
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        if self.tensorboard is not None:
            self.tensorboard.add_scalar("eval/loss", result.loss, step)
        if self.wandb is not None:
            self.wandb.log({"eval/loss": result.loss}, step=step)
        self._say(f"eval at step {step}: loss {result.loss:.4f} over {result.tokens:,} trained tokens "
                  f"({result.seconds:.1f}s); best {best:.4f} at step {best_step}")

    def log_sample(self, step: int, prompt: str, reply: str, seconds: float) -> None:
        record = {"step": step, "prompt": prompt, "reply": reply, "seconds": round(seconds, 2)}
        self.samples.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.samples.flush()
        if self.tensorboard is not None:
            self.tensorboard.add_text("samples", f"**{prompt}**\n\n{reply}", step)
        if self.wandb is not None:
            self.wandb.log({"samples": self.wandb.Html(f"<b>{prompt}</b><br>{reply}")}, step=step)
        self._say(f"  sample at step {step}: {prompt!r} -> {reply!r}")

    def close(self) -> None:
        self.metrics.close()
        self.samples.close()
        if self.bar is not None:
            self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
        plot_loss_curve(self.out / "metrics.jsonl", self.out / "loss.png")


def plot_loss_curve(metrics: Path, target: Path) -> Path | None:
    """loss.png from metrics.jsonl: the training loss, and the eval loss beside it when the run
    evaluated; None (with a note) when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("note: no loss.png (pip install matplotlib)", file=sys.stderr)
        return None
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    if not train:
        return None
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    axes.plot([r["step"] for r in train], [r["loss"] for r in train], linewidth=1.2, label="training loss")
    title = f"{metrics.parent.name}: {train[-1]['loss']:.4f} at step {train[-1]['step']}"
    if evals:
        axes.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], marker="o", linewidth=1.2,
                  label="eval loss")
        title += f"; eval {evals[-1]['eval_loss']:.4f}"
        axes.legend()
    axes.set_xlabel("step")
    axes.set_ylabel("loss (mean over trained tokens)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(target)
    plt.close(figure)
    return target
