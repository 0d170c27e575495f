"""The SFT recipe: setup → train → save, in the torchtune shape.

Each optimizer step takes ``grad_accum`` micro-batches from the pack loader, counts their trained
tokens over all ranks, and backpropagates each micro-batch's summed token loss divided by that
global count, so the loss does not depend on how rows were packed or split across steps.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import PackDataset, PackLoader, PackMixture, collate_padded, collate_padding_free, global_trained_tokens
from ..encoding import pack_template_kwargs
from ..errors import ConfigError
from ..record import TrainingRecord
from . import process_groups, zero
from .attention import PADDING_FREE, choose_attention
from .backends import make_backend
from .checkpoint import Checkpoints
from .config import TrainConfig, load_config
from .evaluate import EvalTracker, Evaluator
from .flops import FlopCounter, document_lengths, peak_flops
from .kernels import apply_kernels, choose_kernels
from .loss import TokenLoss
from .model import DTYPES, check_tokenizer_matches, load_model
from .reporting import Reporter, resolve_reporters
from .sequence_parallel import SequenceParallel, activate

# Token counts are all-reduced as CPU tensors, so GPU runs need gloo beside NCCL.
BACKEND = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def _distributed(deepspeed: bool) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", 1))
    if deepspeed and world == 1:
        # DeepSpeed always runs a process group; one process gets a private, in-memory one (no
        # port) that stays for later runs. DeepSpeed insists on LOCAL_RANK; train() restores the
        # environment afterwards.
        for name in ("LOCAL_RANK", "RANK"):
            os.environ.setdefault(name, "0")
        if not torch.distributed.is_initialized():
            process_groups.start(BACKEND, store=torch.distributed.HashStore(),  # type: ignore[attr-defined]
                                 rank=0, world_size=1)
    if world > 1 and not torch.distributed.is_initialized():
        process_groups.start(BACKEND)
    if deepspeed:
        # DeepSpeed's own view of the group: ZeRO-3 reads the world size from it while the
        # weights are partitioned at load time, before deepspeed.initialize() would set it up
        zero.require_deepspeed().init_distributed(dist_backend=BACKEND)
    if world > 1:
        return torch.distributed.get_rank(), world
    return 0, 1


def _same_on_every_rank(choices: dict[str, str]) -> None:
    """Refuses a multi-process run whose ranks chose different kernels for ``auto`` (a node that
    lacks a package, or has another version of it): they would compute the same model differently."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return
    every: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(every, choices)
    for setting in choices:
        ranks: dict[str, list[int]] = {}
        for rank, chosen in enumerate(every):
            ranks.setdefault(chosen[setting], []).append(rank)
        if len(ranks) > 1:
            found = "; ".join(f"{kernel} on rank {', '.join(map(str, where))}" for kernel, where in ranks.items())
            raise ConfigError(f"{setting}: the ranks chose different kernels ({found})\nhint: install the same "
                              f"packages on every node, or set {setting} to one that runs on all of them")


