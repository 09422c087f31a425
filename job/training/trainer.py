"""The job's Seq2SeqTrainer: each training step's random rows run as length-sorted micro-batches, and
evaluation encodes each batch once.

Three methods differ from transformers' ``Seq2SeqTrainer``. :meth:`JobTrainer.training_step`: the Trainer still draws
``batch_size`` random rows per micro-step and ``gradient_accumulation`` micro-steps per optimizer step, counts
the step's target tokens (``num_items_in_batch``, over all processes), clips the whole step's gradient and steps
the optimizer and the schedule once: steps per epoch, the schedule, resume positions and DDP shares are the
plain setup's. Inside one micro-step the rows are cut into length-sorted groups
(:mod:`job.training.microbatches`); every group but the last runs under DDP's ``no_sync``, so processes
exchange gradients once per step, as before, however many groups each cut. (Under DeepSpeed, whose ZeRO
reduces gradients in every backward pass, :func:`job.training.build.group_cost` turns the split off.)

:meth:`JobTrainer.prediction_step`: ``Seq2SeqTrainer`` runs the encoder twice per evaluation batch, once in
``generate`` and once more for the loss; here the encoder's output is computed once and given to both, which
halves the encoder's share of evaluation (most of it when inputs are long and outputs short), in cache-sized
chunks on CPU (:func:`job.training.eval_batching.encoder_chunks`); the model's
generation config is left as it was (:mod:`job.generation`), and evaluation rows keep their order.

And from :class:`job.training.eval_loss.TokenMeanEvalLoss`: ``eval_loss`` / ``test_loss`` are the token mean
over the whole split, not a mean of per-batch means that moves with the evaluation batch size.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch.utils.data import Sampler, SequentialSampler
from transformers import Seq2SeqTrainer
from transformers.modeling_outputs import BaseModelOutput

from job import generation
from job.training.eval_batching import encoder_chunks
from job.training.eval_loss import TokenMeanEvalLoss
from job.training.microbatches import GroupCost, PaddingCount, split_batch


class JobTrainer(TokenMeanEvalLoss, Seq2SeqTrainer):
    """``Seq2SeqTrainer`` plus length-sorted micro-batches inside each training step (``group_cost=None``: off);
    evaluation rows in their order, and the model's generation config left as it was."""

    def __init__(
        self, *args: Any, group_cost: GroupCost | None = None, pad_to_multiple_of: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.group_cost = group_cost
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padding = PaddingCount()  # what the model was fed: train_padding_share in metrics.json

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        # Without the step's token count each group's loss would be its own mean, and the sum would be wrong.
        if self.group_cost is None or num_items_in_batch is None:
            parts = [inputs]
        else:
            parts = split_batch(inputs, self.group_cost, pad_to_multiple_of=self.pad_to_multiple_of)
        for part in parts:
            self.padding.add(part)
        if len(parts) == 1:
            return super().training_step(model, inputs, num_items_in_batch)
        state = self.accelerator.gradient_state
        sync = state.sync_gradients  # the Trainer's decision for this micro-step (True at the step's end)
        losses: list[torch.Tensor] = []
        try:
            for index, part in enumerate(parts):
                last = index == len(parts) - 1
                state._set_sync_gradients(sync and last)  # what accelerate reads as "the step's last backward"
                quiet = contextlib.nullcontext() if last else self.accelerator.no_sync(model)
                with quiet:
                    losses.append(super().training_step(model, part, num_items_in_batch))
        finally:
            state._set_sync_gradients(sync)
        return torch.stack(losses).sum()  # each is a share of the step's token mean: they add up to the batch's

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
        **gen_kwargs: Any,
    ) -> tuple[Any, Any, Any]:
        encoder = self._shared_encoder(model, inputs, prediction_loss_only, gen_kwargs)
        if encoder is not None:
            inputs = self._prepare_inputs(inputs)
            inputs = {**inputs, "encoder_outputs": self._encode(encoder, inputs)}  # generate and the loss skip it
        with generation.kept_generation_config(self.model):  # see job.generation
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)

    def _encode(self, encoder: torch.nn.Module, inputs: dict[str, Any]) -> BaseModelOutput:
        """The encoder's output for the batch; on CPU in chunks of rows, each at its own width (eval_batching).

        A chunk's columns outside its rows' attention mask are left zero: cross-attention masks them out.
        """
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        chunks = encoder_chunks(ids.device.type, mask.sum(dim=1).tolist())
        with torch.no_grad(), self.accelerator.autocast():
            if len(chunks) == 1:
                return encoder(input_ids=ids, attention_mask=mask, return_dict=True)
            hidden: torch.Tensor | None = None
            for start, end in chunks:
                used = mask[start:end].any(dim=0).nonzero().flatten()
                lo, hi = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 1)
                out = encoder(
                    input_ids=ids[start:end, lo:hi], attention_mask=mask[start:end, lo:hi], return_dict=True
                ).last_hidden_state
                if hidden is None:
                    hidden = out.new_zeros(ids.shape[0], ids.shape[1], out.shape[-1])
                hidden[start:end, lo:hi] = out
        return BaseModelOutput(last_hidden_state=hidden)

    def _shared_encoder(self, model: torch.nn.Module, inputs: dict[str, Any], loss_only: bool, gen: dict) -> Any:
        """The encoder to run once per evaluation batch, or None to leave prediction_step as it is.

        Only for greedy search (one sequence per row): beam search expands the encoder output in place to
        rows × beams, which the loss forward could not use afterwards.
        """
        if loss_only or not self.args.predict_with_generate or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return None  # ZeRO-3 / FSDP gather parameters around the whole model's forward: left alone
        if "input_ids" not in inputs or "attention_mask" not in inputs or "encoder_outputs" in inputs:
            return None
        unwrapped = self.accelerator.unwrap_model(model)
        if not getattr(unwrapped.config, "is_encoder_decoder", False) or not hasattr(unwrapped, "get_encoder"):
            return None
        config = unwrapped.generation_config
        settings = gen or getattr(self, "_gen_kwargs", {})
        beams = settings.get("num_beams") or config.num_beams or 1
        if beams != 1 or (settings.get("num_return_sequences") or config.num_return_sequences or 1) != 1:
            return None
        return unwrapped.get_encoder()

    def _get_eval_sampler(self, eval_dataset: Any) -> Sampler | None:
        """The dataset's order (distributed: the Trainer's sharding, gathered back in order).

        Under train_sampling_strategy=group_by_length transformers 5 also batches evaluation rows in random
        length groups; the job's validation rows are sorted by length already, and predictions must come back in
        the rows' order to be scored against their references (job.metrics) and written next to their inputs.
        """
        if eval_dataset is None or not hasattr(eval_dataset, "__len__"):
            return None
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
