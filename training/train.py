"""CNN training on the CPU: class balancing by augmentation, balanced real/fake loss, best epoch.

Each epoch draws every training cutout ``factor`` times, where the factor is 1 for the largest
visual class and up to 8 for the smallest (as in 2020), and augments every draw. The binary loss
weighs real and fake equally. The kept weights are those of the epoch with the lowest balanced
validation loss.
"""

import copy
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from service.preprocess import Normalization, prepare
from training.augment import Augmentation
from training.cnn import LineCNN
from training.dataset import LabelledCutouts

log = logging.getLogger(__name__)


PROTOCOL_CLASSES: dict[str, tuple[int, ...] | None] = {
    "all": None,  # every labelled class
    "2020": (0, 1, 4, 5),  # the 2020 CNN: likely/confidently real against (likely) spurious
}
"""Visual classes the CNN is shown under each training protocol (None: all of them)."""


@dataclass(frozen=True)
class TrainConfig:
    protocol: str = "all"
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    max_factor: int = 8
    embedding_dim: int = 32
    seed: int = 0
    threads: int = 2
    augmentation: Augmentation = field(default_factory=Augmentation)

    def describe(self) -> dict:
        fields = {k: v for k, v in self.__dict__.items() if k != "augmentation"}
        return {**fields, "augmentation": self.augmentation.describe()}


def balancing_factors(vis_class: np.ndarray, max_factor: int) -> dict[int, int]:
    """Copies per epoch for each class: 1 for the largest, up to ``max_factor`` for the smallest."""
    classes, counts = np.unique(vis_class, return_counts=True)
    factors = np.clip(np.rint(counts.max() / counts), 1, max_factor).astype(int)
    return {int(c): int(f) for c, f in zip(classes, factors, strict=True)}


def epoch_indices(vis_class: np.ndarray, factors: dict[int, int], rng: np.random.Generator):
    chosen = [np.repeat(np.flatnonzero(vis_class == c), f) for c, f in factors.items()]
    return rng.permutation(np.concatenate(chosen))


def balanced_weights(truth: np.ndarray) -> np.ndarray:
    """Per-sample weights that give real and fake the same total weight."""
    real = truth.mean()
    return np.where(truth, 0.5 / max(real, 1e-9), 0.5 / max(1 - real, 1e-9)).astype(np.float32)


def predict(cnn: LineCNN, model_input: np.ndarray, batch_size: int = 2048):
    """Scores in [0, 1] and embeddings, in eval mode."""
    cnn.eval()
    scores, embeddings = [], []
    with torch.no_grad():
        for start in range(0, len(model_input), batch_size):
            logit, embedding = cnn(torch.from_numpy(model_input[start : start + batch_size]))
            scores.append(torch.sigmoid(logit).numpy())
            embeddings.append(embedding.numpy())
    return np.concatenate(scores), np.concatenate(embeddings)


def fit_cnn(
    train: LabelledCutouts,
    val: LabelledCutouts,
    normalization: Normalization,
    config: TrainConfig,
) -> tuple[LineCNN, list[dict]]:
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    cnn = LineCNN(embedding_dim=config.embedding_dim)
    factors = balancing_factors(train.vis_class, config.max_factor)
    per_epoch = sum(int(np.sum(train.vis_class == c)) * f for c, f in factors.items())
    steps = config.epochs * -(-per_epoch // config.batch_size)
    optimizer = torch.optim.AdamW(
        cnn.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=steps
    )
    truth = train.is_real
    val_input = prepare(val.im_sum, normalization)
    val_truth = val.is_real
    val_weight = torch.from_numpy(balanced_weights(val_truth))
    log.info("balancing factors %s: %d draws per epoch", factors, per_epoch)
    best, history = None, []
    for epoch in range(config.epochs):
        order = epoch_indices(train.vis_class, factors, rng)
        weights = balanced_weights(truth[order])
        model_input = prepare(config.augmentation(train.im_sum[order], rng), normalization)
        cnn.train()
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = slice(start, start + config.batch_size)
            logit, _ = cnn(torch.from_numpy(model_input[batch]))
            loss = nn.functional.binary_cross_entropy_with_logits(
                logit,
                torch.from_numpy(truth[order][batch].astype(np.float32)),
                weight=torch.from_numpy(weights[batch]),
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(logit)
        score, _ = predict(cnn, val_input)
        val_loss = float(
            nn.functional.binary_cross_entropy(
                torch.from_numpy(score).clamp(1e-6, 1 - 1e-6),
                torch.from_numpy(val_truth.astype(np.float32)),
                weight=val_weight,
            )
        )
        row = {
            "epoch": epoch + 1,
            "train_loss": total / len(order),
            "val_loss": val_loss,
            "val_accuracy": float(np.mean((score >= 0.5) == val_truth)),
        }
        history.append(row)
        log.info(
            "epoch %(epoch)d train_loss %(train_loss).4f val_loss %(val_loss).4f "
            "val_accuracy %(val_accuracy).4f",
            row,
        )
        if best is None or val_loss < best[0]:
            best = (val_loss, copy.deepcopy(cnn.state_dict()))
    cnn.load_state_dict(best[1])
    cnn.eval()
    return cnn, history
