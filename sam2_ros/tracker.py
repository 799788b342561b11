"""Streaming SAM 2 tracker: frames in, one mask per tracked object out. ROS-free, deterministic.

Per frame (``step``): encode the image once, then for all tracked objects in one batch:
memory attention over each object's bank, mask decoder, memory encoder into the bank.
Prompts (``add_prompt``) apply to the current (latest) frame: a new object id starts an
object (SAM on that frame, no memory), a known id refines it (decoder conditioned on its
memory and its current mask). A prompt may also name a past frame still in the history
(``frame_index``, the last ``history_frames`` frames): it is applied there, exactly as if it
had come on time, and that object alone is re-tracked up to the current frame from the
frames' cached features (no image encoder runs). A new object's prompted frame becomes a
conditioning frame; a correction of a tracked object does too by default
(``corrections_as_conditioning``), or else replaces that frame's recent memory (the official
predictor's default). The memory of a prompted frame is encoded before the next frame, after
the last prompt on that frame, as the official predictor does when propagation resumes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import numpy as np

from sam2_ros.backends.base import Backend, ImageFeatures
from sam2_ros.errors import FrameSizeChanged, TrackerInputError
from sam2_ros.memory_bank import MemoryBank
from sam2_ros.imaging import HostRendering, Rendering
from sam2_ros.limits import check_pixels, check_points
from sam2_ros.preprocess import (
    downsample_mask,
    mask_prompt_logits,
    mask_to_model_input,
    scale_points,
)

log = logging.getLogger(__name__)


class FrameResult:
    """Every tracked object on one frame, in ascending object-id order.

    Scores, IoUs and low-res logits are host arrays. The camera-resolution outputs (``masks``,
    ``boxes``, ``areas``, :meth:`label_image`) are computed on first use by the backend's
    imaging (on the GPU for a GPU backend), so a caller pays only for what it reads: a node that
    publishes only the label image never builds per-object masks on the host.
    """

    def __init__(
        self,
        frame_index: int,
        object_ids: list[int],
        masks: np.ndarray | None = None,  # [n, H, W] bool, camera resolution
        scores: np.ndarray | None = None,  # [n] float32 object-score logits (> 0: visible)
        ious: np.ndarray | None = None,  # [n] float32 predicted IoU
        boxes: np.ndarray | None = None,  # [n, 4] float32 x0, y0, x1, y1 (NaN where the mask is empty)
        low_res_logits: np.ndarray | None = None,  # [n, 4h, 4w] float32 mask logits
        *,
        rendering: Rendering | None = None,
        frame_hw: tuple[int, int] | None = None,
    ):
        if (masks is None) == (rendering is None):
            raise ValueError("FrameResult needs either masks or a rendering")
        n = len(object_ids)
        self.frame_index = frame_index
        self.object_ids = object_ids
        self.scores = np.zeros(n, np.float32) if scores is None else scores
        self.ious = np.zeros(n, np.float32) if ious is None else ious
        self.low_res_logits = low_res_logits
        self._masks, self._boxes, self._areas = masks, boxes, None
        self._rendering = rendering if rendering is not None else HostRendering.of_masks(masks)
        self.frame_hw = tuple(frame_hw) if frame_hw is not None else tuple(masks.shape[1:3])

    @property
    def masks(self) -> np.ndarray:
        """[n, H, W] bool masks at the camera resolution."""
        if self._masks is None:
            self._masks = self._rendering.masks()
        return self._masks

    @property
    def boxes(self) -> np.ndarray:
        """[n, 4] float32 x0, y0, x1, y1 (exclusive ends), NaN where a mask is empty."""
        if self._boxes is None:
            self._boxes = self._rendering.boxes()
        return self._boxes

    @property
    def areas(self) -> np.ndarray:
        """[n] int64 mask pixel counts."""
        if self._areas is None:
            self._areas = self._rendering.areas()
        return self._areas

    def label_image(self, order: np.ndarray, dtype) -> np.ndarray:
        """[H, W] ``dtype``: pixel = 1 + object index, 0 = background, objects painted in ``order``
        (a later one wins where masks overlap). Built where the masks are; only it is downloaded."""
        return self._rendering.label_image(np.asarray(order, np.int64), np.dtype(dtype))

    @property
    def visible(self) -> np.ndarray:
        return self.scores > 0

    def __repr__(self) -> str:
        return (f"FrameResult(frame_index={self.frame_index}, object_ids={self.object_ids}, "
                f"scores={self.scores!r}, frame_hw={self.frame_hw})")


@dataclass
class _Prompt:
    """A validated prompt in model coordinates."""

    coords: np.ndarray | None = None  # [N,2] model pixels (box corners first)
    labels: np.ndarray | None = None  # [N] int32
    mask_s: np.ndarray | None = None  # [S,S] float32 binary


def _is_empty(value) -> bool:
    """An empty list / array (``[]``, shape ``(0, 2)``); ``None`` and non-sequences are not."""
    if value is None or isinstance(value, (str, bytes)):
        return False
    try:
        return len(value) == 0
    except TypeError:
        return False


class Tracker:
    """Track objects through a stream of frames with a SAM 2 backend.

    Args:
        backend: an opened backend (``sam2_ros.backends.load_backend``).
        max_objects: objects tracked at once (memory is allocated for this many).
        cond_slots: prompted (conditioning) frames kept per object. The latest are kept: the
            official predictor with ``max_cond_frames_in_attn=cond_slots`` (it keeps every
            prompted frame by default). An evicted one stays a recent memory while recent.
        mask_threshold: logit threshold of the output masks (0 as in SAM 2).
        num_frames: length of a finite clip, if known. SAM 2 scales object-pointer
            distances by ``min(num_frames, 16) - 1``; a live stream (None) uses 15,
            the official value for clips of 16 frames or more.
        fill_hole_area: fill background holes of at most this many low-res pixels in each
            mask (8: the official predictor on GPU; 0: the official predictor on CPU, where
            its CUDA extension is missing and the step is skipped).
        corrections_as_conditioning: a prompt on an object already tracked on that frame
            makes the frame a conditioning frame (True: the official
            ``add_all_frames_to_correct_as_cond=True``, which Meta's own SAM 2 / SAM 3
            configurations use), or only replaces the frame's recent memory, forgotten after
            ``num_maskmem - 1`` frames (False: the official predictor's default).
        keep_first_cond_frame: keep the object's first prompted frame plus the latest
            ``cond_slots - 1`` instead of the latest ``cond_slots`` (needs ``cond_slots >= 2``).
        history_frames: how many of the latest frames (the current one included) a prompt may
            name (``add_prompt(..., frame_index=f)``): their image features and every object's
            memory and outputs are kept, allocated once (16 MiB per frame at 1024 px, 4 MiB at
            512, plus per object and frame about 1.3 MiB at 1024 px; :mod:`sam2_ros.history`).
    """

    def __init__(
        self,
        backend: Backend,
        max_objects: int = 8,
        cond_slots: int = 2,
        mask_threshold: float = 0.0,
        num_frames: int | None = None,
        fill_hole_area: int = 8,
        corrections_as_conditioning: bool = True,
        keep_first_cond_frame: bool = False,
        history_frames: int = 30,
    ):
        if not isinstance(max_objects, int) or max_objects < 1:
            raise TrackerInputError(f"max_objects must be an int >= 1, got {max_objects!r}")
        if not isinstance(cond_slots, int) or cond_slots < 1:
            raise TrackerInputError(f"cond_slots must be an int >= 1, got {cond_slots!r}")
        if isinstance(history_frames, bool) or not isinstance(history_frames, int) or history_frames < 1:
            raise TrackerInputError(f"history_frames must be an int >= 1, got {history_frames!r}")
        if num_frames is not None and (not isinstance(num_frames, int) or num_frames < 2):
            raise TrackerInputError(f"num_frames must be None or an int >= 2, got {num_frames!r}")
        self.backend = backend
        self.spec = spec = backend.manifest.spec
        if not spec.directly_add_no_mem_embed:
            raise TrackerInputError(f"model {spec.model} does not add no_mem_embed directly; not supported")
        self.constants = backend.manifest.constants
        self._check_backend_limits(backend, max_objects, cond_slots)
        self.max_objects = max_objects
        self.mask_threshold = float(mask_threshold)
        if not isinstance(fill_hole_area, int) or fill_hole_area < 0:
            raise TrackerInputError(f"fill_hole_area must be an int >= 0, got {fill_hole_area!r}")
        self.fill_hole_area = fill_hole_area
        for name, flag in (("corrections_as_conditioning", corrections_as_conditioning),
                           ("keep_first_cond_frame", keep_first_cond_frame)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TrackerInputError(f"{name} must be a bool, got {flag!r}")
        if keep_first_cond_frame and cond_slots < 2:
            raise TrackerInputError("keep_first_cond_frame needs cond_slots >= 2 (the first frame plus the latest)")
        self.corrections_as_conditioning = bool(corrections_as_conditioning)
        max_ptrs = spec.max_obj_ptrs_in_encoder
        self.ptr_span = (min(num_frames, max_ptrs) if num_frames else max_ptrs) - 1
        hw = spec.mem_tokens  # tokens per memory frame (from the manifest)
        self.storage = backend.storage
        self.imaging = backend.imaging
        self.bank = MemoryBank(
            max_objects, cond_slots, hw, spec.mem_dim, spec.hidden_dim, spec.num_maskmem,
            max_ptrs, signed_ptr_offsets=spec.use_signed_tpos_enc_to_obj_ptrs,
            keep_first_cond_frame=bool(keep_first_cond_frame), low_res_size=spec.low_res_size,
            storage=self.storage, history_frames=history_frames, imaging=backend.imaging,
        )
        self.history_frames = history_frames
        lr = spec.low_res_size
        # constant decoder inputs (host): "no point" (label -1), no mask, per-object flags
        self._no_points = np.zeros((1, 1, 2), np.float32)
        self._no_labels = np.full((1, 1), -1, np.int32)
        self._no_mask = np.zeros((1, 1, lr, lr), np.float32)
        self._zeros_b = np.zeros(max_objects, np.float32)
        self._ones_b = np.ones(max_objects, np.float32)
        self._no_obj_ptr = self.storage.asarray(np.asarray(self.constants["no_obj_ptr"], np.float32).reshape(-1))
        self.reset()

    @staticmethod
    def _check_backend_limits(backend: Backend, max_objects: int, cond_slots: int) -> None:
        """Engines with fixed maximum shapes (TensorRT profiles) must fit this tracker."""
        spec = backend.manifest.spec
        over = backend.limits.exceeded(
            objects=max_objects,
            mem_slots=spec.num_maskmem - 1 + cond_slots,
            ptr_slots=spec.max_obj_ptrs_in_encoder - 1 + cond_slots,
        )
        if over:
            raise TrackerInputError(
                f"the {backend.name} engines were built for smaller shapes ({', '.join(over)}): "
                "lower max_objects / cond_slots or rebuild with larger limits"
            )

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every object and frame; the next frame may have another size."""
        self._ids: list[int] = []  # object id of each live row (rows 0..n-1)
        for row in range(self.max_objects):
            self.bank.clear(row)
        self.bank.history.forget_frames()
        self.frame_index = -1
        self._frame_hw: tuple[int, int] | None = None
        self._feats: ImageFeatures | None = None

    def close(self) -> None:
        """Release the backend (sessions, engines, device memory). The tracker is unusable afterwards."""
        self.backend.close()

    @property
    def object_ids(self) -> list[int]:
        return sorted(self._ids)

    @property
    def num_objects(self) -> int:
        return len(self._ids)

    @property
    def oldest_frame(self) -> int | None:
        """The oldest frame a prompt may name (``frame_index``); None before the first frame."""
        if self.frame_index < 0:
            return None
        return max(0, self.frame_index - self.history_frames + 1)

    # ------------------------------------------------------------- validation
    def _check_frame(self, frame: np.ndarray) -> None:
        if not isinstance(frame, np.ndarray):
            raise TrackerInputError(f"frame must be a numpy array, got {type(frame).__name__}")
        if frame.dtype != np.uint8:
            raise TrackerInputError(f"frame must be uint8 RGB, got dtype {frame.dtype}")
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
            raise TrackerInputError(f"frame must have shape [H, W, 3] with H, W >= 1, got {frame.shape}")
        too_big = check_pixels(frame.shape[1], frame.shape[0], "frame")
        if too_big:
            raise TrackerInputError(too_big)
        if self._frame_hw is not None and frame.shape[:2] != self._frame_hw:
            raise FrameSizeChanged(self._frame_hw, frame.shape[:2])

    def _check_object_id(self, object_id) -> int:
        if isinstance(object_id, (bool, np.bool_)) or not isinstance(object_id, (int, np.integer)):
            raise TrackerInputError(f"object_id must be an int, got {object_id!r}")
        return int(object_id)

    def _validate_prompt(self, object_id: int, points, labels, box, mask) -> _Prompt:
        # empty lists mean "none" (a box-only prompt written as points=[], labels=[])
        points, labels, box = (None if _is_empty(v) else v for v in (points, labels, box))
        if self.frame_index < 0:
            raise TrackerInputError("no frame yet: call step(frame) before add_prompt")
        if object_id not in self._ids and self.num_objects >= self.max_objects:
            raise TrackerInputError(
                f"cannot add object {object_id}: already tracking max_objects={self.max_objects} objects"
            )
        h, w = self._frame_hw
        s = self.spec.image_size
        if mask is not None:
            if points is not None or labels is not None or box is not None:
                raise TrackerInputError("give either a mask or points/box, not both")
            m = np.asarray(mask)
            if m.dtype != bool and not (np.issubdtype(m.dtype, np.integer) and m.size and m.min() >= 0 and m.max() <= 1):
                raise TrackerInputError(f"mask must be bool (or 0/1 integers), got dtype {m.dtype}")
            if m.shape != (h, w):
                raise TrackerInputError(f"mask must have the frame's shape {(h, w)}, got {m.shape}")
            return _Prompt(mask_s=mask_to_model_input(m.astype(bool), s))
        if (points is None) != (labels is None):
            raise TrackerInputError("points and labels must be given together")
        if points is None and box is None:
            raise TrackerInputError("a prompt needs points with labels, a box, or a mask")
        coords, labs = [], []
        if box is not None:
            b = np.asarray(box, np.float64)
            if b.shape != (4,):
                raise TrackerInputError(f"box must be [x0, y0, x1, y1], got shape {b.shape}")
            if not np.isfinite(b).all():
                raise TrackerInputError(f"box has non-finite values: {b.tolist()}")
            if b[0] >= b[2] or b[1] >= b[3]:
                raise TrackerInputError(f"box must have x0 < x1 and y0 < y1, got {b.tolist()}")
            if b[0] < 0 or b[1] < 0 or b[2] > w or b[3] > h:
                raise TrackerInputError(f"box {b.tolist()} lies outside the {w}x{h} frame")
            coords.append(b.reshape(2, 2))
            labs.append(np.array([2, 3]))
        if points is not None:
            too_many = check_points(len(points) if hasattr(points, "__len__") else 0)
            if too_many:  # before any copy of a huge list
                raise TrackerInputError(too_many)
            p = np.asarray(points, np.float64)
            lab = np.asarray(labels)
            if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] == 0:
                raise TrackerInputError(f"points must have shape [N, 2] with N >= 1, got {p.shape}")
            if lab.ndim != 1 or lab.shape[0] != p.shape[0]:
                raise TrackerInputError(f"labels must have shape [{p.shape[0]}] to match points, got {lab.shape}")
            if not np.isfinite(p).all():
                raise TrackerInputError("points contain NaN or infinite values")
            if not np.isin(lab, (0, 1)).all() or (lab.dtype.kind not in "iub"):
                raise TrackerInputError(f"labels must be 1 (positive) or 0 (negative), got {lab.tolist()}")
            if (p[:, 0] < 0).any() or (p[:, 1] < 0).any() or (p[:, 0] > w).any() or (p[:, 1] > h).any():
                raise TrackerInputError(f"points {p.tolist()} lie outside the {w}x{h} frame")
            coords.append(p)
            labs.append(lab.astype(np.int32))
        c = scale_points(np.concatenate(coords), (h, w), s)
        over = self.backend.limits.exceeded(points=len(c))
        if over:
            raise TrackerInputError(f"too many prompt points for the {self.backend.name} engines ({over[0]}, a box counts 2)")
        return _Prompt(coords=c, labels=np.concatenate(labs).astype(np.int32))

    # -------------------------------------------------------------- per frame
    def step(self, frame: np.ndarray) -> FrameResult:
        """Process the next frame (RGB uint8 [H, W, 3]) and return every object's mask on it."""
        image = self._begin_frame(frame)
        return self._step_encoded(frame, self.backend.encode_image(image))

    def _begin_frame(self, frame: np.ndarray):
        """The first half of :meth:`step`, before the image encoder: check ``frame`` (raises with
        the state untouched), commit the current frame's memories (they read its features, which
        the encoder may overwrite) and return the model input of ``frame``."""
        self._check_frame(frame)
        self._commit_current_frame()
        return self.imaging.frame_tensor(frame, self.spec.image_size)

    def _step_encoded(self, frame: np.ndarray, feats: ImageFeatures, shared_features: bool = False) -> FrameResult:
        """The rest of :meth:`step` on the frame's image features ``feats`` (after :meth:`_begin_frame`).

        ``shared_features``: ``feats`` live in buffers the backend rewrites when it encodes another
        stream's frame (a backend shared by several trackers): once this frame is tracked, the
        tracker reads its own copy in the history instead (prompts, the next frame's commit).
        """
        self._feats = feats
        self._frame_hw = frame.shape[:2]
        self.frame_index += 1
        self.bank.history.keep_features(self.frame_index, [getattr(self._feats, f.name) for f in fields(ImageFeatures)])
        n = self.num_objects
        self.bank.new_frame()
        if n:
            inp = self.bank.attention_inputs(0, n, self.frame_index, self.ptr_span)
            out, mem = self.backend.track_step(self._feats, inp, self.spec.use_multimask(False, 0))
            self.bank.set_tracked(n, out.low_res_masks, out.object_score_logits, out.iou, out.obj_ptr, mem)
            self.bank.finish_outputs(slice(0, n), self.fill_hole_area)  # after the memory, as SAM 2 does
        if shared_features:
            self._feats = self._features(self.frame_index)
        return self.current_result()

    def _commit_current_frame(self) -> None:
        """Move the current frame's memories into the bank before the next frame (``MemoryBank.commit``)."""
        if self.frame_index >= 0:
            self.bank.commit(self.frame_index, self.num_objects, self._encode_memory,
                             self.spec.binarize_mask_from_pts_for_mem_enc)

    def _encode_memory(self, low_res, binarize, score):
        return self.backend.encode_memory(self._feats, low_res, binarize, score)

    # ---------------------------------------------------------------- prompts
    def add_prompt(self, object_id: int, points=None, labels=None, box=None, mask=None,
                   frame_index: int | None = None) -> FrameResult:
        """Prompt ``object_id`` with points (+labels), a box, or a mask on the current frame, or on
        the past frame ``frame_index``.

        Points and box are in camera pixels (x, y); labels 1 = positive, 0 = negative; the mask
        is a bool [H, W] array. A new id starts an object; a known id is refined. Replaces any
        earlier prompt of this object on this frame.

        ``frame_index`` None or the current frame: returns every object's result on the current
        frame. A past frame ``f`` (at least :attr:`oldest_frame`): the prompt is applied on ``f``
        as if it had come then (a new object starts there; a refinement uses the object's memory
        as it was on ``f`` and its mask on ``f``), then this object alone is tracked again from
        ``f + 1`` to the current frame on the cached image features, replacing what it had
        there. Returns every object's result on frame ``f`` (:meth:`result_at`); the current
        frame's result (:meth:`current_result`) has the object as if it had been tracked live,
        and the next ``step`` continues from there. A prompt on ``f`` must not precede a prompt
        of the same object on a later frame (that one was conditioned on the object's memory
        without this prompt): such a prompt is refused.

        Raises :class:`TrackerInputError` (state untouched) on bad input.
        """
        object_id = self._check_object_id(object_id)
        prompt = self._validate_prompt(object_id, points, labels, box, mask)
        f = self._check_prompt_frame(object_id, frame_index)
        if f != self.frame_index:
            return self._prompt_past(object_id, prompt, f)
        is_new = object_id not in self._ids
        row = self.num_objects if is_new else self._ids.index(object_id)
        if is_new:
            self.bank.clear(row)
        is_init = not self.bank.tracked[row]
        as_cond = is_init or self.corrections_as_conditioning
        prev = None if is_new else self.bank.low_res_host[row : row + 1]
        self._decode_prompt(row, prompt, self._feats, f, is_init, prev, as_cond)
        if is_new:
            self._ids.append(object_id)
        return self.current_result()

    def _check_prompt_frame(self, object_id: int, frame_index) -> int:
        """The frame a prompt applies to; refuses frames out of the history, and a frame before a
        later prompt of the same object."""
        t = self.frame_index
        if frame_index is None:
            return t
        if isinstance(frame_index, (bool, np.bool_)) or not isinstance(frame_index, (int, np.integer)):
            raise TrackerInputError(f"frame_index must be None or an int, got {frame_index!r}")
        f = int(frame_index)
        if f > t:
            raise TrackerInputError(f"frame {f} has not been processed yet: the current frame is {t}")
        oldest = self.oldest_frame
        if f < oldest or not self.bank.history.has_features(f):
            raise TrackerInputError(
                f"frame {f} is older than the history: the oldest frame a prompt may name is {oldest} "
                f"(the current frame is {t}, history_frames={self.history_frames})"
            )
        if object_id in self._ids:
            last = int(self.bank.last_prompt[self._ids.index(object_id)])
            if last > f:
                raise TrackerInputError(
                    f"object {object_id} was prompted on frame {last}, after frame {f}: a prompt on an earlier "
                    f"frame of an object must come before its prompts on later frames (prompt frame {last} or "
                    "later, or remove the object and prompt it again)"
                )
        return f

    def _prompt_past(self, object_id: int, prompt: _Prompt, f: int) -> FrameResult:
        """Apply a validated prompt on past frame ``f`` and re-track the object up to the current frame."""
        bank = self.bank
        feats = self._features(f)
        is_new = object_id not in self._ids
        if is_new:
            row = self.num_objects
            bank.clear(row)
            is_init, prev = True, None
        else:
            row = self._ids.index(object_id)
            is_init = f == int(bank.first_prompt[row])  # a second prompt on the object's first frame
            prev = bank.history.low_res[row, f % self.history_frames][None].copy()
            bank.rewind(row, f)
        as_cond = is_init or self.corrections_as_conditioning
        self._decode_prompt(row, prompt, feats, f, is_init, prev, as_cond)
        if is_new:
            self._ids.append(object_id)
        encode = lambda low_res, binarize, score: self.backend.encode_memory(feats, low_res, binarize, score)  # noqa: E731
        bank.commit(f, row + 1, encode, self.spec.binarize_mask_from_pts_for_mem_enc, start=row)
        self._catch_up(row, f + 1)
        # graph inputs come from the history from now on: a backend that keeps one device buffer
        # per encoder output (TensorRT) has been fed past frames' features since the last step
        self._feats = self._features(self.frame_index)
        return self.result_at(f)

    def _catch_up(self, row: int, start: int) -> None:
        """Track object row ``row`` alone on frames ``start .. current`` from the cached features:
        each frame's memory goes to the bank and the history; the current frame's output is
        staged as if it had been tracked live."""
        multimask = self.spec.use_multimask(False, 0)
        for g in range(start, self.frame_index + 1):
            inp = self.bank.attention_inputs(row, row + 1, g, self.ptr_span)
            out, mem = self.backend.track_step(self._features(g), inp, multimask)
            self.bank.set_tracked(row + 1, out.low_res_masks, out.object_score_logits, out.iou, out.obj_ptr, mem,
                                  start=row)
            self.bank.finish_outputs(slice(row, row + 1), self.fill_hole_area)
            if g < self.frame_index:
                self.bank.commit(g, row + 1, None, self.spec.binarize_mask_from_pts_for_mem_enc, start=row)

    def _features(self, frame: int) -> ImageFeatures:
        return ImageFeatures(*self.bank.history.frame_features(frame))

    def _decode_prompt(self, row: int, prompt: _Prompt, feats: ImageFeatures, frame: int, is_init: bool,
                       prev: np.ndarray | None, as_cond: bool) -> None:
        """Decode ``prompt`` for ``row`` on ``frame`` (features ``feats``); ``prev``: the object's
        logits on that frame [1, 1, h, w] (None for a new object)."""
        if prompt.mask_s is not None:
            self._run_mask_prompt(row, prompt.mask_s, feats, as_cond)
        else:
            self._run_point_prompt(row, prompt, feats, frame, is_init, prev, as_cond)
        self.bank.last_prompt[row] = frame
        if self.bank.first_prompt[row] < 0:
            self.bank.first_prompt[row] = frame

    def _run_point_prompt(self, row: int, prompt: _Prompt, feats: ImageFeatures, frame: int, is_init: bool,
                          prev: np.ndarray | None, as_cond: bool) -> None:
        if is_init:
            pix, no_mem = self.backend.frame_embedding(feats), self._ones_b[:1]
        else:
            inp = self.bank.attention_inputs(row, row + 1, frame, self.ptr_span)
            pix, no_mem = self.backend.attend_memory(feats, **inp.as_dict()), self._zeros_b[:1]
        if prev is not None:  # previous logits of this object on this frame guide the new clicks
            mask_input, has_mask = np.clip(prev, -32.0, 32.0), self._ones_b[:1]
        else:
            mask_input, has_mask = self._no_mask[:1], self._zeros_b[:1]
        multimask = self._ones_b[:1] if self.spec.use_multimask(is_init, len(prompt.labels)) else self._zeros_b[:1]
        out = self.backend.decode(
            feats, pix, no_mem, prompt.coords[None], prompt.labels[None], mask_input, has_mask, multimask,
        )
        self._store(row, out.low_res_masks[0], out.object_score_logits[0], out.iou[0], out.obj_ptr[0], as_cond)

    def _run_mask_prompt(self, row: int, mask_s: np.ndarray, feats: ImageFeatures, as_cond: bool) -> None:
        """SAM 2 ``use_mask_input_as_output_without_sam``: the mask is the output; the decoder gives the pointer."""
        c = self.constants
        mask_in = downsample_mask(mask_s, c["mask_downsample_weight"], c["mask_downsample_bias"])
        out = self.backend.decode(
            feats, self.backend.frame_embedding(feats), self._zeros_b[:1],
            self._no_points[:1], self._no_labels[:1], mask_in[None, None], self._ones_b[:1], self._zeros_b[:1],
        )
        appearing = float(mask_s.any())
        ptr = out.obj_ptr[0]
        if self.spec.pred_obj_scores:
            if self.spec.fixed_no_obj_ptr:
                ptr = appearing * ptr
            ptr = ptr + (1.0 - appearing) * self._no_obj_ptr
        low_res = mask_prompt_logits(mask_s, self.spec.low_res_size)
        self._store(row, low_res[None], np.float32([20.0 * appearing - 10.0]), np.float32([1.0]), ptr, as_cond)

    def _store(self, row: int, low_res, score, iou, ptr, as_cond: bool) -> None:
        self.bank.set_prompted(row, low_res, score, iou, ptr, as_cond)
        self.bank.finish_outputs(slice(row, row + 1), self.fill_hole_area)

    # ---------------------------------------------------------------- removal
    def remove_object(self, object_id: int) -> None:
        """Stop tracking ``object_id`` and free its memory. Other objects are unaffected."""
        object_id = self._check_object_id(object_id)
        if object_id not in self._ids:
            raise TrackerInputError(f"unknown object id {object_id}; tracked ids: {self.object_ids}")
        row = self._ids.index(object_id)
        last = self.num_objects - 1
        if row != last:  # keep live rows contiguous: move the last row into the hole
            self.bank.move(last, row)
            self._ids[row] = self._ids[last]
        else:
            self.bank.clear(row)
        self._ids.pop()

    # ---------------------------------------------------------------- results
    def result_at(self, frame_index: int) -> FrameResult:
        """Every object's result on frame ``frame_index`` of the history (as now known: a prompt
        applied on an earlier frame re-tracks its object over the frames after it). Objects
        not tracked on that frame are left out. The current frame: :meth:`current_result`."""
        t = self.frame_index
        if isinstance(frame_index, (bool, np.bool_)) or not isinstance(frame_index, (int, np.integer)):
            raise TrackerInputError(f"frame_index must be an int, got {frame_index!r}")
        f = int(frame_index)
        if t < 0 or f > t:
            raise TrackerInputError(f"frame {f} has not been processed yet: the current frame is {t}")
        if f == t:
            return self.current_result()
        h = self.bank.history
        if f < self.oldest_frame or not h.has_features(f):
            raise TrackerInputError(f"frame {f} is older than the history: the oldest frame is {self.oldest_frame}")
        rows = [r for r in range(self.num_objects) if h.has_output(r, f)]
        rows.sort(key=lambda r: self._ids[r])
        slot = f % h.frames
        low_res = h.low_res[rows, slot, 0] if rows else np.zeros((0, *h.low_res.shape[-2:]), np.float32)
        return FrameResult(
            frame_index=f,
            object_ids=[self._ids[r] for r in rows],
            scores=h.score[rows, slot, 0].copy(),
            ious=h.iou[rows, slot, 0].copy(),
            low_res_logits=low_res.copy(),
            rendering=self._render(low_res),
            frame_hw=self._frame_hw,
        )

    def current_result(self) -> FrameResult | None:
        """Every object's result on the current frame (None before the first frame)."""
        if self.frame_index < 0:
            return None
        order = np.argsort(self._ids, kind="stable").astype(np.int64)
        low_res = self.bank.low_res_host[order, 0]
        if self.imaging.on_device:  # render from the logits on the device, in the results' order
            rendering = self.imaging.render(self.bank.low_res[self.storage.asarray(order), 0], self._frame_hw,
                                            self.mask_threshold)
        else:
            rendering = self._render(low_res)
        return FrameResult(
            frame_index=self.frame_index,
            object_ids=[self._ids[i] for i in order],
            scores=self.bank.score_host[order, 0].copy(),
            ious=self.bank.iou_host[order, 0].copy(),
            low_res_logits=low_res.copy(),
            rendering=rendering,
            frame_hw=self._frame_hw,
        )

    def _render(self, low_res_host: np.ndarray) -> Rendering:
        """The camera-resolution outputs of host logits [n, h, w] (uploaded first for device imaging)."""
        if self.imaging.on_device:
            return self.imaging.render(self.storage.asarray(low_res_host), self._frame_hw, self.mask_threshold)
        return self.imaging.render(low_res_host, self._frame_hw, self.mask_threshold)
