"""``adapt``: a new model from a packaged one, a night's cutouts and the labels people gave it.

No simulator is the sky, so a model trained on simulators loses on a real night what no amount of
simulation gives back; the night's own labels do. From the parent model directory:

1. The parent's CNN is recovered from its verified ``cnn.onnx`` (every packaged model has one;
   batch norm is folded into the convolutions there, so it comes back as fixed per-channel
   scales) and fine-tuned on the labelled night cutouts, each epoch mixed with *replay*: fresh
   cutouts of the simulators the parent was trained on, so that what the night lacks is not
   forgotten. Real and fake weigh the same within each source. Two uses of the unlabelled night
   are built and measured (REPORT: ADAPT.md): self-training on its confidently scored cutouts
   (``pseudo_share``) and AdaBN (``adabn``: its per-channel statistics mapped onto the replay's).
2. The CNN threshold is chosen for the whole night (:func:`night_threshold`): the labels are
   not a random sample of it, but within a score bin they are close to one.
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
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from torch import nn

from service.bundle import ModelBundle
from service.domain import VISUAL_CLASSES
from service.errors import ArtifactError
from service.manifest import VERSION_NAME, sha256_of
from service.novelty import Novelty
from service.pipeline import Scorer
from service.preprocess import Normalization, prepare
from service.umap_fast import NeighbourTransform
from training import metrics
from training.augment import Augmentation
from training.build import SimulatedSpec
from training.cnn import LineCNN
from training.dataset import LABEL_TABLE, DatasetError, Images, LabelledCutouts, read_labels
from training.ensemble import (
    MIN_AMBIGUOUS,
    Stage2Verdict,
    UmapConfig,
    capped,
    fit_umap,
    make_svm,
    stage2_band,
)
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
    replay: int = 8_000  # fresh cutouts of the parent's simulators; an epoch draws twice this
    label_share: float = 0.7  # share of each epoch's draws that are night labels
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
THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.01), 2)


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


@dataclass
class Fold:
    """One fold of the labels: the CNN fine-tuned without ``held``."""

    fit_on: np.ndarray
    held: np.ndarray
    cnn: LineCNN


def label_folds(
    parent: LineCNN,
    labelled: LabelledCutouts,
    replay: LabelledCutouts,
    unlabelled: np.ndarray,
    normalization: Normalization,
    config: AdaptConfig,
) -> list[Fold]:
    """k CNNs, each fine-tuned exactly as the final one but without one fold of the labels."""
    splitter = StratifiedKFold(config.folds, shuffle=True, random_state=config.seed)
    folds = []
    for k, (fit_on, held) in enumerate(splitter.split(labelled.im_sum, labelled.is_real)):
        cnn = adapted_cnn(
            parent, labelled.subset(fit_on), replay, unlabelled, normalization, config, k + 1
        )
        folds.append(Fold(fit_on, held, cnn))
        log.info("fold %d of %d: %d labels held out", k + 1, config.folds, len(held))
    return folds


def out_of_fold(
    folds: list[Fold], labelled: LabelledCutouts, normalization: Normalization
) -> tuple[np.ndarray, np.ndarray]:
    """Each label's CNN score and embedding from the fold model that did not train on it."""
    scores = np.empty(len(labelled), dtype=np.float32)
    embeddings = np.empty((len(labelled), folds[0].cnn.head.in_features), dtype=np.float32)
    for fold in folds:
        model_input = prepare(labelled.im_sum[fold.held], normalization)
        scores[fold.held], embeddings[fold.held] = predict(fold.cnn, model_input)
    return scores, embeddings


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
class StageMap:
    """A CNN's UMAP map of the replay sample and some labels, and what it places."""

    reducer: object
    placer: NeighbourTransform
    map_input: np.ndarray
    map_embedding: np.ndarray
    label_coords: np.ndarray  # places of the labels in the map (in-sample)
    label_score: np.ndarray  # their CNN scores (in-sample)


