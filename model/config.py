"""Fast-WAM configuration: sizes, flow-matching constants, data layout, and the named presets.

Every default carries the reason it has that value. `FASTWAM.md` (shared) is the source of the
`fastwam-5b` numbers; `small` and `tiny` keep the same design at sizes our hardware can train.

Configs are plain frozen dataclasses so they round-trip through `config.json` (`to_dict` /
`from_dict`) and can be compared with `==`. They check their own values in `__post_init__` and
raise `ValueError` with the fix in the message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

#: The three cameras of the ALOHA rig that the canvas uses, in canvas order (top, bottom-left,
#: bottom-right). `cam_low` is not used by the released RoboTwin model.
CANVAS_CAMERAS: tuple[str, ...] = ("cam_high", "cam_left_wrist", "cam_right_wrist")

Variant = Literal["fastwam", "joint", "no_video_cotraining"]
VARIANTS: tuple[str, ...] = ("fastwam", "joint", "no_video_cotraining")


@dataclass(frozen=True)
class VideoExpertConfig:
    """The video expert (a Wan2.2-style DiT over VAE latents)."""

    hidden_dim: int = 3072  # Wan2.2-TI2V-5B width
    ffn_dim: int = 14336  # Wan2.2-TI2V-5B FFN
    in_dim: int = 48  # latent channels of the Wan2.2 VAE (= out_dim: the head predicts velocity)
    freq_dim: int = 256  # sinusoidal timestep features, as in Wan
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w): one latent frame, 2x2 latent pixels


@dataclass(frozen=True)
class ActionExpertConfig:
    """The action expert: same depth/heads as the video expert, narrower residual stream."""

    hidden_dim: int = 1024  # released: 1 B-parameter action expert
    ffn_dim: int = 4096  # 4x hidden, as Wan
    freq_dim: int = 256  # same timestep features as the video expert


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
        if self.tokens_per_task < 1:
            raise ValueError(f"EncoderConfig.tokens_per_task must be >= 1, got {self.tokens_per_task}")


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


PRESETS: dict[str, FastWAMConfig] = {
    # The released RoboTwin model (Wan2.2-TI2V-5B video expert + 1 B action expert, 6.02 B total).
    "fastwam-5b": FastWAMConfig(),
    # Same design at ~0.2 B parameters: one 24 GB consumer GPU fine-tunes it in bf16 with AdamW.
    # Full 384x320 canvas (120 tokens/frame) so it sees what the 5B sees; our own VAE (16 latent
    # channels, enough for a 16x spatial code) and a learned task embedding instead of umT5.
    "small": FastWAMConfig(
        name="small",
        num_layers=16,
        num_heads=8,
        attn_head_dim=96,  # 96 splits into RoPE parts (32, 32, 32); 64 would not
        text_dim=512,
        video=VideoExpertConfig(hidden_dim=768, ffn_dim=3072, in_dim=16, freq_dim=256),
        action=ActionExpertConfig(hidden_dim=384, ffn_dim=1536, freq_dim=256),
        encoder=EncoderConfig(vae="causal_conv", text="learned", tasks=("fold the towel",), tokens_per_task=4,
                              vae_channels=(96, 128, 192)),
    ),
    # Same design sized for the 2-core CPU: trains on 240x320-camera demos in well under an hour
    # and samples a chunk (1 video pass + 10 action steps) in < 20 ms. The canvas is 128x160
    # (cam_high 86x160 over two 42x80 wrist views): an 8x10 latent, 4x5 = 20 tokens per frame.
    # On this CPU an action step costs per-op overhead, not arithmetic, so depth is what costs:
    # 2 layers (as the reference's tiny model) and a narrow action expert keep 10 steps cheap,
    # while a wide video expert (as in the 5B, nearly all the compute is video) is what
    # single-pass inference runs once and Joint imagination runs every step.
    "tiny": FastWAMConfig(
        name="tiny",
        num_layers=2,
        num_heads=2,
        attn_head_dim=48,  # RoPE parts (16, 16, 16)
        text_dim=64,
        video=VideoExpertConfig(hidden_dim=384, ffn_dim=1536, in_dim=16, freq_dim=64),
        action=ActionExpertConfig(hidden_dim=32, ffn_dim=128, freq_dim=64),
        canvas_hw=(128, 160),
        encoder=EncoderConfig(vae="causal_conv", text="learned", tasks=("fold the towel",), tokens_per_task=2,
                              vae_channels=(32, 48, 64)),
    ),
}


def get_preset(name: str, **overrides: Any) -> FastWAMConfig:
    """A named preset, optionally with fields replaced (`get_preset("tiny", variant="joint")`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    config = PRESETS[name]
    return config.replace(**overrides) if overrides else config