class SFTRecipe:
    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.out = Path(config.output.dir)
        self.step = 0

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        config = self.config
        self.rank, self.world = _distributed(bool(config.distributed.deepspeed))
        parallel = config.distributed.sequence_parallel
        if parallel > 1 and self.world == 1:
            raise ConfigError(f"distributed.sequence_parallel={parallel} needs {parallel} or more processes\n"
                              f"hint: NPROC_PER_NODE={parallel} sftpack train RECIPE")
        self.sequence_parallel = SequenceParallel(parallel, self.rank, self.world) if parallel > 1 else None
        activate(self.sequence_parallel)
        # Ranks that read other batches, and which of them this is; a sequence-parallel group
        # shares its batches.
        self.replicas = parallel
        self.data_rank, self.data_world = self.rank // parallel, self.world // parallel
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        np.random.seed(config.seed)
        self.dataset: PackDataset | PackMixture = (PackMixture(config.data.packs, seed=config.data.seed)
                                                   if config.data.packs else PackDataset(config.data.pack))
        check_tokenizer_matches(Path(config.model.path), self.dataset.manifest)
        self.attention = "ulysses" if self.sequence_parallel else choose_attention(config.model.attention)
        self.kernels = choose_kernels(config.model.kernels, say_why=self.rank == 0)
        _same_on_every_rank({"model.attention": self.attention, "model.kernels": self.kernels})
        # 16-bit compute under autocast (the plain backend) or DeepSpeed's own casting
        self.compute_dtype = DTYPES[config.model.dtype]
        self.ds_config = zero.load_ds_config(config, self.world) if config.distributed.deepspeed else None
        if config.method.name == "full" and self.compute_dtype != torch.float32 and not self.ds_config \
                and self.rank == 0:
            print(f"note: full fine-tuning in {config.model.dtype} without DeepSpeed keeps weights and AdamW state in "
                  f"{config.model.dtype} (no fp32 master copy); distributed.deepspeed=zero1 keeps one", flush=True)
        keep_alive = zero.partition_while_loading(self.ds_config) if self.ds_config else None
        zero3 = bool(self.ds_config and zero.is_zero3(self.ds_config))
        self.model = load_model(config, self.attention, None if zero3 else self.device)
        del keep_alive
        if self.sequence_parallel:
            self.sequence_parallel.check_model(self.model.config)
        apply_kernels(self.model, self.kernels)
        self.model.train()
        packs = len(self.dataset.names) if isinstance(self.dataset, PackMixture) else 0
        self.token_loss = TokenLoss(self.model, config.model.loss_chunk_tokens, packs, self.kernels)
        collate = self._collate()
        self.loader = PackLoader(self.dataset, batch_size=config.data.batch_size, max_tokens=config.data.max_tokens,
                                 collate=collate, seed=config.data.seed, rank=self.data_rank,
                                 world_size=self.data_world)
        eval_set = self._eval_pack()
        self.evaluator = Evaluator(eval_set, collate, config.data.batch_size, config.data.max_tokens, self.data_rank,
                                   self.data_world, self.replicas) if eval_set else None
        self.tracker = EvalTracker(config.output.early_stopping_patience)
        self.reporter: Reporter | None = None
        self.chat: Any = None
        steps_per_epoch = len(self.loader) // config.optim.grad_accum
        if steps_per_epoch == 0:
            raise ConfigError(f"the pack gives {len(self.loader)} batches per rank, fewer than optim.grad_accum="
                              f"{config.optim.grad_accum}\nhint: lower data.batch_size or optim.grad_accum")
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = config.optim.max_steps or steps_per_epoch * config.optim.epochs
        self.backend = make_backend(self.ds_config, config=config, model=self.model, token_loss=self.token_loss,
                                    world=self.world, rank=self.rank, device=self.device,
                                    compute_dtype=self.compute_dtype, lr_lambda=self._lr_factor,
                                    load_weights=self._load_weights)
        self.out.mkdir(parents=True, exist_ok=True)
        self.checkpoints = Checkpoints(self.out, self.backend, self._record, Path(config.model.path), self.rank,
                                       self.world)
        self._resume_if_possible()

    def _eval_pack(self) -> PackDataset | None:
        """data.eval_pack, else the training pack's validation split; None when there is none or
        output.eval_every is 0. Refuses a pack made with another tokenizer or template."""
        data, output = self.config.data, self.config.output
        if output.eval_every == 0:
            return None
        path: Path | None = Path(data.eval_pack) if data.eval_pack else None
        validation = self.dataset.manifest.get("validation")
        if path is None and validation:
            first = self.dataset.packs[0].dataset.path if isinstance(self.dataset, PackMixture) else Path(data.pack)
            path = first / validation["path"]
        if path is None:
            if output.early_stopping_patience or output.save_best:
                raise ConfigError("output.early_stopping_patience and output.save_best need an evaluation pack\n"
                                  "hint: preprocess with --val-size 0.05 (or N documents), or set data.eval_pack")
            return None
        eval_set = PackDataset(path)
        for part in ("tokenizer", "template"):
            if eval_set.manifest[part]["sha256"] != self.dataset.manifest[part]["sha256"]:
                raise ConfigError(f"the evaluation pack {path} was made with another {part} than the training pack\n"
                                  f"hint: preprocess both with the same --tokenizer and --template")
        if len(eval_set) == 0:
            raise ConfigError(f"the evaluation pack {path} holds no rows")
        return eval_set

    def _collate(self) -> Any:
        if self.attention in PADDING_FREE:
            return lambda rows: collate_padding_free(rows, "pt")
        pad = 0
        if self.attention == "eager":
            def eager(rows: list[dict[str, np.ndarray]]) -> dict[str, Any]:
                batch = collate_padded(rows, pad, document_mask=True, return_tensors="pt")
                mask = batch["attention_mask"]
                batch["attention_mask"] = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
                return batch
            return eager
        return lambda rows: collate_padded(rows, pad, document_mask=True, return_tensors="pt")

    def _lr_factor(self, step: int) -> float:
        optim = self.config.optim
        if step < optim.warmup_steps:
            return (step + 1) / (optim.warmup_steps + 1)
        if optim.scheduler == "constant":
            return 1.0
        progress = (step - optim.warmup_steps) / max(1, self.total_steps - optim.warmup_steps)
        if optim.scheduler == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    # -- training ------------------------------------------------------------------------------
    def _micro_batches(self) -> Any:
        while True:
            yield from self.loader
            self.loader.set_epoch(self.loader.epoch + 1)

    def _forward_sum_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The summed token loss of a batch (of this rank's share of it, under sequence
        parallelism)."""
        if self.sequence_parallel:
            batch = self.sequence_parallel.shard(batch)
        inputs = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return self.backend.forward(inputs)

    def train(self) -> None:
        batches = self._micro_batches()
        if self.rank == 0:
            self.reporter = Reporter(self.out, self.total_steps, resolve_reporters(self.config.output.report_to),
                                     self.config.to_dict(), first_step=self.step)
        flops = FlopCounter(self.model)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)  # training's peak, not loading's
        started, self.tokens_seen, self.flops_done = time.monotonic(), 0, 0.0
        first_step = self.step
        output = self.config.output
        evaluated_at = -1
        while self.step < self.total_steps:
            micro = [next(batches) for _ in range(self.config.optim.grad_accum)]
            trained = global_trained_tokens(micro) // self.replicas  # a group's ranks share each batch
            loss_sum = 0.0
            by_pack: list[tuple[torch.Tensor, torch.Tensor]] = []
            for batch in micro:
                loss = self._forward_sum_loss(batch)
                self.backend.backward(loss * self.world / max(trained, 1))
                loss_sum += float(loss.detach())
                if self.token_loss.by_pack is not None:
                    by_pack.append(self.token_loss.by_pack)
                    self.token_loss.by_pack = None
                lengths = document_lengths(batch)  # real documents: padding is not counted
                self.tokens_seen += int(lengths.sum())
                self.flops_done += flops.step(lengths)
            self.backend.step()
            self.step += 1
            loss_value = self._global_mean(loss_sum, trained)
            pack_losses = self._loss_by_pack(by_pack)
            if self.reporter and (self.step % output.log_every == 0 or self.step == self.total_steps):
                self._log(self.reporter, loss_value, trained, started, self.step - first_step, pack_losses)
            if output.sample_every and self.step % output.sample_every == 0:
                self._sample()
            if self.evaluator and output.eval_every and self.step % output.eval_every == 0:
                evaluated_at = self.step
                if self._evaluate():
                    break
            if output.save_every and self.step % output.save_every == 0:
                self.save_checkpoint()
        if self.evaluator and evaluated_at != self.step:
            self._evaluate()
        if self.reporter:
            self.reporter.close()

    def _evaluate(self) -> bool:
        """Evaluates, keeps the best checkpoint if asked; True when early stopping says stop."""
        assert self.evaluator is not None
        self.model.eval()
        result = self.evaluator.run(self._forward_sum_loss)
        self.model.train()
        improved = self.tracker.update(result.loss, self.step)
        if self.reporter:
            self.reporter.log_eval(self.step, result, self.tracker.best, self.tracker.best_step)
        if improved and self.config.output.save_best:
            self.save_best(result.loss)
        stop = self.tracker.should_stop
        if stop and self.rank == 0:
            print(f"early stopping at step {self.step}: the eval loss has not improved for "
                  f"{self.tracker.evals_without_improvement} evaluations (best {self.tracker.best:.4f} at step "
                  f"{self.tracker.best_step})", flush=True)
        return stop

    def _global_mean(self, local_sum: float, trained: int) -> float:
        total = torch.tensor([local_sum], dtype=torch.float64)
        if self.world > 1:
            torch.distributed.all_reduce(total)
        return float(total.item()) / max(trained, 1)

    def _loss_by_pack(self, by_pack: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """A mixture's step loss per pack (all ranks), as ``loss/<name>``; packs with no trained
        token in the step are left out."""
        if not isinstance(self.dataset, PackMixture):
            return {}
        packs = len(self.dataset.names)
        sums = torch.zeros(packs, dtype=torch.float64)
        counts = torch.zeros(packs, dtype=torch.float64)
        for pack_sums, pack_counts in by_pack:
            sums += pack_sums.cpu().double()
            counts += pack_counts.cpu().double()
        if self.world > 1:
            both = torch.cat([sums, counts]).to(self.device)
            torch.distributed.all_reduce(both)
            sums, counts = both[:packs].cpu(), both[packs:].cpu()
        return {f"loss/{name}": round(float(sums[i] / counts[i]), 6)
                for i, name in enumerate(self.dataset.names) if counts[i] > 0}

    def _log(self, reporter: Reporter, loss: float, trained: int, started: float, steps_done: int,
             pack_losses: dict[str, float] | None = None) -> None:
        elapsed = time.monotonic() - started
        record: dict[str, Any] = {
            "step": self.step, "loss": round(loss, 6), **(pack_losses or {}),
            "lr": self.backend.learning_rate(), "trained_tokens": trained,
            "epoch": self.loader.epoch, "elapsed_s": round(elapsed, 2),
            "tokens": self.tokens_seen * self.data_world,
            "tokens_per_s": round(self.tokens_seen * self.data_world / max(elapsed, 1e-9), 1)}
        if self.device.type == "cuda":
            record["max_memory_gb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2)
        peak = peak_flops(self.device)
        if peak:
            record["mfu"] = round(self.flops_done / max(elapsed, 1e-9) / peak, 4)
        eta = elapsed / steps_done * (self.total_steps - self.step) if steps_done else 0.0
        reporter.log(record, eta)

    def _sample(self) -> None:
        """Greedy replies to output.sample_prompts with the pack's template and stop tokens. Under
        ZeRO-3 on several ranks every rank takes part (each holds a shard of the weights);
        otherwise rank 0 generates alone."""
        prompts = self.config.output.sample_prompts
        autocast, all_ranks = self.backend.generation()
        if not prompts or (self.rank != 0 and not all_ranks):
            return
        from .generate import ChatFormat, generate_reply  # noqa: PLC0415

        if self.chat is None:
            self.chat = ChatFormat.for_pack(self.dataset.manifest, Path(self.config.model.path),
                                            self.config.model.trust_remote_code)
        for prompt in prompts:
            started = time.monotonic()
            reply = generate_reply(self.model, self.chat, [{"role": "user", "content": prompt}],
                                   self.config.output.sample_max_new_tokens, autocast_dtype=autocast,
                                   synced_gpus=all_ranks)
            if self.reporter:
                self.reporter.log_sample(self.step, prompt, reply, time.monotonic() - started)

    # -- checkpoints (train/checkpoint.py) ------------------------------------------------------
    def save_checkpoint(self, final: bool = False) -> Path:
        """``model/`` (final) or ``checkpoint-N/``: a Hugging Face folder, except that under
        DeepSpeed a checkpoint-N is DeepSpeed's sharded format (``sftpack convert`` turns it into
        one). Either way the training record, the tokenizer and the exact-resume state go with it."""
        state = None if final else {"step": self.step, "loader": self.loader.state_dict(),
                                    "eval": self.tracker.state_dict(), "torch_rng": torch.get_rng_state()}
        return self.checkpoints.save(self.step, state)

    def save_best(self, eval_loss: float) -> Path:
        """``best/``: the model (or adapter) with the best eval loss so far."""
        return self.checkpoints.save_best(self.step, eval_loss)

    def _record(self, step: int, layout: str, eval_loss: float | None) -> TrainingRecord:
        """The training record (sftpack/record.py) of this run at ``step``."""
        manifest = self.dataset.manifest
        return TrainingRecord(step=step, pack_key=manifest["key"], template=manifest["template"],
                              config=self.config.to_dict(), method=self.config.method.name,
                              base_model=str(Path(self.config.model.path).resolve()), format=layout,
                              template_kwargs=pack_template_kwargs(manifest), pack_keys=self._pack_keys(),
                              data_world=self.data_world, eval_loss=eval_loss)

    def _pack_keys(self) -> list[str]:
        datasets = ([m.dataset for m in self.dataset.packs] if isinstance(self.dataset, PackMixture)
                    else [self.dataset])
        return [str(d.manifest["key"]) for d in datasets]

    def _resume_if_possible(self) -> None:
        latest = self.checkpoints.latest()
        if latest is None:
            return
        current = {"config": self.config.to_dict(), "pack_keys": self._pack_keys(), "data_world": self.data_world}
        state = self.checkpoints.restore(latest, current, self.config.output.allow_resume_changes)
        self.loader.load_state_dict(state["loader"])
        if state.get("eval"):
            self.tracker.load_state_dict(state["eval"])
        torch.set_rng_state(state["torch_rng"])
        self.step = state["step"]

    def _load_weights(self, checkpoint: Path) -> None:
        if self.config.method.name == "full":
            from transformers import AutoModelForCausalLM  # noqa: PLC0415

            loaded = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=self.model.dtype)
            self.model.load_state_dict(loaded.state_dict())
        else:
            from peft import set_peft_model_state_dict  # noqa: PLC0415
            from safetensors.torch import load_file  # noqa: PLC0415

            set_peft_model_state_dict(self.model, load_file(str(checkpoint / "adapter_model.safetensors")))

    def cleanup(self) -> None:
        activate(None)
        # a one-process DeepSpeed group stays: DeepSpeed caches it for the next run in this process
        if getattr(self, "world", 1) > 1 and torch.distributed.is_initialized():
            # DistributedDataParallel, DeepSpeed's engine and sequence parallelism hold groups: let
            # go of them, so that ending the groups joins their threads now (process_groups.py)
            for holder in ("backend", "checkpoints", "sequence_parallel"):
                self.__dict__.pop(holder, None)
            process_groups.end()


def train(config: TrainConfig | str | Path, overrides: list[str] | None = None) -> Path:
    """Runs a recipe end to end; returns the final model directory."""
    if not isinstance(config, TrainConfig):
        config = load_config(config, overrides)
    recipe = SFTRecipe(config)
    environment = dict(os.environ)
    try:
        recipe.setup()
        recipe.train()
        return recipe.save_checkpoint(final=True)
    finally:
        recipe.cleanup()
        # DeepSpeed exports RANK, MASTER_PORT, ... for itself; processes started later from this
        # one (a notebook's next run, a test's subprocess) must not think they joined that group
        os.environ.clear()
        os.environ.update(environment)