def fit_map(
    cnn: LineCNN, replay_sample: np.ndarray, labels: np.ndarray, normalization, seed: int
) -> StageMap:
    map_input = prepare(np.concatenate([replay_sample, labels]), normalization)
    score, embedding = predict(cnn, map_input)
    reducer = fit_umap(embedding, UmapConfig(sample=len(map_input), seed=seed))
    return StageMap(
        reducer,
        NeighbourTransform.from_reducer(reducer),
        map_input,
        embedding,
        reducer.embedding_[len(replay_sample) :],
        score[len(replay_sample) :],
    )


def band_svm(
    stage_map: StageMap,
    truth: np.ndarray,
    simulated: tuple[np.ndarray, np.ndarray, np.ndarray],
    band: tuple[float, float],
    seed: int,
):
    """The SVM on band detections: the labels in the band and simulated ones (C 1, gamma 0.5 on
    standardised places: chosen on nothing the gate then judges it on); None if one class."""
    low, high = band
    coords, score, sim_truth = simulated
    in_sim = capped(np.flatnonzero((score >= low) & (score < high)), seed)
    in_labels = (stage_map.label_score >= low) & (stage_map.label_score < high)
    x = np.concatenate([coords[in_sim], stage_map.label_coords[in_labels]])
    y = np.concatenate([sim_truth[in_sim], truth[in_labels]])
    if len(y) < MIN_AMBIGUOUS or y.all() or not y.any():
        return None
    return make_svm(seed).fit(x, y)


