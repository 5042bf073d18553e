"""FocusNet: a glance, then `num_saccades` learned fixations, integrated by a predictive-coding GRU.

    x (B, C, *S) --pyramid--> glimpse sensor --> M/P/K encoder --> trunk --> features (B, F)
                                   ^                                             |
                       policy(h) --+--  fixation c (B, d), half-width s (B,)     v
                                              predictive-coding GRU: h (B, H) --> head --> logits (B, K)

Step 0 is the glance: the whole image (c = 0, s = 1) seen through the same encoder, sampled at
`glance_size` per side (28 in 2D: full resolution at 28 px, coarse at 224 px). Its feature map
becomes a saliency map of keys over image positions. Steps 1..T are saccades: the policy turns the
integrator state into a query, attends over those keys (minus an inhibition of return around places
already fixated), and looks at the attention-weighted position plus a small learned offset. The
soft-argmax keeps the choice differentiable end to end. Each glimpse's trunk map is read out as a
coarse grid of means plus per-channel peaks (so a small object is not averaged away), and the head
reads the mean integrator state over the steps so far (or, with `readout="gated"`, the glance's state
plus a learned share, from 0, of how that mean differs from it). Compute per image depends on T and the
glimpse size, not on the image size: a 224-pixel image costs the same
as a 28-pixel one (plus a box-filter pyramid, linear in the pixel count).

Two options matter on images larger than the glance can resolve: `fovea_scaling="pixels"` keeps
the fovea at the pixel footprint it has at 28 px (native resolution) instead of a fixed share of
the image, and `saliency > 0` adds a parameter-free bottom-up saliency map (centre-surround
contrast of the glance, with inhibition of return acting on it) to the learned scores and aims
each saccade at where that contrast peaks inside the chosen cell, so the first saccades go
somewhere worth looking before the policy has learned anything. Without them
the soft-argmax policy gets gradient only from where the fovea already is, and a small target
on a large image is not found: on the striped-patch probe at 64 and 128 px only the two together
learn the task (`benchmarks/saccade_probe.py`, BENCHMARKS.md).

`forward(x)` returns the final logits; `forward_trace(x)` returns a `FocusTrace` with everything
the network did (fixations, glimpse boxes, gate weights, prediction errors, per-step logits), and
`forward_early_exit(x, threshold)` stops each image once it is confident.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .glimpse import GlimpseSensor, ImagePyramid, base_grid, glimpse_boxes
from .integrator import PredictiveCodingGRU
from .layers import InputError, check_input, check_spatial_dims, conv, conv_norm_act, set_view
from .pathways import MPKBlock

LOCATION_SIZE = 32
KEY_SIZE = 32
MAX_OFFSET = 0.2  # the policy's own move around the attended position, normalised units
FOVEA_SCALINGS = ("image", "pixels")
READOUTS = ("mean", "gated")
REFERENCE_SIDE = 28  # fovea_scaling="pixels": the fovea covers at any size what `fovea` covers at 28 px


@dataclass
class FocusNetConfig:
    in_channels: int = 1
    num_classes: int = 2
    spatial_dims: int = 2  # 2: (B, C, H, W); 3: (B, C, D, H, W)
    num_saccades: int = 2  # fixations after the glance; 0 = glance only
    glimpse_size: int = 0  # samples per side of each patch; 0 = 16 in 2D, 12 in 3D
    glance_size: int = 0  # samples per side of the glance; 0 = 28 in 2D (full resolution at 28 px), glimpse_size in 3D
    num_scales: int = 2  # fovea + rings of twice the width each
    fovea: float = 0.5  # foveal half-width as a fraction of the image half-width (of a 28-px image with fovea_scaling="pixels")
    fovea_scaling: str = "image"  # "image": the fovea is a fixed share of the image, so coarser on larger inputs; "pixels": it keeps its 28-px pixel footprint (native resolution at any size)
    saliency: float = 0.0  # weight of bottom-up saliency (centre-surround contrast of the glance) in choosing saccades; 0 = off
    width: int = 32  # channels inside the pathways
    feature_channels: int = 64  # channels of the fused pathway maps (trunk doubles them)
    hidden_size: int = 128  # integrator state = glimpse feature size
    pathways: str = "mpk"  # any non-empty subset, for ablations
    predictive_coding: bool = True
    suppression: bool = True  # saccadic suppression of what is taken in during large saccades
    learn_scale: bool = True  # the policy also chooses the foveal width (0.6x to 1.6x of `fovea`)
    readout: str = "mean"  # what the head reads: "mean" of the states so far; "gated": the glance's state plus a learned share (from 0) of that mean's difference (needs saccades; the same as "mean" without)
    dropout: float = 0.1

    def __post_init__(self):
        check_spatial_dims(self.spatial_dims)
        if self.glimpse_size == 0:
            self.glimpse_size = 16 if self.spatial_dims == 2 else 12
        if self.glance_size == 0:
            self.glance_size = 28 if self.spatial_dims == 2 else self.glimpse_size
        for name in ("glimpse_size", "glance_size"):
            if getattr(self, name) < 8 or getattr(self, name) % 4:
                raise ValueError(f"{name} must be a multiple of 4 and >= 8, got {getattr(self, name)}")
        if self.num_saccades < 0 or self.num_scales < 1 or not 0 < self.fovea <= 1:
            raise ValueError("need num_saccades >= 0, num_scales >= 1 and 0 < fovea <= 1")
        if self.fovea_scaling not in FOVEA_SCALINGS:
            raise ValueError(f"fovea_scaling must be one of {FOVEA_SCALINGS}, got {self.fovea_scaling!r}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if self.saliency < 0:
            raise ValueError(f"saliency must be >= 0, got {self.saliency}")
        if self.in_channels < 1 or self.num_classes < 1:
            raise ValueError("in_channels and num_classes must be >= 1")
        if min(self.width, self.feature_channels, self.hidden_size) < 1:
            raise ValueError(f"width, feature_channels and hidden_size must be >= 1, got {self.width}, {self.feature_channels}, {self.hidden_size}")

    @classmethod
    def from_dict(cls, values: dict) -> FocusNetConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown FocusNet option(s) {unknown}; known: {sorted(known)}")
        return cls(**{name: _typed(name, value, cls.__dataclass_fields__[name].type) for name, value in values.items()})

    def to_dict(self) -> dict:
        return asdict(self)


_OPTION_TYPES = {"int": (int, "an integer"), "float": ((int, float), "a number"), "str": (str, "a string"), "bool": (bool, "true or false")}


def _typed(name: str, value, kind: str):
    """`value` as the option's type (an int is a valid float), or a ValueError saying what was
    expected (e.g. for --option glance_size=abc)."""
    expected, described = _OPTION_TYPES[kind]
    if isinstance(value, bool) != (kind == "bool") or not isinstance(value, expected):
        raise ValueError(f"{name} must be {described}, got {value!r}")
    return float(value) if kind == "float" else value


@dataclass
class FocusTrace:
    """What the network did for each image. T = num_saccades; step 0 is the glance."""

    logits: torch.Tensor  # (B, K) final logits, identical to forward(x)
    step_logits: torch.Tensor  # (B, T+1, K) logits after each step
    fixations: torch.Tensor  # (B, T+1, d) glimpse centres, normalised (x, y[, z]) in [-1, 1]
    half_widths: torch.Tensor  # (B, T+1) foveal half-width, normalised
    boxes: torch.Tensor  # (B, T+1, num_scales, 2d) [lo..., hi...] footprint of each ring
    gates: torch.Tensor  # (B, T+1, n_pathways) pathway gate weights
    gains: torch.Tensor  # (B, T+1) saccadic-suppression gain applied to the glimpse
    prediction_errors: torch.Tensor  # (B, T+1) mean squared prediction error per step
    prediction_loss: torch.Tensor  # () differentiable mean of prediction_errors (0 when off)
    pathways: str  # names of the gate columns, e.g. "mpk"


class FocusNet(nn.Module):
    def __init__(self, config: FocusNetConfig):
        super().__init__()
        self.config = cfg = config
        d, ch = cfg.spatial_dims, cfg.feature_channels
        self.sensor = GlimpseSensor(d, cfg.glimpse_size, cfg.num_scales)
        self.glance_sensor = GlimpseSensor(d, cfg.glance_size, cfg.num_scales)
        self.gated_readout = cfg.readout == "gated" and cfg.num_saccades > 0  # one step: its mean is the glance already
        views = 2 if cfg.num_saccades else 1  # glance, foveal glimpses: separate norm statistics
        self.encoder = MPKBlock(cfg.in_channels, ch, d, cfg.num_scales, cfg.width, cfg.pathways, views)
        self.trunk = nn.Sequential(
            conv_norm_act(d, ch, ch, views=views), conv_norm_act(d, ch, 2 * ch, stride=2, views=views), conv_norm_act(d, 2 * ch, 2 * ch, views=views)
        )
        # A 2^d grid of means (where in the glimpse things are) plus the peak of each channel (a
        # small object among clutter: averaging alone dilutes it below the distractors).
        self.to_features = nn.Sequential(nn.Linear(2 * ch * (2**d + 1), cfg.hidden_size), nn.LayerNorm(cfg.hidden_size))
        self.location = nn.Sequential(nn.Linear(d + 1, LOCATION_SIZE), nn.ReLU(inplace=True))
        self.integrator = PredictiveCodingGRU(cfg.hidden_size, cfg.hidden_size, LOCATION_SIZE, cfg.predictive_coding)
        if cfg.num_saccades:
            self.saliency_keys = conv(d, 2 * ch, KEY_SIZE, 1, bias=True)
            self.query = nn.Linear(cfg.hidden_size, KEY_SIZE)
            self.policy = nn.Sequential(nn.Linear(cfg.hidden_size, cfg.hidden_size), nn.ReLU(inplace=True), nn.Linear(cfg.hidden_size, d + 1))
            nn.init.normal_(self.policy[-1].weight, std=0.01)
            nn.init.zeros_(self.policy[-1].bias)
            self.inhibition = nn.Parameter(torch.tensor(2.0))  # softplus -> strength of inhibition of return
            if self.gated_readout:
                self.readout_gate = nn.Parameter(torch.zeros(()))  # 0: the head reads the glance alone
        if cfg.suppression and cfg.num_saccades:  # a glance-only model never saccades
            self.suppression_strength = nn.Parameter(torch.tensor(math.log(math.expm1(0.2))))
        self.head = nn.Sequential(nn.LayerNorm(cfg.hidden_size), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden_size, cfg.num_classes))


    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Glance-only checkpoints written before 2026-11-27 hold a suppression_strength that was never
        # used (DDP refuses unused parameters, so such models no longer create it): they still load.
        if self.config.num_saccades == 0:  # only there: a suppression=False model still refuses it
            state_dict.pop(prefix + "suppression_strength", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # --- public interface -------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, *S) -> logits (B, num_classes)"""
        return self.forward_trace(x).logits

    def forward_trace(self, x: torch.Tensor) -> FocusTrace:
        """x (B, C, *S) -> FocusTrace of the glance and every saccade."""
        check_input(x, self.config.spatial_dims, self.config.in_channels, type(self).__name__, self.head[-1].weight.dtype)
        pyramid = ImagePyramid(x)
        state = self._initial_state(x)
        steps = [self._step(pyramid, state, 0)]
        for t in range(1, self.config.num_saccades + 1):
            steps.append(self._step(pyramid, steps[-1], t))
        return self._collect(steps)

    @torch.no_grad()
    def forward_early_exit(self, x: torch.Tensor, threshold: float, multi_label: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Stop each image after the first step whose confidence reaches `threshold`.

        Only images still looking are processed at each step, so the saving is real compute.
        Confidence: max softmax probability, or for multi-label the least certain label's
        max(p, 1 - p). Returns (logits (B, K), steps taken (B,) counting the glance as 1).
        Inference only: in training mode BatchNorm would normalise the shrinking subsets.
        """
        if self.training:
            raise InputError("forward_early_exit is for inference: call model.eval() first (in training mode BatchNorm would use the statistics of the images still looking)")
        check_input(x, self.config.spatial_dims, self.config.in_channels, type(self).__name__, self.head[-1].weight.dtype)
        b = x.shape[0]
        logits = x.new_zeros(b, self.config.num_classes)
        steps_taken = torch.full((b,), self.config.num_saccades + 1, dtype=torch.long, device=x.device)
        active = torch.arange(b, device=x.device)
        pyramid, state = ImagePyramid(x), self._initial_state(x)
        for t in range(self.config.num_saccades + 1):
            state = self._step(pyramid, state, t)
            logits[active] = state["logits"].to(logits.dtype)  # bf16 under autocast
            done = confidence(state["logits"], multi_label) >= threshold
            if t == self.config.num_saccades or not done.any():
                continue
            steps_taken[active[done]] = t + 1
            keep = ~done
            active = active[keep]
            if active.numel() == 0:
                break
            pyramid = pyramid.subset(keep)
            state = {k: state[k][keep] for k in ("h", "h_sum", "h_glance", "center", "keys", "saliency", "peaks", "visited") if state.get(k) is not None}
        return logits, steps_taken

    def glimpse_at(self, x: torch.Tensor, center: torch.Tensor, half_width: torch.Tensor, step: int) -> torch.Tensor:
        """The glimpse of `step` (0: the glance) at a fixation from forward_trace, as the model took
        it: x (B, C, *S), center (B, d), half_width (B,) -> (B, num_scales * C, *G). Also selects
        the step's norm statistics, so `encoder` reads it as the model did (for figures)."""
        set_view(self, min(step, 1))
        return self._look(ImagePyramid(x), center, half_width, step)

    # --- one step of looking ----------------------------------------------------------------
    def _initial_state(self, x: torch.Tensor) -> dict:
        b, d = x.shape[0], self.config.spatial_dims
        return {"h": self.integrator.init_state(b), "center": x.new_zeros(b, d), "visited": x.new_zeros(b, 0, d)}

    def _step(self, pyramid: ImagePyramid, previous: dict, t: int) -> dict:
        """Choose where to look (the glance at t = 0), look, integrate, read out."""
        cfg, h = self.config, previous["h"]
        if t == 0:
            center, half_width = torch.zeros_like(previous["center"]), h.new_ones(h.shape[0])
        else:
            center, half_width = self._fixate(h, previous["keys"], previous.get("saliency"), previous.get("peaks"), previous["visited"], self._fovea(pyramid))
        glimpse = self._look(pyramid, center, half_width, t)
        feature_map, features, gates = self._encode(glimpse, view=min(t, 1))
        location = self.location(torch.cat([center, half_width.log()[:, None]], dim=1))
        gain = self._suppression_gain(center - previous["center"]) if t > 0 else None
        h, error = self.integrator(h, features, location, gain)
        step = {
            "h": h,
            "center": center,
            "half_width": half_width,
            "gates": gates,
            "gain": gain if gain is not None else h.new_ones(h.shape[0], 1),
            "error": error,
            "h_sum": h if t == 0 else previous["h_sum"] + h,
            "h_glance": h if t == 0 else previous["h_glance"],
            "keys": previous.get("keys"),
            "saliency": previous.get("saliency"),
            "peaks": previous.get("peaks"),
            "visited": previous["visited"] if t == 0 else torch.cat([previous["visited"], center[:, None]], dim=1),
        }
        step["logits"] = self.head(self._readout(step, t))
        if t == 0 and cfg.num_saccades:
            step["keys"] = self.saliency_keys(feature_map).flatten(2).transpose(1, 2)  # (B, N cells, KEY_SIZE)
            if cfg.saliency:
                step["saliency"], step["peaks"] = bottom_up_saliency(glimpse[:, : cfg.in_channels], feature_map.shape[2])
        return step

    def _look(self, pyramid: ImagePyramid, center: torch.Tensor, half_width: torch.Tensor, t: int) -> torch.Tensor:
        """The glance sensor over the whole image at t = 0, else the foveal sensor at this size's fovea."""
        if t == 0:
            return self.glance_sensor(pyramid, center, half_width, 1.0)
        return self.sensor(pyramid, center, half_width, self._fovea(pyramid))

    def _readout(self, step: dict, t: int) -> torch.Tensor:
        """-> (B, H) what the head reads after step t. "mean": the mean state over all steps so far,
        so every look's evidence reaches the loss directly, not only through the recurrence.
        "gated": the glance's state plus a learned share g (from 0) of how that mean differs from
        it. The saccades' states dilute the glance's in the mean, and while the policy has not
        learned where to look this slows learning (synth-lesion: BENCHMARKS.md); from g = 0 the
        model starts as its glance alone and the saccades' share grows only where it helps. (Weight
        decay, as in the strong preset, also pulls g towards 0: towards the glance alone.)"""
        mean = step["h_sum"] / (t + 1)
        if not self.gated_readout:
            return mean
        return step["h_glance"] + self.readout_gate * (mean - step["h_glance"])

    def _fovea(self, pyramid: ImagePyramid) -> float:
        """Nominal foveal half-width (normalised) for this input size."""
        if self.config.fovea_scaling == "image":
            return self.config.fovea
        return min(1.0, self.config.fovea * REFERENCE_SIDE / pyramid.min_side)

    def _fixate(self, h: torch.Tensor, keys: torch.Tensor, saliency: torch.Tensor | None, peaks: torch.Tensor | None, visited: torch.Tensor, fovea: float) -> tuple[torch.Tensor, torch.Tensor]:
        """state (B, H), glance keys (B, N, K), bottom-up saliency (B, N) and its peak in each cell
        (B, N, d) or None, earlier fixations (B, t, d), nominal fovea
        -> centre (B, d): the attended point (inside the image) plus a learned offset of at most
        MAX_OFFSET per axis (the sensor reads zeros beyond the edge); foveal half-width (B,)."""
        d = self.config.spatial_dims
        cells = base_grid(round(int(keys.shape[1]) ** (1 / d)), d, h.device, h.dtype).reshape(1, -1, d)  # (1, N, d)
        landing = cells if peaks is None else peaks  # (1 or B, N, d): where a saccade to each cell lands
        weights = torch.softmax(self._saccade_scores(h, keys, saliency, landing, visited, fovea), dim=1)
        attended = weights @ cells[0] if peaks is None else torch.einsum("bn,bnd->bd", weights, peaks)  # (B, d) inside the image
        move = self.policy(h)
        center = attended + MAX_OFFSET * torch.tanh(move[:, :d])
        if not self.config.learn_scale:
            return center, h.new_full((h.shape[0],), fovea)
        return center, fovea * torch.exp(0.5 * torch.tanh(move[:, d]))

    def _saccade_scores(self, h: torch.Tensor, keys: torch.Tensor, saliency: torch.Tensor | None, landing: torch.Tensor, visited: torch.Tensor, fovea: float) -> torch.Tensor:
        """-> (B, N) scores of the glance's cells as the next target: learned (query . key), plus
        bottom-up saliency, minus inhibition of return around the earlier fixations, measured where
        a saccade to each cell would land (landing (1 or B, N, d), visited (B, t, d))."""
        scores = (keys @ self.query(h)[:, :, None])[..., 0] / math.sqrt(KEY_SIZE)  # (B, N)
        near = torch.exp(-(landing[:, None] - visited[:, :, None]).pow(2).sum(-1) / (2 * fovea**2))  # (B, t, N)
        if saliency is not None:  # inhibition of return also acts on the saliency map: the next salient place wins
            seen = near.amax(dim=1) if visited.shape[1] else torch.zeros_like(saliency)
            lifted = saliency - saliency.amin(dim=1, keepdim=True)  # >= 0, so (1 - seen) can only lower a visited place
            scores = scores + self.config.saliency * lifted * (1 - seen)
        scores = scores - F.softplus(self.inhibition) * near.sum(1)  # zero before the second saccade, but in the graph (DDP needs every parameter used)
        return scores

    def _encode(self, glimpse: torch.Tensor, view: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, S*C, *G) -> feature map (B, 2ch, *G/4), features (B, F), gates (B, n_pathways).
        view: 0 for the glance, 1 for foveal glimpses (selects the norm statistics)."""
        set_view(self, view)
        fused, gates = self.encoder.forward_with_gates(glimpse)
        feature_map = self.trunk(fused)
        return feature_map, self.to_features(grid_and_peak(feature_map)), gates

    def _suppression_gain(self, jump: torch.Tensor) -> torch.Tensor | None:
        """Saccade vector (B, d) -> input gain (B, 1): larger jumps take in less."""
        if not self.config.suppression:
            return None
        amplitude = jump.norm(dim=1, keepdim=True) / math.sqrt(jump.shape[1])
        return torch.exp(-F.softplus(self.suppression_strength) * amplitude)

    def _collect(self, steps: list[dict]) -> FocusTrace:
        def stack(key: str) -> torch.Tensor:
            return torch.stack([s[key] for s in steps], dim=1)

        errors = stack("error").pow(2).mean(dim=2)  # (B, T+1)
        centers, half_widths = stack("center"), stack("half_width")
        return FocusTrace(
            logits=steps[-1]["logits"],
            step_logits=stack("logits"),
            fixations=centers,
            half_widths=half_widths,
            boxes=glimpse_boxes(centers, half_widths, self.config.num_scales),
            gates=stack("gates"),
            gains=stack("gain")[..., 0],
            prediction_errors=errors.detach(),
            prediction_loss=errors.mean(),
            pathways=self.encoder.pathways,
        )


def bottom_up_saliency(glance: torch.Tensor, cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Glance samples (B, C, *G) -> (saliency (B, N), peaks (B, N, d)), N = cells^d.

    saliency: centre-surround contrast energy per cell, standardised over each image's cells:
    where something differs from its surround (an object, an edge) scores high, whatever its
    class. peaks: where in each cell that energy concentrates (its energy^2-weighted centroid,
    normalised image coordinates), so a saccade to a cell lands on the object, not on the cell's
    centre. Parameter-free, like the retina's first stage; the learned top-down scores then
    decide among the salient places."""
    g = glance.mean(dim=1, keepdim=True)
    d, side = g.dim() - 2, g.shape[2]
    k = max(3, side // 4) | 1  # surround: a quarter of the glance, odd
    pool = F.avg_pool2d if d == 2 else F.avg_pool3d
    energy = (g - pool(g, k, 1, k // 2, count_include_pad=False)).pow(2)[:, 0]  # (B, *G)
    blocks = _cell_blocks(energy, cells)  # (B, N, c^d)
    per_cell = blocks.mean(dim=2)
    saliency = (per_cell - per_cell.mean(dim=1, keepdim=True)) / (per_cell.std(dim=1, keepdim=True) + 1e-6)
    positions = _cell_blocks(base_grid(side, d, g.device, g.dtype).movedim(-1, 0), cells)  # (d, N, c^d)
    weights = blocks.pow(2) + 1e-12
    peaks = torch.einsum("bnp,dnp->bnd", weights / weights.sum(dim=2, keepdim=True), positions)
    return saliency, peaks


def _cell_blocks(t: torch.Tensor, cells: int) -> torch.Tensor:
    """(L, *G) with G = cells * c per side -> (L, cells^d, c^d): the samples of each cell,
    cells in the row-major order of a flattened (cells,)*d feature map."""
    lead, side = t.shape[0], t.shape[1]
    d, c = t.dim() - 1, side // cells
    split = t.reshape(lead, *[n for _ in range(d) for n in (cells, c)])  # (L, n, c, n, c[, n, c])
    order = [0] + [1 + 2 * i for i in range(d)] + [2 + 2 * i for i in range(d)]
    return split.permute(order).reshape(lead, cells**d, c**d)


def grid_and_peak(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) -> (B, C * (2^d + 1)): means over a 2^d grid of cells, then the max over all of S."""
    pool = F.adaptive_avg_pool2d if feature_map.dim() == 4 else F.adaptive_avg_pool3d
    return torch.cat([pool(feature_map, 2).flatten(1), feature_map.flatten(2).amax(2)], dim=1)


def confidence(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """(B, K) logits -> (B,) max softmax probability, or for multi-label the least certain
    label's max(p, 1 - p): what early exit compares with its threshold."""
    if multi_label:
        p = torch.sigmoid(logits)
        return torch.maximum(p, 1 - p).min(dim=1).values
    return torch.softmax(logits, dim=1).max(dim=1).values


class EnhancedFocusNet2D(FocusNet):
    """FocusNet for 2D images (B, C, H, W); public name and arguments from the original description."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, num_saccades: int = 2, **options):
        super().__init__(FocusNetConfig(in_channels=in_channels, num_classes=num_classes, spatial_dims=2, num_saccades=num_saccades, **options))


class EnhancedFocusNet3D(FocusNet):
    """FocusNet for 3D volumes (B, C, D, H, W); public name and arguments from the original description."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, num_saccades: int = 2, **options):
        super().__init__(FocusNetConfig(in_channels=in_channels, num_classes=num_classes, spatial_dims=3, num_saccades=num_saccades, **options))
