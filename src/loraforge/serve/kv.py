"""A preallocated KV cache for continuous batching: one slot per running row, no copy per token.

Layout: every layer holds keys/values of shape (slots, kv_heads, capacity, head_dim). Rows are
left-padded so that every live row writes its next token at one shared column, ``pointer``; a row's
tokens are contiguous and end at the pointer, and ``valid`` (slots, capacity) marks its real columns.
That keeps each decoding step one ordinary batched forward: transformers builds the causal and
sliding-window masks from ``valid`` (a 2D padding mask over absolute columns) and from the offsets
this cache reports, so no model code is patched. A row joining writes its prompt into a free slot
ending at the pointer; a row leaving is swap-removed (the last live row moves into its slot). Data
moves only when the pointer reaches the end (everything slides left to the oldest live row's first
column) or a new prompt is longer than the pointer (everything slides right); capacity doubles only
when the live rows need more columns than it has. Attention reads views, never concatenations.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

SUPPORTED_LAYERS = ("full_attention", "sliding_attention")


class SlotLayer(CacheLayerMixin):
    """One decoder layer's slice of a ``SlotCache``; reads the shared view from its owner."""

    is_compileable = False
    is_croppable = False

    def __init__(self, owner: "SlotCache", window: int | None):
        super().__init__()
        self.owner, self.window = owner, window
        self.is_sliding = window is not None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        c = self.owner
        shape = (c.slots, key_states.shape[1], c.capacity, key_states.shape[-1])
        self.keys = torch.zeros(shape, dtype=key_states.dtype, device=key_states.device)
        self.values = torch.zeros(shape[:3] + (value_states.shape[-1],), dtype=value_states.dtype,
                                  device=value_states.device)
        self.is_initialized = True

    def first_column(self, query_length: int) -> int:
        """Oldest column any query of this forward may see (sliding layers look back ``window - 1``)."""
        _, _, write, lo = self.owner.view
        return max(lo, write - self.window + 1) if self.window else lo

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        r0, r1, write, _ = self.owner.view
        q = key_states.shape[-2]
        self.keys[r0:r1, :, write:write + q] = key_states
        self.values[r0:r1, :, write:write + q] = value_states
        first = self.first_column(q)
        return self.keys[r0:r1, :, first:write + q], self.values[r0:r1, :, first:write + q]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        first = self.first_column(query_length)
        return self.owner.view[2] + query_length - first, first

    def get_seq_length(self) -> int:
        return self.owner.view[2]

    def get_max_length(self) -> int:
        return self.owner.capacity

    def resize(self, capacity: int) -> None:
        if self.is_initialized:
            self.keys = _grow(self.keys, capacity)
            self.values = _grow(self.values, capacity)


def _grow(t: torch.Tensor, capacity: int) -> torch.Tensor:
    out = t.new_zeros(t.shape[:2] + (capacity,) + t.shape[3:])
    out[:, :, :t.shape[2]] = t
    return out


class SlotCache(Cache):
    """KV for up to ``slots`` rows; the engine sets ``view`` before each forward (see module doc)."""

    def __init__(self, config, slots: int, capacity: int = 256, device: torch.device | str = "cpu"):
        types = list(getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers)
        unknown = sorted(set(types) - set(SUPPORTED_LAYERS))
        if unknown:
            raise ValueError(f"the serving engine supports {', '.join(SUPPORTED_LAYERS)} layers, not {unknown}")
        window = getattr(config, "sliding_window", None)
        super().__init__(layers=[SlotLayer(self, window if t == "sliding_attention" else None) for t in types])
        self.slots, self.capacity = slots, capacity
        self.valid = torch.zeros(slots, capacity, dtype=torch.bool, device=device)
        self.start = [0] * slots  # first real column of each row
        self.pointer = 0  # the column every live row writes its next token to
        self.view = (0, 0, 0, 0)  # (first row, end row, write column, oldest visible column)

    # --- views for one forward --------------------------------------------------------------

    def decode_view(self, rows: int) -> torch.Tensor:
        """Prepare a one-token step of rows [0, rows); returns their attention mask."""
        self.reserve(self.pointer + 1, rows)
        self.valid[:rows, self.pointer] = True
        self.view = (0, rows, self.pointer, min(self.start[:rows]))
        return self.valid[:rows, :self.pointer + 1]

    def prefill_view(self, first: int, lengths: list[int]) -> torch.Tensor:
        """Open rows [first, first + len(lengths)) for prompts that end at the pointer; returns their mask.

        The caller has made ``pointer >= max(lengths)`` (``make_room``)."""
        width, end = max(lengths), first + len(lengths)
        self.valid[first:end] = False
        for i, n in enumerate(lengths):
            self.start[first + i] = self.pointer - n
            self.valid[first + i, self.pointer - n:self.pointer] = True
        self.view = (first, end, self.pointer - width, self.pointer - width)
        return self.valid[first:end, :self.pointer]

    def advance(self) -> None:
        self.pointer += 1

    # --- moving data ------------------------------------------------------------------------

    def make_room(self, width: int, live: int) -> None:
        """Let a prompt of ``width`` tokens end at the pointer (slide the live rows right if needed)."""
        if live == 0:
            self.pointer = width
            self.reserve(width + 1, 0)
        elif width > self.pointer:
            self._shift(width - self.pointer, live)
            self.reserve(self.pointer + 1, live)

    def reserve(self, end: int, live: int) -> None:
        """Make columns up to ``end`` (exclusive) writable: slide left first, grow only if that is not enough."""
        if end <= self.capacity:
            return
        lo = min(self.start[:live]) if live else 0
        if lo > 0:
            self._shift(-lo, live)
            end -= lo
        if end <= self.capacity:
            return
        capacity = self.capacity
        while capacity < end:
            capacity *= 2
        self.capacity = capacity
        for layer in self.layers:
            layer.resize(capacity)
        self.valid = _grow(self.valid[:, None], capacity)[:, 0]

    def _shift(self, delta: int, live: int) -> None:
        """Move every live row's columns by ``delta`` (one copy of the live window per layer)."""
        lo, hi = min(self.start[:live]), self.pointer
        if delta > 0 and hi + delta > self.capacity:
            self.reserve(hi + delta, live)
            lo, hi = min(self.start[:live]), self.pointer
        for layer in self.layers:
            if layer.is_initialized:
                for t in (layer.keys, layer.values):
                    t[:live, :, lo + delta:hi + delta] = t[:live, :, lo:hi].clone()
        self.valid[:live, lo + delta:hi + delta] = self.valid[:live, lo:hi].clone()
        if delta > 0:
            self.valid[:live, :lo + delta] = False
        else:
            self.valid[:live, hi + delta:] = False
        self.start[:live] = [s + delta for s in self.start[:live]]
        self.pointer += delta

    def move_rows(self, dst: list[int], src: list[int]) -> None:
        """Copy rows ``src`` into slots ``dst`` (swap-remove of finished rows)."""
        if not dst:
            return
        d, s = torch.tensor(dst), torch.tensor(src)
        lo = min(self.start[i] for i in src)
        for layer in self.layers:
            if layer.is_initialized:
                for t in (layer.keys, layer.values):
                    t[d, :, lo:self.pointer] = t[s, :, lo:self.pointer]
        self.valid[d] = self.valid[s]
        for a, b in zip(dst, src):
            self.start[a] = self.start[b]