def simulated_places(
    stage_map: StageMap, score: np.ndarray, embedding: np.ndarray, truth: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The simulated calibration cutouts as :func:`band_svm` takes them: places in the map,
    CNN scores and truth."""
    return stage_map.placer.transform(embedding), score, truth


def held_out_svm(
    folds: list[Fold],
    labelled: LabelledCutouts,
    oof_embedding: np.ndarray,
    replay_sample: np.ndarray,
    calibration: LabelledCutouts,
    normalization,
    band: tuple[float, float],
    seed: int,
) -> np.ndarray:
    """Each label's SVM decision from a stage 2 fit, map and all, by the fold model that did not
    train on it: what the SVM does on night detections the CNN never saw (NaN: no SVM)."""
    decision = np.full(len(labelled), np.nan)
    for fold in folds:
        stage_map = fit_map(
            fold.cnn, replay_sample, labelled.im_sum[fold.fit_on], normalization, seed
        )
        score, embedding = predict(fold.cnn, prepare(calibration.im_sum, normalization))
        simulated = simulated_places(stage_map, score, embedding, calibration.is_real)
        svm = band_svm(stage_map, labelled.is_real[fold.fit_on], simulated, band, seed)
        if svm is None:
            continue
        held = stage_map.placer.transform(oof_embedding[fold.held])
        decision[fold.held] = svm.decision_function(held)
    return decision


def judge_stage2(
    svm_decision: np.ndarray,
    oof_score: np.ndarray,
    truth: np.ndarray,
    band: tuple[float, float],
    threshold: float,
) -> Stage2Verdict:
    """On the labels in the band (by their out-of-fold scores), the held-out SVM must beat the
    CNN's own call and the best constant by two standard errors."""
    low, high = band
    in_band = (oof_score >= low) & (oof_score < high) & np.isfinite(svm_decision)
    n = int(in_band.sum())
    numbers: dict = {"band": list(band), "held_out_band_labels": n}
    y = truth[in_band]
    if n < MIN_AMBIGUOUS or y.all() or not y.any():
        return Stage2Verdict(
            False,
            f"{n} held-out labels in the band [{low}, {high}), of one class or fewer than "
            f"{MIN_AMBIGUOUS}: too few to judge the SVM on",
            numbers,
        )
    svm = float(np.mean((svm_decision[in_band] > 0) == y))
    cnn_call = float(np.mean((oof_score[in_band] >= threshold) == y))
    constant = max(float(y.mean()), 1 - float(y.mean()))
    best_other = max(cnn_call, constant)
    margin = 2.0 * np.sqrt(best_other * (1 - best_other) / n)
    numbers.update(
        svm_accuracy=svm, cnn_call_accuracy=cnn_call, constant_accuracy=constant, margin=margin
    )
    summary = (
        f"on {n} held-out labels in the band [{low}, {high}) the SVM is right on {svm:.3f}, "
        f"the CNN's own call on {cnn_call:.3f}, the best constant on {constant:.3f}"
    )
    if svm <= best_other + margin:
        return Stage2Verdict(
            False,
            f"{summary}: the SVM must beat both by two standard errors ({margin:.3f})",
            numbers,
        )
    return Stage2Verdict(True, f"{summary}: it beats both", numbers)


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
    if not VERSION_NAME.match(version) or out_dir.name != version:
        raise DatasetError(
            f"{out_dir}: --out must be a folder named after --version, a dotted number such as "
            f"2.0.1 (got {version!r}): the server and the review find models by that name"
        )
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
    folds = label_folds(parent, labelled, replay, night.im_sum, normalization, config)
    oof, oof_embedding = out_of_fold(folds, labelled, normalization)
    cnn = adapted_cnn(parent, labelled, replay, night.im_sum, normalization, config)
    night_input = prepare(night.im_sum, normalization)
    night_score, night_embedding = predict(cnn, night_input)
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
    band = stage2_band(parent_manifest)
    replay_sample = replay.subset(
        np.sort(
            np.random.default_rng(config.seed).choice(
                len(replay), min(config.map_sample, len(replay)), replace=False
            )
        )
    )
    verdict = judge_stage2(
        held_out_svm(
            folds,
            labelled,
            oof_embedding,
            replay_sample.im_sum,
            calibration,
            normalization,
            band,
            config.seed,
        ),
        oof,
        truth,
        band,
        threshold,
    )
    log.info("stage 2 %s: %s", "used" if verdict.used else "off", verdict.why)
    out_dir.mkdir(parents=True)
    try:
        manifest = package(
            out_dir,
            cnn,
            bundle,
            night,
            (night_input, night_embedding),
            labels,
            calibration,
            replay_sample,
            band,
            verdict,
            threshold,
            config,
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


def night_threshold(oof_score: np.ndarray, truth: np.ndarray, night_score: np.ndarray) -> dict:
    """The CNN threshold with the best FoM expected over the whole night.

    The labels are not a random sample of the night (``suggest`` favours the unsure), so their
    own FoM is not the night's; but their real share *at a given score* is close to the
    night's there, because the choice of what to label depends on the model's scores and map,
    not on the answer. So the labels' out-of-fold scores calibrate the CNN (Platt scaling: a
    logistic fit on the score's logit), and every night detection's calibrated probability gives
    the real and fake kept above each threshold.
    """
    logit = np.log(np.clip(oof_score, 1e-6, 1 - 1e-6) / np.clip(1 - oof_score, 1e-6, 1))
    platt = LogisticRegression(C=1.0).fit(logit[:, None], truth)
    night_logit = np.log(np.clip(night_score, 1e-6, 1 - 1e-6) / np.clip(1 - night_score, 1e-6, 1))
    probability = platt.predict_proba(night_logit[:, None])[:, 1]
    order = np.argsort(-night_score)
    true_kept, kept = np.cumsum(probability[order]), np.arange(1, len(order) + 1)
    fom = (true_kept / probability.sum()) * (true_kept / kept)
    grid = THRESHOLD_GRID
    at = np.searchsorted(-night_score[order], -grid, side="right") - 1  # last kept index
    expected = np.where(at >= 0, fom[np.clip(at, 0, None)], 0.0)
    best = int(np.argmax(expected))
    return {
        "threshold": float(grid[best]),
        "estimated_fom": float(expected[best]),
        "calibration": {"slope": float(platt.coef_[0, 0]), "intercept": float(platt.intercept_[0])},
        "rule": "best FoM expected over the night: the night's CNN scores calibrated on the "
        "labels' out-of-fold scores (Platt scaling)",
    }


def package(
    out_dir: Path,
    cnn: LineCNN,
    bundle: ModelBundle,
    night: Images,
    night_seen: tuple[np.ndarray, np.ndarray],
    labels: NightLabels,
    calibration: LabelledCutouts,
    replay_sample: LabelledCutouts,
    band: tuple[float, float],
    verdict: Stage2Verdict,
    threshold: float,
    config: AdaptConfig,
) -> dict:
    """Export the CNN and refit the stages that live in its embedding; the manifest (unwritten).
    ``night_seen``: the whole night's model input and its embedding by ``cnn``."""
    parent_manifest = bundle.manifest
    labelled = labels.labelled
    normalization = bundle.normalization
    cnn_path = export_onnx(cnn, out_dir / CNN_FILE)
    rng = np.random.default_rng(config.seed)
    stage_map = fit_map(cnn, replay_sample.im_sum, labelled.im_sum, normalization, config.seed)
    reducer, map_input, map_embedding = (
        stage_map.reducer,
        stage_map.map_input,
        stage_map.map_embedding,
    )
    map_coords = reducer.embedding_
    map_classes = np.concatenate([replay_sample.vis_class, labelled.vis_class])
    agreement = max_disagreement(cnn, cnn_path, map_input[:1024])
    calibration_input = prepare(calibration.im_sum, normalization)
    calibration_score, calibration_embedding = predict(cnn, calibration_input)
    simulated = simulated_places(
        stage_map, calibration_score, calibration_embedding, calibration.is_real
    )
    svm = band_svm(stage_map, labelled.is_real, simulated, band, config.seed)
    used = verdict.used and svm is not None
    why = verdict.why
    if used and len(np.unique(svm.decision_function(map_coords) > 0)) < 2:
        used, why = False, f"{why}; but the refit SVM has one sign over the whole map"
    if svm is None:  # kept for the pictures only: the band is decided by the CNN
        svm = make_svm(config.seed).fit(simulated[0][:2000], simulated[2][:2000])

    unlabelled = np.setdiff1d(np.arange(len(night.detectid)), night.rows_of(labelled.detectid, ""))
    night_sample = np.sort(rng.choice(unlabelled, min(len(unlabelled), 4000), replace=False))
    calibration_parts = [(calibration_input, calibration_embedding)]
    if len(night_sample):  # every detection labelled: the replay alone calibrates
        night_input, night_embedding = night_seen
        calibration_parts.append((night_input[night_sample], night_embedding[night_sample]))
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
        sample=len(map_input),
        seed=config.seed,
        map_sample=f"{len(replay_sample)} replay cutouts and the {len(labelled)} labelled ones",
    )
    manifest["svm"] = {
        "file": SVM_FILE,
        "c": 1.0,
        "gamma": 0.5,
        "trained_on": "the night's labelled detections and simulated calibration cutouts whose "
        f"CNN scores fall in the band [{band[0]}, {band[1]})",
    }
    manifest["novelty"].update(
        threshold=novelty.threshold,
        reference=f"the {len(map_input)} map-sample cutouts (replay and labelled night)",
        calibration=f"{len(calibration)} replay and {len(night_sample)} unlabelled night "
        "cutouts the reference does not hold",
        calibration_flagged=novelty.calibration_flagged(),
    )
    low, high = band if used else (threshold, threshold)
    manifest["thresholds"] = {"low": low, "high": high, "cnn_alone": threshold}
    manifest["stage2"] = {"used": used, "why": why, **verdict.numbers}
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
            "svm: refit on band detections" + ("" if used else " (off: see stage2)"),
            "novelty: reference and calibration with the night",
        ],
    }
    manifest["adaptation"] = {"config": asdict(config)}
    return manifest


def dump(manifest: dict) -> str:
    keys = ("version", "thresholds", "stage2", "lineage")
    return json.dumps({key: manifest[key] for key in keys}, indent=2)
