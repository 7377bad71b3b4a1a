"""Configuration of the simulated rig (`SimRig`); the rig-file loader builds it from a TOML
`[sim]` table by field name (lists are accepted where a tuple is expected).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from robot.aloha import CONTROL_RATE_HZ
from robot.types import DEFAULT_CAMERA_NAMES

#: Image sizes (H, W) the cameras are tuned for; others work but are not tested.
SUPPORTED_IMAGE_SIZES = ((240, 320), (480, 640))


@dataclass
class SimRigConfig:
    """Everything that shapes one simulated rig. Validated on construction (ValueError says the fix)."""

    name: str = "sim"
    #: Seed of the first episode's towel pose; `reset_episode(seed)` picks later ones.
    seed: int = 0
    task: str = "fold the towel"

    # --- timing --------------------------------------------------------------------------------
    #: One `command()` advances exactly 1/control_rate_hz of simulated time (ALOHA: 50 Hz).
    control_rate_hz: float = CONTROL_RATE_HZ
    #: Physics step (gym-aloha's 2 ms). The cloth's membrane forces are explicit, so the step
    #: bounds its stiffness (see towel_young_pa). 4 ms halves the physics cost but the towel is
    #: four times as stretchy (the scripted fold then misses by ~4 cm, at the success threshold)
    #: and gym-aloha's stiff arm servos (no modelled rotor inertia) went unstable once in 13
    #: folds; the rig warns above 2 ms. Must divide the control period.
    physics_timestep_s: float = 0.002

    # --- cameras ------------------------------------------------------------------------------
    camera_names: tuple[str, ...] = DEFAULT_CAMERA_NAMES
    image_height: int = 240
    image_width: int = 320
    #: Frames per simulated second; rendering is the dominant cost (three 240x320 views take
    #: ~20 ms on llvmpipe), so 25 fps = every 2nd tick at 50 Hz. Decided by simulated time.
    camera_fps: float = 25.0
    #: Render the cameras on their own thread (one GL context) from a copy of the state taken
    #: when a frame is due, so the control tick never waits for the ~24 ms (idle) software
    #: render; `read()` returns the latest finished frames (each stamped with the host time of
    #: its state copy). False renders inside `read()` on the calling thread: every frame is
    #: exactly the state at its due tick, as reproducible data collection and unpaced stepping
    #: need (`SimRig.set_render_thread(False)`; `run.py demos` does so).
    render_thread: bool = True

    # --- towel --------------------------------------------------------------------------------
    towel_size_m: float = 0.35
    #: Vertices per side (grid N x N).
    towel_grid: int = 20
    towel_mass_kg: float = 0.08
    #: Towel centre (x, y) on the table before jitter; between the arms, within both reaches.
    towel_center_m: tuple[float, float] = (0.0, 0.5)
    #: Uniform jitter of the centre per episode, +/- metres in x and y.
    towel_position_jitter_m: float = 0.03
    #: Uniform jitter of the towel's rotation about z per episode, +/- radians (< 45 deg so the
    #: "near" edge stays the one facing the operator).
    towel_rotation_jitter_rad: float = math.radians(15.0)
    #: Membrane stiffness (Young's modulus, Pa) of the cloth. None: as stiff as the physics step
    #: allows with margin (`towel_young_effective_pa`; 8e3 Pa at 2 ms, 2e3 Pa at 4 ms). The
    #: membrane forces are explicit, so stiffness x step^2 / vertex mass is bounded (see
    #: `max_stable_young_pa`); a value above the bound is refused.
    towel_young_pa: float | None = None
    towel_thickness_m: float = 0.002

    # --- arms and grasp -------------------------------------------------------------------------
    #: Largest joint speed the safety filter allows (rad/s); per tick = this / control_rate_hz.
    max_joint_speed_rad_s: float = 3.0
    #: Largest gripper speed (normalised units per second).
    max_gripper_speed_per_s: float = 5.0
    #: Action gripper below this closes the sim grasp (holds cloth between the fingers).
    grasp_close_threshold: float = 0.35

    # --- task ---------------------------------------------------------------------------------
    #: The fold counts as done when each near corner is within this distance of its far corner.
    success_corner_distance_m: float = 0.04
    #: ... and the cloth has settled: the fastest vertex is slower than this.
    settled_speed_m_s: float = 0.05

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))
        if not self.name:
            raise ValueError("SimRigConfig.name must not be empty; use e.g. 'sim'")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"SimRigConfig.seed must be a non-negative integer, got {self.seed!r}")
        if not 1.0 <= self.control_rate_hz <= 500.0:
            raise ValueError(f"control_rate_hz must be within 1..500 Hz (ALOHA uses 50), got {self.control_rate_hz}")
        period = 1.0 / self.control_rate_hz
        if not 0.0005 <= self.physics_timestep_s <= period:
            raise ValueError(
                f"physics_timestep_s must be within 0.0005 s and the control period {period:.4f} s, "
                f"got {self.physics_timestep_s}; 0.004 or 0.002 work at 50 Hz"
            )
        substeps = period / self.physics_timestep_s
        if abs(substeps - round(substeps)) > 1e-6:
            raise ValueError(
                f"physics_timestep_s ({self.physics_timestep_s}) must divide the control period "
                f"({period:.6f} s) exactly so simulated time stays exact; e.g. {period / max(1, round(substeps)):.6f}"
            )
        unknown = [c for c in self.camera_names if c not in DEFAULT_CAMERA_NAMES]
        if unknown or len(set(self.camera_names)) != len(self.camera_names):
            raise ValueError(
                f"camera_names must be distinct names from {DEFAULT_CAMERA_NAMES} (or empty for no "
                f"cameras), got {self.camera_names}"
            )
        if not (16 <= self.image_height <= 1080 and 16 <= self.image_width <= 1920):
            raise ValueError(
                f"image size {self.image_height}x{self.image_width} (HxW) is out of range; use "
                f"240x320 (default) or 480x640"
            )
        if not 0.0 < self.camera_fps <= self.control_rate_hz:
            raise ValueError(
                f"camera_fps must be above 0 and at most control_rate_hz ({self.control_rate_hz}), "
                f"got {self.camera_fps}; 25 renders every 2nd tick at 50 Hz"
            )
        if not isinstance(self.render_thread, bool):
            raise ValueError(f"render_thread must be true or false, got {self.render_thread!r}")
        if not 0.1 <= self.towel_size_m <= 0.6:
            raise ValueError(f"towel_size_m must be within 0.1..0.6 m (the arms' shared reach), got {self.towel_size_m}")
        if not isinstance(self.towel_grid, int) or not 4 <= self.towel_grid <= 40:
            raise ValueError(f"towel_grid must be an integer within 4..40 vertices per side, got {self.towel_grid!r}")
        if not 0.005 <= self.towel_mass_kg <= 2.0:
            raise ValueError(f"towel_mass_kg must be within 0.005..2 kg, got {self.towel_mass_kg}")
        if len(self.towel_center_m) != 2:
            raise ValueError(f"towel_center_m must be (x, y) in metres, got {self.towel_center_m}")
        if not 0.0 <= self.towel_position_jitter_m <= 0.1:
            raise ValueError(f"towel_position_jitter_m must be within 0..0.1 m, got {self.towel_position_jitter_m}")
        if not 0.0 <= self.towel_rotation_jitter_rad < math.pi / 4:
            raise ValueError(
                "towel_rotation_jitter_rad must be within 0 and pi/4 (below 45 deg the near edge is "
                f"well defined), got {self.towel_rotation_jitter_rad}"
            )
        if self.towel_thickness_m <= 0:
            raise ValueError(f"towel_thickness_m must be positive (e.g. 0.002 m), got {self.towel_thickness_m}")
        if self.towel_young_pa is not None:
            if self.towel_young_pa <= 0:
                raise ValueError(f"towel_young_pa must be positive or left out (automatic), got {self.towel_young_pa}")
            if self.towel_young_pa > self.max_stable_young_pa:
                raise ValueError(
                    f"towel_young_pa = {self.towel_young_pa:g} Pa makes the cloth blow up at "
                    f"physics_timestep_s = {self.physics_timestep_s} (at most {self.max_stable_young_pa:.0f} Pa "
                    f"for this towel); lower it, shorten the step, or leave it out to pick the stiffest stable value"
                )
        if self.max_joint_speed_rad_s <= 0 or self.max_gripper_speed_per_s <= 0:
            raise ValueError("max_joint_speed_rad_s and max_gripper_speed_per_s must be positive (e.g. 3.0 and 5.0)")
        if not 0.0 < self.grasp_close_threshold < 1.0:
            raise ValueError(f"grasp_close_threshold must be within 0 and 1 (normalised gripper), got {self.grasp_close_threshold}")
        if self.success_corner_distance_m <= 0 or self.settled_speed_m_s <= 0:
            raise ValueError("success_corner_distance_m and settled_speed_m_s must be positive (e.g. 0.04 m, 0.05 m/s)")

    #: Stiffness number E * t * dt^2 / m_vertex (explicit membrane forces): measured on the 20x20
    #: towel, 0.48 ran stably at rest, 1.6 blew up at once; the default uses 0.32, the bound 0.5.
    DEFAULT_STIFFNESS_NUMBER = 0.32
    MAX_STIFFNESS_NUMBER = 0.5

    def _young_for(self, stiffness_number: float) -> float:
        vertex_mass_kg = self.towel_mass_kg / self.towel_grid**2
        return stiffness_number * vertex_mass_kg / (self.towel_thickness_m * self.physics_timestep_s**2)

    @property
    def max_stable_young_pa(self) -> float:
        """Stiffest membrane (Pa) the physics step integrates stably for this towel."""
        return self._young_for(self.MAX_STIFFNESS_NUMBER)

    @property
    def towel_young_effective_pa(self) -> float:
        """The Young's modulus the cloth is built with (Pa)."""
        if self.towel_young_pa is not None:
            return float(self.towel_young_pa)
        return self._young_for(self.DEFAULT_STIFFNESS_NUMBER)

    #: The step the cloth, the arms and the scripted fold are tuned and tested at.
    TUNED_TIMESTEP_S = 0.002

    @property
    def control_period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def substeps(self) -> int:
        """Physics steps per control tick."""
        return int(round(self.control_period_s / self.physics_timestep_s))
