"""``adapt``: a new model from a packaged one, a night's cutouts and the labels people gave it.

No simulator is the sky, so a model trained on simulators loses on a real night what no amount of
simulation gives back; the night's own labels do. From the parent model directory:

1. The parent's CNN is recovered from its verified ``cnn.onnx`` (every packaged model has one;
   batch norm is folded into the convolutions there, so it comes back as fixed per-channel
   scales) and fine-tuned on the labelled night cutouts, each epoch mixed with *replay*: fresh
   cutouts of the simulators the parent was trained on, so that what the night lacks is not
   forgotten. Real and fake weigh the same within each of the two sources.
2. The unlabelled night moves the per-channel statistics (AdaBN): after each convolution the
   night's mean and spread are mapped onto the replay's, layer by layer.
3. Stage 2 is refit the 2020 way: UMAP on the new embedding of a map sample (replay and labelled
   night), the SVM on band detections (the night's labelled ones and simulated ones), C and gamma
   by cross-validation. It is used only where, out of fold on the night's labelled band, it beats
   both the CNN's own call and the best constant; otherwise both thresholds sit at the CNN's, so
   the CNN decides everything, and the manifest says why with the numbers.
4. Novelty's reference becomes the map sample and its calibration replay and night cutouts the
   reference does not hold.

``adapt`` refuses to write a model that does not beat its parent on labels it did not train on:
k-fold over the labels, each fold's fine-tuned CNN scoring the labels held out of it.
"""

import copy
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib.metadata import version as installed_version
from pathlib import Path

import joblib
import numpy as np
import onnx
import torch
from onnx import numpy_helper
from sklearn.model_selection import StratifiedKFold
from torch import nn

from service.bundle import ModelBundle
from service.domain import VISUAL_CLASSES
from service.errors import ArtifactError
from service.manifest import sha256_of
from service.novelty import Novelty
from service.pipeline import Scorer
from service.preprocess import Normalization, prepare
from service.umap_fast import NeighbourTransform
from training import metrics
from training.augment import Augmentation
from training.build import SimulatedSpec
from training.cnn import LineCNN
from training.dataset import LABEL_TABLE, DatasetError, Images, LabelledCutouts, read_labels
from training.ensemble import MIN_AMBIGUOUS, UmapConfig, capped, fit_umap, make_svm
from training.evaluate import score_all
from training.export import export_onnx, max_disagreement
from training.fit import (
    CNN_FILE,
    LIBRARIES,
    MAP_FILE,
    NOVELTY_FILE,
    SVM_FILE,
    UMAP_FILE,
    write_manifest,
)
from training.train import balanced_weights, predict

log = logging.getLogger(__name__)


class AdaptRefusedError(ValueError):
    """The adapted model would not beat its parent: nothing is written."""


@dataclass(frozen=True)
class AdaptConfig:
    epochs: int = 5
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    replay: int = 8_000  # simulated cutouts of the parent's training simulators, per epoch
    label_share: float = 0.5  # share of each epoch's draws that are night labels
    pseudo_share: float = 0.0  # share that are confidently scored unlabelled night cutouts
    adabn: bool = False  # measured: gains little on the night, forgets much (REPORT)
    folds: int = 3
    map_sample: int = 3000  # replay cutouts in the UMAP map (the labelled night joins them)
    calibration: int = 6000  # replay cutouts for the SVM's simulated band and novelty
    seed: int = 0
    threads: int = 2


DEFAULT_CONFIG = AdaptConfig()
MIN_LABELS, MIN_PER_SIDE = 30, 10
PSEUDO_CONFIDENCE = 0.95  # self-training keeps night cutouts scored this sure, either way
PRIOR_LABELS = 3.0  # pseudo-labels at a bin's centre score: where labels are few
SVM_C, SVM_GAMMA = (0.3, 1.0, 3.0), (0.1, 0.5, 2.0)


# --- the parent's CNN -------------------------------------------------------------------------


