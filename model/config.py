"""Fast-WAM configuration: sizes, flow-matching constants, data layout, and the named presets.

Every default carries the reason it has that value. `FASTWAM.md` (shared) is the source of the
`fastwam-5b` numbers; `small` and `tiny` keep the same design at sizes our hardware can train.

Configs are plain frozen dataclasses so they round-trip through `config.json` (`to_dict` /
`from_dict`) and can be compared with `==`. They check their own values in `__post_init__` and
raise `ValueError` with the fix in the message.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from model.errors import ModelTooLarge

#: The three cameras of the ALOHA rig that the canvas uses, in canvas order (top, bottom-left,
#: bottom-right). `cam_low` is not used by the released RoboTwin model.
CANVAS_CAMERAS: tuple[str, ...] = ("cam_high", "cam_left_wrist", "cam_right_wrist")

Variant = Literal["fastwam", "joint", "no_video_cotraining"]
VARIANTS: tuple[str, ...] = ("fastwam", "joint", "no_video_cotraining")

#: Largest model a config may describe: 50 B parameters (200 GB in fp32), eight times the 6 B
#: released model. Past this a typo (num_layers = 1000000) is the likelier explanation, and it
#: is refused from the estimate before a single tensor (or Python module) is built.
MAX_PARAMETERS = 50_000_000_000
#: Largest video tokens per training clip (latent_frames x tokens per frame): the 5B uses 360;
#: attention memory grows with the square of it.
MAX_VIDEO_TOKENS = 65_536
#: Memory for training one parameter in fp32 with AdamW: weight, gradient, two moments.
TRAINING_BYTES_PER_PARAMETER = 16


def _check_int(owner: str, name: str, value: Any, low: int, high: int, why: str = "") -> None:
    """An int (not a bool, not 1e6 read as a float) within [low, high], else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{owner}.{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{owner}.{name} must be within {low}..{high}{why}, got {value}")


def _check_float(owner: str, name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{owner}.{name} must be within {low}..{high}, got {value}")


@dataclass(frozen=True)
class VideoExpertConfig:
    """The video expert (a Wan2.2-style DiT over VAE latents)."""

    hidden_dim: int = 3072  # Wan2.2-TI2V-5B width
    ffn_dim: int = 14336  # Wan2.2-TI2V-5B FFN
    in_dim: int = 48  # latent channels of the Wan2.2 VAE (= out_dim: the head predicts velocity)
    freq_dim: int = 256  # sinusoidal timestep features, as in Wan
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w): one latent frame, 2x2 latent pixels

    def __post_init__(self) -> None:
        _check_int("video", "hidden_dim", self.hidden_dim, 1, 65_536)
        _check_int("video", "ffn_dim", self.ffn_dim, 1, 262_144)
        _check_int("video", "in_dim", self.in_dim, 1, 4096)
        _check_int("video", "freq_dim", self.freq_dim, 2, 8192)
        if len(self.patch_size) != 3:
            raise ValueError(f"video.patch_size must be (t, h, w), got {self.patch_size!r}")
        for size in self.patch_size:
            _check_int("video", "patch_size", size, 1, 16)


@dataclass(frozen=True)
class ActionExpertConfig:
    """The action expert: same depth/heads as the video expert, narrower residual stream."""

    hidden_dim: int = 1024  # released: 1 B-parameter action expert
    ffn_dim: int = 4096  # 4x hidden, as Wan
    freq_dim: int = 256  # same timestep features as the video expert

    def __post_init__(self) -> None:
        _check_int("action", "hidden_dim", self.hidden_dim, 1, 65_536)
        _check_int("action", "ffn_dim", self.ffn_dim, 1, 262_144)
        _check_int("action", "freq_dim", self.freq_dim, 2, 8192)


@dataclass(frozen=True)
class EncoderConfig:
    """How pixels and task strings become model inputs.

    vae: "wan2.2" = diffusers `AutoencoderKLWan` loaded from a local folder at run time (5B);
         "causal_conv" = our own small causal video autoencoder (`model.encoders`), trained here.
    text: "umt5" = precomputed umT5-xxl embeddings read from a safetensors file;
          "learned" = a learned embedding per task string (the task list is part of the config).
    """

    vae: Literal["wan2.2", "causal_conv"] = "wan2.2"
    text: Literal["umt5", "learned"] = "umt5"
    #: Task strings known to a learned text embedding; their order is the embedding index.
    tasks: tuple[str, ...] = ()
    #: Context tokens per task for the learned embedding (umT5 gives up to 128).
    tokens_per_task: int = 4
    #: Widths of our causal autoencoder: after space-to-depth by 4, then after each 2x down step
    #: (multiples of 8: GroupNorm uses 8 groups).
    vae_channels: tuple[int, int, int] = (64, 96, 128)

    def __post_init__(self) -> None:
        if self.vae not in ("wan2.2", "causal_conv"):
            raise ValueError(f"EncoderConfig.vae must be 'wan2.2' or 'causal_conv', got {self.vae!r}")
        if self.text not in ("umt5", "learned"):
            raise ValueError(f"EncoderConfig.text must be 'umt5' or 'learned', got {self.text!r}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError("EncoderConfig.tasks has duplicates; each task string must appear once")
        if any(c % 8 for c in self.vae_channels):
            raise ValueError(f"EncoderConfig.vae_channels must be multiples of 8 (GroupNorm), got {self.vae_channels}")
        _check_int("encoder", "tokens_per_task", self.tokens_per_task, 1, 1024)
        if len(self.vae_channels) != 3:
            raise ValueError(f"EncoderConfig.vae_channels must be three widths, got {self.vae_channels!r}")
        for width in self.vae_channels:
            _check_int("encoder", "vae_channels", width, 8, 4096)
        if len(self.tasks) > 100_000 or not all(isinstance(task, str) and task.strip() for task in self.tasks):
            raise ValueError("EncoderConfig.tasks must be at most 100000 non-blank task strings")


@dataclass(frozen=True)
class FastWAMConfig:
    """Everything that fixes a Fast-WAM model's tensors and its train/sample maths."""

    name: str = "fastwam-5b"

    # Shared by both experts (the Mixture-of-Transformers attention needs equal heads and depth).
    num_layers: int = 30
    num_heads: int = 24
    attn_head_dim: int = 128  # must split into 3-D RoPE parts (d - 2(d//3), d//3, d//3), all even
    eps: float = 1e-6  # LayerNorm / RMSNorm epsilon, as Wan
    rope_theta: float = 10000.0

    text_dim: int = 4096  # umT5-xxl width; the proprio token is projected to this width too
    action_dim: int = 14  # ALOHA: 2 x (6 joints + gripper)
    proprio_dim: int = 14

    video: VideoExpertConfig = field(default_factory=VideoExpertConfig)
    action: ActionExpertConfig = field(default_factory=ActionExpertConfig)

    # Rectified flow (t = 1000 is pure noise here; x_t = (1 - s) x0 + s eps with s = t / 1000).
    shift: float = 5.0  # phi(u) = 5u / (1 + 4u): spends more training/sampling time near noise
    num_train_timesteps: int = 1000
    num_inference_steps: int = 10  # Euler steps; no classifier-free guidance
    loss_weight_video: float = 1.0
    loss_weight_action: float = 1.0

    # Data layout.
    action_horizon: int = 32  # actions per chunk (33 frames at the action rate)
    latent_frames: int = 3  # 1 current + 2 future latent frames (9 RGB frames, 4x temporal VAE)
    canvas_hw: tuple[int, int] = (384, 320)  # cam_high 256x320 over two 128x160 wrist views
    spatial_compression: int = 16  # VAE: 16x16 pixels per latent pixel
    temporal_compression: int = 4  # VAE: first frame alone, then groups of 4 frames
    camera_names: tuple[str, ...] = CANVAS_CAMERAS

    #: "fastwam": actions see only the current frame, inference is single-pass with a K/V cache.
    #: "joint": actions see all video; inference denoises future video together with the actions.
    #: "no_video_cotraining": the same network trained on the action loss only (ablation).
    variant: str = "fastwam"

    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    def __post_init__(self) -> None:
        self._check_limits()
        d = self.attn_head_dim
        parts = (d - 2 * (d // 3), d // 3, d // 3)
        if d % 2 or any(p % 2 for p in parts):
            raise ValueError(
                f"attn_head_dim={d} cannot be split into even 3-D RoPE parts {parts}; "
                "pick a head dim such as 24, 32, 48, 96 or 128"
            )
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        h, w = self.canvas_hw
        unit = self.spatial_compression * self.video.patch_size[1]
        unit_w = self.spatial_compression * self.video.patch_size[2]
        if h % unit or w % unit_w:
            raise ValueError(
                f"canvas_hw={self.canvas_hw} must be a multiple of {unit}x{unit_w} pixels "
                "(VAE compression times patch size) so the latents patchify without padding"
            )
        if self.latent_frames < 1:
            raise ValueError(f"latent_frames must be >= 1, got {self.latent_frames}")
        if self.video.patch_size[0] != 1:
            raise ValueError("video.patch_size[0] must be 1: the current frame must be its own token group")
        if self.encoder.text == "learned" and not self.encoder.tasks:
            raise ValueError("a learned text embedding needs the task list: set encoder.tasks")
        tokens = self.latent_frames * self.tokens_per_frame
        if tokens > MAX_VIDEO_TOKENS:
            raise ValueError(
                f"a training clip would have {tokens} video tokens ({self.latent_frames} latent frames x "
                f"{self.tokens_per_frame} per frame), more than {MAX_VIDEO_TOKENS}: lower canvas_hw or latent_frames"
            )
        count = self.parameter_count
        if count > MAX_PARAMETERS:
            raise ValueError(
                f"this config describes a model of {count / 1e9:,.1f} B parameters ({count * 4 / 1e9:,.0f} GB in "
                f"fp32), more than the {MAX_PARAMETERS / 1e9:.0f} B this studio builds; check num_layers, the hidden "
                f"and ffn widths (the released fastwam-5b has 6.0 B)"
            )

    def _check_limits(self) -> None:
        """Every size within a range a real model can have, checked before anything is built."""
        _check_int("config", "num_layers", self.num_layers, 1, 200, " (the released model has 30)")
        _check_int("config", "num_heads", self.num_heads, 1, 256)
        _check_int("config", "attn_head_dim", self.attn_head_dim, 2, 1024)
        _check_int("config", "text_dim", self.text_dim, 1, 65_536)
        _check_int("config", "action_dim", self.action_dim, 1, 4096)
        _check_int("config", "proprio_dim", self.proprio_dim, 1, 4096)
        _check_int("config", "action_horizon", self.action_horizon, 1, 4096)
        _check_int("config", "latent_frames", self.latent_frames, 1, 256)
        _check_int("config", "spatial_compression", self.spatial_compression, 1, 64)
        _check_int("config", "temporal_compression", self.temporal_compression, 1, 16)
        _check_int("config", "num_train_timesteps", self.num_train_timesteps, 1, 100_000)
        _check_int("config", "num_inference_steps", self.num_inference_steps, 1, 1000)
        if len(self.canvas_hw) != 2:
            raise ValueError(f"canvas_hw must be (height, width), got {self.canvas_hw!r}")
        for side in self.canvas_hw:
            _check_int("config", "canvas_hw", side, 1, 8192)
        _check_float("config", "eps", self.eps, 1e-12, 1e-1)
        _check_float("config", "rope_theta", self.rope_theta, 1.0, 1e9)
        _check_float("config", "shift", self.shift, 1e-3, 1e3)
        _check_float("config", "loss_weight_video", self.loss_weight_video, 0.0, 1e6)
        _check_float("config", "loss_weight_action", self.loss_weight_action, 0.0, 1e6)

    # -- size ------------------------------------------------------------------------------------
    @property
    def parameter_count(self) -> int:
        """Parameters of `model.fastwam.FastWAM(self)`, from the sizes alone (exact: the tests
        compare it with the built model), so a config can be judged before it is built."""
        a = self.attn_dim

        def block(d: int, f: int) -> int:
            attention = 4 * d * a + 3 * a + d + 2 * a  # q, k, v, o with biases; RMSNorm on q and k
            return 2 * attention + 2 * d + (2 * d * f + f + d) + 6 * d  # self, cross, LN, FFN, modulation

        def time_mlps(freq: int, d: int) -> int:
            return freq * d + d + d * d + d + d * 6 * d + 6 * d

        def text_mlp(d: int) -> int:
            return self.text_dim * d + d + d * d + d

        v, act = self.video, self.action
        patch = math.prod(v.patch_size) * v.in_dim
        video = patch * v.hidden_dim + v.hidden_dim + text_mlp(v.hidden_dim) + time_mlps(v.freq_dim, v.hidden_dim)
        video += self.num_layers * block(v.hidden_dim, v.ffn_dim) + v.hidden_dim * patch + patch + 2 * v.hidden_dim
        action = self.action_dim * act.hidden_dim + act.hidden_dim + text_mlp(act.hidden_dim)
        action += time_mlps(act.freq_dim, act.hidden_dim) + self.num_layers * block(act.hidden_dim, act.ffn_dim)
        action += act.hidden_dim * self.action_dim + self.action_dim
        return video + action + self.proprio_dim * self.text_dim + self.text_dim

    def parameter_bytes(self, bytes_per_parameter: int = 4) -> int:
        """Memory of the parameters alone (4: fp32, 2: bf16)."""
        return self.parameter_count * bytes_per_parameter

    # -- derived sizes ---------------------------------------------------------------------------
    @property
    def latent_hw(self) -> tuple[int, int]:
        return (self.canvas_hw[0] // self.spatial_compression, self.canvas_hw[1] // self.spatial_compression)

    @property
    def tokens_per_frame(self) -> int:
        lh, lw = self.latent_hw
        return (lh // self.video.patch_size[1]) * (lw // self.video.patch_size[2])

    @property
    def video_frames(self) -> int:
        """RGB frames per training clip: 1 + 4 (latent_frames - 1)."""
        return 1 + self.temporal_compression * (self.latent_frames - 1)

    @property
    def attn_dim(self) -> int:
        return self.num_heads * self.attn_head_dim

    # -- (de)serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FastWAMConfig":
        """Inverse of `to_dict`; unknown keys are an error so typos do not pass silently."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FastWAMConfig keys {unknown}; known keys are {sorted(known)}")
        video = dict(data.pop("video", {}))
        if "patch_size" in video:
            video["patch_size"] = tuple(video["patch_size"])
        encoder = dict(data.pop("encoder", {}))
        for key in ("tasks", "vae_channels"):
            if key in encoder:
                encoder[key] = tuple(encoder[key])
        for key in ("canvas_hw", "camera_names"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(
            video=VideoExpertConfig(**video),
            action=ActionExpertConfig(**data.pop("action", {})),
            encoder=EncoderConfig(**encoder),
            **data,
        )

    @classmethod
    def from_reference(cls, ref: dict[str, Any], name: str = "reference") -> "FastWAMConfig":
        """Build a config from a reference-vectors `config.json` (the released training layout).

        The reference file describes sizes plus the shapes of its test tensors (`horizon`,
        `latent_frames`, `latent_h`, `latent_w`); the canvas is derived from the latent size.
        """
        video = ref["video"]
        action = ref["action"]
        lh, lw = int(ref.get("latent_h", 24)), int(ref.get("latent_w", 20))
        sc = 16
        return cls(
            name=name,
            num_layers=int(ref["num_layers"]),
            num_heads=int(ref["num_heads"]),
            attn_head_dim=int(ref["attn_head_dim"]),
            eps=float(ref.get("eps", 1e-6)),
            text_dim=int(ref["text_dim"]),
            action_dim=int(ref["action_dim"]),
            proprio_dim=int(ref["proprio_dim"]),
            video=VideoExpertConfig(
                hidden_dim=int(video["hidden_dim"]),
                ffn_dim=int(video["ffn_dim"]),
                in_dim=int(video["in_dim"]),
                freq_dim=int(video["freq_dim"]),
                patch_size=tuple(int(p) for p in video["patch_size"]),
            ),
            action=ActionExpertConfig(
                hidden_dim=int(action["hidden_dim"]),
                ffn_dim=int(action["ffn_dim"]),
                freq_dim=int(action["freq_dim"]),
            ),
            shift=float(ref.get("shift", 5.0)),
            num_train_timesteps=int(ref.get("num_train_timesteps", 1000)),
            num_inference_steps=int(ref.get("num_inference_steps", 10)),
            action_horizon=int(ref.get("horizon", 32)),
            latent_frames=int(ref.get("latent_frames", 3)),
            canvas_hw=(lh * sc, lw * sc),
            spatial_compression=sc,
        )

    def replace(self, **changes: Any) -> "FastWAMConfig":
        return dataclasses.replace(self, **changes)


#: The released model's proportions, which every preset keeps (scaled): the attention as wide as
#: the video expert (24 heads x 128 = 3072), the action expert a third of the video width (1024
#: of 3072), FFNs 4x their width (the video's 14336 is Wan's 4.67x). tests/model/test_config.py
#: holds every preset to it.
PROPORTIONS = {"attention_over_video": 1.0, "action_over_video": 1.0 / 3.0, "ffn_over_width": 4.0}


PRESETS: dict[str, FastWAMConfig] = {
    # The released RoboTwin model (Wan2.2-TI2V-5B video expert + 1 B action expert, 6.02 B total).
    "fastwam-5b": FastWAMConfig(),
    # Same design at ~0.2 B parameters: one 24 GB consumer GPU fine-tunes it in bf16 with AdamW.
    # Full 384x320 canvas (120 tokens/frame) so it sees what the 5B sees; our own VAE (16 latent
    # channels, enough for a 16x spatial code) and a learned task embedding instead of umT5.
    # In the release's proportions (see PROPORTIONS below): attention 8 x 96 = 768 = the video
    # width, the action expert a third of it (256), FFNs 4x.
    "small": FastWAMConfig(
        name="small",
        num_layers=16,
        num_heads=8,
        attn_head_dim=96,  # 96 splits into RoPE parts (32, 32, 32); 64 would not
        text_dim=512,
        video=VideoExpertConfig(hidden_dim=768, ffn_dim=3072, in_dim=16, freq_dim=256),
        action=ActionExpertConfig(hidden_dim=256, ffn_dim=1024, freq_dim=256),
        encoder=EncoderConfig(vae="causal_conv", text="learned", tasks=("fold the towel",), tokens_per_task=4,
                              vae_channels=(96, 128, 192)),
    ),
    # Same design sized for the 2-core CPU, in the release's proportions (PROPORTIONS below):
    # attention 4 x 48 = 192 = the video width, an action expert a third of it (64), FFNs 4x, 4
    # layers. The canvas is 128x160 (cam_high 86x160 over two 42x80 wrist views): an 8x10 latent,
    # 4x5 = 20 tokens per frame. Single-pass p50 19 ms on the 2-core CPU (load 3; the earlier
    # 2-layer preset: 9 ms), a training step 2.5x the earlier one (about 70 min for 4000 steps
    # on 150 demos here).
    #
    # Why (issue 12): the earlier tiny had a 384-wide video expert but attention only 2 x 48 = 96
    # wide and a 32-wide action expert over 2 layers, so the only path from pixels to actions
    # (the frame-0 keys and values) was narrow and shaped by the video loss. On 150 towel demos,
    # 4000 steps, 50 unseen seeds: co-trained 36/50 -> 44/50 in these proportions, its
    # no-co-training ablation 44/50 -> 49/50. Both better; co-training still does not help on
    # this task (the README's "Does video co-training help?" says why and what would test it).
    "tiny": FastWAMConfig(
        name="tiny",
        num_layers=4,
        num_heads=4,
        attn_head_dim=48,  # RoPE parts (16, 16, 16)
        text_dim=64,
        video=VideoExpertConfig(hidden_dim=192, ffn_dim=768, in_dim=16, freq_dim=64),
        action=ActionExpertConfig(hidden_dim=64, ffn_dim=256, freq_dim=64),
        canvas_hw=(128, 160),
        encoder=EncoderConfig(vae="causal_conv", text="learned", tasks=("fold the towel",), tokens_per_task=2,
                              vae_channels=(32, 48, 64)),
    ),
}


def available_memory_bytes() -> int | None:
    """Physical memory of this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(
    config: FastWAMConfig,
    available_bytes: int | None = None,
    *,
    training: bool = True,
    bytes_per_parameter: int = 4,
    where: str = "this machine",
) -> int:
    """Refuse, before anything is allocated, a model whose parameters (and, for training, their
    gradients and AdamW moments) cannot fit in `available_bytes` (default: this machine's
    physical memory; pass a GPU's memory for a GPU). Returns the estimated bytes; raises
    `ModelTooLarge` with the estimate and what to change."""
    available = available_memory_bytes() if available_bytes is None else available_bytes
    per_parameter = TRAINING_BYTES_PER_PARAMETER * bytes_per_parameter // 4 if training else bytes_per_parameter
    needed = config.parameter_count * per_parameter
    if available is not None and needed > available:
        raise ModelTooLarge(config.name, config.parameter_count, needed, available, training, where)
    return needed


def get_preset(name: str, **overrides: Any) -> FastWAMConfig:
    """A named preset, optionally with fields replaced (`get_preset("tiny", variant="joint")`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    config = PRESETS[name]
    return config.replace(**overrides) if overrides else config