def cnn_from_onnx(onnx_bytes: bytes, embedding_dim: int) -> LineCNN:
    """The exported CNN as a trainable :class:`LineCNN`. The export folds each batch norm into
    the convolution before it, so batch norm comes back as the identity (in eval mode)."""
    graph = onnx.load_from_string(onnx_bytes).graph
    weights = {
        init.name.removeprefix("cnn."): torch.from_numpy(numpy_helper.to_array(init).copy())
        for init in graph.initializer
        if init.name.startswith("cnn.")
    }
    cnn = LineCNN(embedding_dim=embedding_dim)
    state = cnn.state_dict()
    for name, value in state.items():
        if name in weights:
            state[name] = weights.pop(name)
        elif name.endswith("running_var"):
            bn = name.removesuffix(".running_var")
            eps = dict(cnn.named_modules())[bn].eps
            state[name] = torch.full_like(value, 1.0 - eps)  # (x - 0) / sqrt(1 - eps + eps) = x
        elif name.endswith(("running_mean", "bias")):
            state[name] = torch.zeros_like(value)
        elif name.endswith("weight"):
            state[name] = torch.ones_like(value)
    if weights:
        raise ArtifactError(f"cnn.onnx has weights LineCNN does not: {sorted(weights)}")
    cnn.load_state_dict(state)
    return cnn.eval()


def freeze_batch_norm(cnn: LineCNN) -> None:
    """Train mode everywhere but batch norm, which keeps its (recovered) statistics."""
    cnn.train()
    for module in cnn.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()


def match_statistics(cnn: LineCNN, source: np.ndarray, target: np.ndarray) -> LineCNN:
    """AdaBN: per channel, after each convolution, map the target's mean and spread onto what
    the source gives there in the unchanged network, layer by layer (each layer's target
    statistics are measured with the layers before it already matched)."""
    matched = copy.deepcopy(cnn).eval()
    pairs = [
        (original, new)
        for original, new in zip(cnn.features, matched.features, strict=True)
        if isinstance(new, nn.BatchNorm2d)
    ]
    for original, norm in pairs:
        mean_s, var_s = batch_norm_input_statistics(cnn, original, source)
        mean_t, var_t = batch_norm_input_statistics(matched, norm, target)
        # the norm is affine in eval mode: y = x * scale + shift; compose it with x -> gain x + c
        scale_now = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        shift_now = norm.bias - norm.running_mean * scale_now
        gain = torch.sqrt(var_s / var_t)
        offset = mean_s - gain * mean_t
        with torch.no_grad():
            norm.weight.copy_(scale_now * gain)
            norm.bias.copy_(scale_now * offset + shift_now)
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)
    return matched


def batch_norm_input_statistics(
    cnn: LineCNN, norm: nn.BatchNorm2d, model_input: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and variance (plus eps) of what ``norm`` receives on ``model_input``."""
    seen: list[torch.Tensor] = []
    hook = norm.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            cnn(torch.from_numpy(model_input))
    finally:
        hook.remove()
    x = seen[0]
    return x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3)) + norm.eps


@dataclass(frozen=True)
class Source:
    """Cutouts to train on, with their truth, and their share of every epoch's draws."""

    im_sum: np.ndarray
    truth: np.ndarray
    share: float


def fine_tune(
    parent: LineCNN,
    sources: list[Source],
    normalization: Normalization,
    config: AdaptConfig,
    seed: int,
) -> LineCNN:
    """The parent's weights trained further on augmented draws of the sources: each epoch
    ``2 * config.replay`` draws, each source its share of them (with replacement), real and
    fake weighing the same within each source."""
    torch.manual_seed(seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(seed)
    augment = Augmentation()
    cnn = copy.deepcopy(parent)
    per_epoch = 2 * config.replay
    draws = [max(1, round(source.share * per_epoch)) for source in sources]
    # OneCycleLR needs a few steps per phase; a tiny run simply stops early in its schedule
    steps = max(config.epochs * -(-sum(draws) // config.batch_size), 20)
    optimizer = torch.optim.AdamW(
        cnn.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=steps, pct_start=0.2
    )
    for _ in range(config.epochs):
        picks = [rng.integers(0, len(s.truth), n) for s, n in zip(sources, draws, strict=True)]
        im_sum = np.concatenate([s.im_sum[p] for s, p in zip(sources, picks, strict=True)])
        truth = np.concatenate([s.truth[p] for s, p in zip(sources, picks, strict=True)])
        weight = np.concatenate(
            [balanced_weights(s.truth)[p] for s, p in zip(sources, picks, strict=True)]
        )
        order = rng.permutation(len(truth))
        model_input = prepare(augment(im_sum[order], rng), normalization)
        target = torch.from_numpy(truth[order].astype(np.float32))
        draw_weight = torch.from_numpy(weight[order].astype(np.float32))
        freeze_batch_norm(cnn)
        for start in range(0, len(order), config.batch_size):
            batch = slice(start, start + config.batch_size)
            logit, _ = cnn(torch.from_numpy(model_input[batch]))
            loss = nn.functional.binary_cross_entropy_with_logits(
                logit, target[batch], weight=draw_weight[batch]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return cnn.eval()


# --- inputs ------------------------------------------------------------------------------------


@dataclass
class NightLabels:
    """The labels of one night, joined to its cutouts (several files merged)."""

    labelled: LabelledCutouts
    files: list[dict]  # per labels file: path, sha256, count


def night_labels(night: Images, paths: list[Path]) -> NightLabels:
    """Every labels file checked against the night; later files do not silently override."""
    parts, files = [], []
    for path in paths:
        labels = read_labels(path)
        stamped = labels.attrs.get("night_fingerprint", "")
        if stamped and stamped != night.fingerprint:
            raise DatasetError(
                f"{path}: night_fingerprint says these labels were exported for another night "
                f"({labels.attrs.get('night_file', '?')}), not {night.path.name}"
            )
        rows = night.rows_of(labels.detectid, f"{path}: {LABEL_TABLE}")
        parts.append(
            LabelledCutouts(
                str(path),
                labels.detectid,
                night.im_sum[rows],
                labels.vis_class,
                labels.sn,
                labels.family,
            )
        )
        files.append({"path": str(path), "sha256": sha256_of(path), "labels": len(labels.detectid)})
    try:
        labelled = LabelledCutouts.concatenate(parts)
    except DatasetError:
        raise DatasetError(
            f"{', '.join(map(str, paths))}: {LABEL_TABLE}/detectid: a detection is labelled in "
            "more than one file (merge them with one consensus first)"
        ) from None
    real = int(labelled.is_real.sum())
    if len(labelled) < MIN_LABELS or min(real, len(labelled) - real) < MIN_PER_SIDE:
        raise DatasetError(
            f"{', '.join(map(str, paths))}: {LABEL_TABLE}/vis_class: too few labels to fit: "
            f"{len(labelled)} ({real} real, {len(labelled) - real} fake); adapt needs at least "
            f"{MIN_LABELS}, with at least {MIN_PER_SIDE} real and {MIN_PER_SIDE} fake"
        )
    return NightLabels(labelled, files)


def replay_sets(manifest: dict, config: AdaptConfig) -> tuple[LabelledCutouts, LabelledCutouts]:
    """Fresh draws (new seeds) of the parent's training simulators: replay and calibration."""
    specs = manifest.get("training", {}).get("simulators")
    if not specs:
        raise DatasetError(
            "the parent's manifest records no training simulators to replay (a model trained "
            "from files): adapt a model built by `python -m training build`"
        )
    sets = []
    for part, size in enumerate((config.replay, config.calibration)):
        pieces = []
        for k, entry in enumerate(specs):
            spec = SimulatedSpec.from_description(entry, total=max(size // len(specs), 1))
            spec = SimulatedSpec(
                spec.total,
                spec.seed + 7000 + 100 * part + config.seed,
                900_000_000 * (part + 1) + 10_000_000 * k,
                spec.simulator,
            )
            pieces.append(
                LabelledCutouts.from_simulated(
                    spec.generate(progress=False), f"replay {spec.simulator} seed {spec.seed}"
                )
            )
        sets.append(LabelledCutouts.concatenate(pieces))
    return sets[0], sets[1]


# --- the gate: k-fold over the labels ---------------------------------------------------------


def out_of_fold_scores(
    parent: LineCNN,
    labelled: LabelledCutouts,
    replay: LabelledCutouts,
    unlabelled: np.ndarray,
    normalization: Normalization,
    config: AdaptConfig,
) -> np.ndarray:
    """Each label's CNN score from the model fine-tuned without its fold."""
    truth = labelled.is_real
    folds = StratifiedKFold(config.folds, shuffle=True, random_state=config.seed)
    scores = np.empty(len(labelled), dtype=np.float32)
    for fold, (fit_on, held) in enumerate(folds.split(labelled.im_sum, truth)):
        cnn = adapted_cnn(
            parent, labelled.subset(fit_on), replay, unlabelled, normalization, config, fold + 1
        )
        scores[held], _ = predict(cnn, prepare(labelled.im_sum[held], normalization))
        log.info("fold %d of %d: %d labels held out", fold + 1, config.folds, len(held))
    return scores


def adapted_cnn(
    parent: LineCNN,
    labelled: LabelledCutouts,
    replay: LabelledCutouts,
    unlabelled: np.ndarray,
    normalization: Normalization,
    config: AdaptConfig,
    seed_offset: int = 0,
) -> LineCNN:
    """Fine-tuned on labels and replay; with ``pseudo_share``, once more from the parent with
    the night's confidently scored cutouts as labels too (self-training)."""
    seed = config.seed + seed_offset
    replay_source = Source(replay.im_sum, replay.is_real, 1.0 - config.label_share)
    label_source = Source(labelled.im_sum, labelled.is_real, config.label_share)
    cnn = fine_tune(parent, [replay_source, label_source], normalization, config, seed)
    if config.pseudo_share > 0:
        score, _ = predict(cnn, prepare(unlabelled, normalization))
        sure = (score >= PSEUDO_CONFIDENCE) | (score <= 1 - PSEUDO_CONFIDENCE)
        pseudo = Source(unlabelled[sure], score[sure] >= 0.5, config.pseudo_share)
        if pseudo.truth.any() and not pseudo.truth.all():
            sources = [
                replace(replay_source, share=1 - config.label_share - config.pseudo_share),
                label_source,
                pseudo,
            ]
            cnn = fine_tune(parent, sources, normalization, config, seed)
    if config.adabn:
        rng = np.random.default_rng(config.seed)
        source = replay.im_sum[rng.choice(len(replay), min(4000, len(replay)), replace=False)]
        target = unlabelled[rng.choice(len(unlabelled), min(4000, len(unlabelled)), replace=False)]
        cnn = match_statistics(cnn, prepare(source, normalization), prepare(target, normalization))
    return cnn


# --- stage 2 ----------------------------------------------------------------------------------


@dataclass
class Stage2:
    used: bool
    low: float
    high: float
    svm: object
    why: str
    numbers: dict


def fit_stage2(
    coords_labelled: np.ndarray,
    oof_score: np.ndarray,
    truth: np.ndarray,
    coords_simulated: np.ndarray,
    score_simulated: np.ndarray,
    truth_simulated: np.ndarray,
    band: tuple[float, float],
    threshold: float,
    map_coords: np.ndarray,
    seed: int,
) -> Stage2:
    """The SVM on band detections (night labels, band by their out-of-fold scores, and simulated
    ones), kept only where it beats the CNN's call and the best constant on the night's band
    out of fold."""
    low, high = band
    in_band = (oof_score >= low) & (oof_score < high)
    sim_band = (score_simulated >= low) & (score_simulated < high)
    x_sim, y_sim = coords_simulated[sim_band], truth_simulated[sim_band]
    x_night, y_night = coords_labelled[in_band], truth[in_band]
    n = int(in_band.sum())
    numbers: dict = {"night_band_labels": n, "simulated_band": int(sim_band.sum())}
    off = Stage2(False, threshold, threshold, None, "", numbers)
    if n < MIN_AMBIGUOUS or y_night.all() or not y_night.any():
        off.why = (
            f"{n} labelled night detections in the band [{low}, {high}), of one class or fewer "
            f"than {MIN_AMBIGUOUS}: too few to judge the SVM on"
        )
        return off
    best = None
    for c in SVM_C:
        for gamma in SVM_GAMMA:
            decision = night_out_of_fold(x_night, y_night, x_sim, y_sim, seed, c, gamma)
            accuracy = float(np.mean((decision > 0) == y_night))
            if best is None or accuracy > best[0]:
                best = (accuracy, c, gamma)
    accuracy, c, gamma = best
    cnn_call = float(np.mean((oof_score[in_band] >= threshold) == y_night))
    real = float(y_night.mean())
    constant = max(real, 1 - real)
    margin = 2.0 * np.sqrt(max(cnn_call, constant) * (1 - max(cnn_call, constant)) / n)
    numbers.update(
        svm_accuracy=accuracy,
        cnn_call_accuracy=cnn_call,
        constant_accuracy=constant,
        margin=float(margin),
        c=c,
        gamma=gamma,
        note="SVM accuracy by 5-fold over the night's labelled band (simulated band always in "
        "training); band membership and the CNN's call from out-of-fold CNN scores",
    )
    chosen = capped(np.arange(len(y_sim)), seed)
    svm = make_svm(seed, c, gamma).fit(
        np.concatenate([x_sim[chosen], x_night]), np.concatenate([y_sim[chosen], y_night])
    )
    if accuracy <= max(cnn_call, constant) + margin:
        off.why = (
            f"out of fold on {n} labelled band detections the SVM is right on {accuracy:.3f}, "
            f"the CNN's own call on {cnn_call:.3f} and the best constant on {constant:.3f}: "
            f"the SVM must beat both by two standard errors ({margin:.3f})"
        )
        off.svm = svm
        return off
    if len(np.unique(svm.decision_function(map_coords) > 0)) < 2:
        off.why, off.svm = "the refit SVM has one sign over the whole map", svm
        return off
    return Stage2(True, low, high, svm, "beats the CNN's call and the best constant", numbers)


def night_out_of_fold(x_night, y_night, x_sim, y_sim, seed, c, gamma) -> np.ndarray:
    folds = StratifiedKFold(
        n_splits=min(5, int(min(y_night.sum(), (~y_night).sum()))), shuffle=True, random_state=seed
    )
    chosen = capped(np.arange(len(y_sim)), seed)
    decision = np.empty(len(y_night))
    for fit_on, held in folds.split(x_night, y_night):
        svm = make_svm(seed, c, gamma).fit(
            np.concatenate([x_sim[chosen], x_night[fit_on]]),
            np.concatenate([y_sim[chosen], y_night[fit_on]]),
        )
        decision[held] = svm.decision_function(x_night[held])
    return decision


# --- the command ------------------------------------------------------------------------------


def verified_parent(model_dir: Path) -> ModelBundle:
    try:
        return ModelBundle.load(model_dir)
    except (ArtifactError, ValueError, KeyError) as error:
        detail = getattr(error, "detail", str(error))
        raise DatasetError(f"{model_dir}: the parent model fails verification: {detail}") from None


def adapt(
    parent_dir: Path,
    night: Images,
    label_paths: list[Path],
    out_dir: Path,
    version: str,
    config: AdaptConfig = DEFAULT_CONFIG,
) -> dict:
    """Write the adapted model to ``out_dir`` and return its manifest; refuse (nothing written)
    when it does not beat the parent on labels it did not train on."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise DatasetError(f"{out_dir}: --out exists; adapt writes a new model directory")
    bundle = verified_parent(parent_dir)
    parent_manifest = bundle.manifest
    labels = night_labels(night, label_paths)
    labelled = labels.labelled
    normalization = bundle.normalization
    parent = cnn_from_onnx(
        (Path(parent_dir) / parent_manifest["cnn"]["file"]).read_bytes(),
        int(parent_manifest["cnn"]["embedding_dim"]),
    )
    replay, calibration = replay_sets(parent_manifest, config)
    oof = out_of_fold_scores(parent, labelled, replay, night.im_sum, normalization, config)
    cnn = adapted_cnn(parent, labelled, replay, night.im_sum, normalization, config)
    night_score, _ = predict(cnn, prepare(night.im_sum, normalization))
    choice = night_threshold(oof, labelled.is_real, night_score)
    threshold = choice["threshold"]
    truth = labelled.is_real
    adapted_summary = metrics.summary(truth, oof >= threshold)
    parent_summary = metrics.summary(truth, score_all(Scorer(bundle), labelled.im_sum).real)
    gate = {
        "folds": config.folds,
        "adapted": adapted_summary,
        "parent": parent_summary,
        "note": "out-of-fold CNN decisions at the chosen threshold (chosen with these labels "
        "and the night's score distribution) against the parent's served decisions",
    }
    log.info("gate: adapted FoM %.4f, parent %.4f", adapted_summary["fom"], parent_summary["fom"])
    if adapted_summary["fom"] <= parent_summary["fom"]:
        raise AdaptRefusedError(
            "the adapted model does not beat its parent on labels it did not train on "
            f"({config.folds}-fold over {len(labelled)} labels): FoM "
            f"{adapted_summary['fom']:.4f} against the parent's {parent_summary['fom']:.4f}; "
            "nothing written"
        )
    out_dir.mkdir(parents=True)
    try:
        manifest = package(
            out_dir, cnn, bundle, night, labels, calibration, replay, oof, threshold, config
        )
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    manifest["version"] = version
    manifest["thresholds"]["choice"] = choice
    manifest["adaptation"]["gate"] = gate
    manifest["adaptation"]["wall_time_s"] = round(time.perf_counter() - started, 1)
    write_manifest(out_dir, manifest)
    return manifest


def night_threshold(
    oof_score: np.ndarray, truth: np.ndarray, night_score: np.ndarray, bins: int = 20
) -> dict:
    """The CNN threshold with the best FoM estimated for the whole night.

    The labels are not a random sample of the night (``suggest`` favours the unsure), so their
    own FoM is not the night's. Within a bin of CNN score they are closer to one: the night's
    count per bin (every detection, unlabelled too) times the labels' real share in that bin
    (out-of-fold scores; shrunk towards the bin's centre with ``PRIOR_LABELS`` pseudo-labels
    where labels are few) gives the expected real and fake kept above each bin edge.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    centre = (edges[:-1] + edges[1:]) / 2
    count = np.bincount(np.clip(np.digitize(night_score, edges[1:-1]), 0, bins - 1), minlength=bins)
    labelled_bin = np.clip(np.digitize(oof_score, edges[1:-1]), 0, bins - 1)
    labelled = np.bincount(labelled_bin, minlength=bins)
    real = np.bincount(labelled_bin, weights=truth.astype(float), minlength=bins)
    share = (real + PRIOR_LABELS * centre) / (labelled + PRIOR_LABELS)
    expected_real = count * share
    total_real = expected_real.sum()
    best = {"threshold": 0.5, "estimated_fom": -1.0}
    for b in range(1, bins):
        kept, true_kept = count[b:].sum(), expected_real[b:].sum()
        fom = (true_kept / total_real) * (true_kept / kept) if kept and total_real else 0.0
        if fom > best["estimated_fom"]:
            best = {"threshold": float(edges[b]), "estimated_fom": float(fom)}
    return {
        **best,
        "rule": "best FoM estimated on the night: per score bin, night counts times "
        "the labels' out-of-fold real share (shrunk to the bin centre)",
    }


def package(
    out_dir: Path,
    cnn: LineCNN,
    bundle: ModelBundle,
    night: Images,
    labels: NightLabels,
    calibration: LabelledCutouts,
    replay: LabelledCutouts,
    oof: np.ndarray,
    threshold: float,
    config: AdaptConfig,
) -> dict:
    """Export the CNN and refit the stages that live in its embedding; the manifest (unwritten)."""
    parent_manifest = bundle.manifest
    labelled = labels.labelled
    normalization = bundle.normalization
    cnn_path = export_onnx(cnn, out_dir / CNN_FILE)
    rng = np.random.default_rng(config.seed)
    sample = rng.choice(len(replay), min(config.map_sample, len(replay)), replace=False)
    map_cutouts = np.concatenate([replay.im_sum[np.sort(sample)], labelled.im_sum])
    map_classes = np.concatenate([replay.vis_class[np.sort(sample)], labelled.vis_class])
    map_input = prepare(map_cutouts, normalization)
    agreement = max_disagreement(cnn, cnn_path, map_input[:1024])
    _, map_embedding = predict(cnn, map_input)
    umap_config = UmapConfig(sample=len(map_cutouts), seed=config.seed)
    reducer = fit_umap(map_embedding, umap_config)
    placer = NeighbourTransform.from_reducer(reducer)
    map_coords = reducer.embedding_

    calibration_input = prepare(calibration.im_sum, normalization)
    calibration_score, calibration_embedding = predict(cnn, calibration_input)
    labelled_coords = map_coords[len(sample) :]
    band = (
        float(parent_manifest["thresholds"]["low"]),
        float(parent_manifest["thresholds"]["high"]),
    )
    if band[0] >= band[1]:  # a parent whose stage 2 was off: the 2020 band around its threshold
        band = (0.3, 0.7)
    stage2 = fit_stage2(
        labelled_coords,
        oof,
        labelled.is_real,
        placer.transform(calibration_embedding),
        calibration_score,
        calibration.is_real,
        band,
        threshold,
        map_coords,
        config.seed,
    )
    log.info("stage 2 %s: %s", "used" if stage2.used else "off", stage2.why)
    svm = stage2.svm or make_svm(config.seed).fit(
        placer.transform(calibration_embedding)[:2000], calibration.is_real[:2000]
    )

    unlabelled = np.setdiff1d(np.arange(len(night.detectid)), night.rows_of(labelled.detectid, ""))
    night_sample = np.sort(rng.choice(unlabelled, min(len(unlabelled), 4000), replace=False))
    calibration_parts = [(calibration_input, calibration_embedding)]
    if len(night_sample):  # every detection labelled: the replay alone calibrates
        night_input = prepare(night.im_sum[night_sample], normalization)
        calibration_parts.append((night_input, predict(cnn, night_input)[1]))
    novelty = Novelty.fit(
        (map_input, map_embedding),
        tuple(np.concatenate(part) for part in zip(*calibration_parts, strict=True)),
    )

    joblib.dump(reducer, out_dir / UMAP_FILE)
    joblib.dump(svm, out_dir / SVM_FILE)
    np.savez(
        out_dir / MAP_FILE,
        features=np.asarray(reducer._raw_data, dtype=np.float32),
        coords=map_coords.astype(np.float32),
        vis_class=map_classes,
        n_neighbors=np.int64(reducer.n_neighbors),
    )
    np.savez(out_dir / NOVELTY_FILE, **novelty.to_arrays())

    counts = {str(c): int(np.sum(labelled.vis_class == c)) for c in VISUAL_CLASSES}
    manifest = {
        key: copy.deepcopy(value)
        for key, value in parent_manifest.items()
        if key not in ("heldout", "heldout_other", "build", "validation", "artifacts")
    }
    manifest.update(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        libraries={name: installed_version(name) for name in LIBRARIES},
    )
    manifest["cnn"]["onnx_vs_pytorch_max_abs_diff"] = agreement
    manifest["umap"].update(
        sample=len(map_cutouts),
        seed=config.seed,
        map_sample=f"{len(sample)} replay cutouts and the {len(labelled)} labelled night ones",
    )
    manifest["svm"] = {
        "file": SVM_FILE,
        **({"c": stage2.numbers["c"], "gamma": stage2.numbers["gamma"]} if stage2.svm else {}),
        "trained_on": "the night's labelled band detections and simulated band detections"
        if stage2.svm
        else "simulated calibration cutouts (reported only: stage 2 is off)",
    }
    manifest["novelty"].update(
        threshold=novelty.threshold,
        reference=f"the {len(map_cutouts)} map-sample cutouts (replay and labelled night)",
        calibration=f"{len(calibration)} replay and {len(night_sample)} unlabelled night "
        "cutouts the reference does not hold",
        calibration_flagged=novelty.calibration_flagged(),
    )
    manifest["thresholds"] = {"low": stage2.low, "high": stage2.high, "cnn_alone": threshold}
    manifest["stage2"] = {
        "used": stage2.used,
        "band": list(band) if stage2.used else [threshold, threshold],
        "why": stage2.why,
        **stage2.numbers,
    }
    manifest["lineage"] = {
        "parent_version": parent_manifest["version"],
        "parent_cnn_sha256": parent_manifest["artifacts"][CNN_FILE]["sha256"],
        "night_file": night.path.name,
        "night_fingerprint": night.fingerprint,
        "night_detections": len(night.detectid),
        "labels_files": labels.files,
        "label_counts": counts,
        "refit": [
            "cnn: fine-tuned from the parent on the labels with replay"
            + (", then AdaBN to the night" if config.adabn else ""),
            "umap: refit on the new embedding of the map sample",
            "svm: refit on band detections" + ("" if stage2.used else " (off: see stage2)"),
            "novelty: reference and calibration with the night",
        ],
    }
    manifest["adaptation"] = {"config": asdict(config)}
    return manifest


def dump(manifest: dict) -> str:
    keys = ("version", "thresholds", "stage2", "lineage")
    return json.dumps({key: manifest[key] for key in keys}, indent=2)
