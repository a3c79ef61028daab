"""Approximate Conv/Gemm with PyTorch, on a GPU (``cuda``) or on the CPU (for tests).

Same contract as ``accel.reference`` and ``accel.cpu``, numpy arrays in and out. Two paths:

- **structured** (AppAxO tables, which carry their row tables; zero points 0): a layer is
  ``K*C + sum_r 4^r (rowsum(R_r,0[x]) + sum_{d=1..3} (R_r,d[x] - R_r,0[x]) @ [d_r(w) == d])``,
  12 matrix products against 0/1 matrices that depend only on the weights (see
  ``circuits.appaxo.row_tables``). Every operand is an integer of at most 10 bits and every
  partial sum stays below 2^24, so float32 products are exact (TF32 is switched off);
  the reduction over K is split into blocks to keep that bound for wide layers.
- **generic** (any table): gather ``T[x, w]`` and sum over K, in row blocks; products of two
  activations (``matmul_accumulate``) always take this path.

Requantization reproduces ``accel.requant`` (float32 multiply, clamp, round half to even).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from accel.batch import TableBatch, tables_of
from accel.reference import pad_input
from circuits.product_table import ProductTable

_EXACT_LIMIT = 1 << 24
_ROW_MAX = 1023  # a row result has 10 bits
_ELEMENTS = 1 << 25  # elements of one gather block in the generic path


class TorchKernels:
    """The kernels on one torch device. A ``TableBatch`` is scored natively: the tables of a
    layer share its matrix products (each row gathers from its own table)."""

    batches_natively = True

    def __init__(self, device: str = "cpu") -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("device cuda was requested but no CUDA GPU is available to PyTorch")
        self.device = torch.device(device)
        torch.backends.cuda.matmul.allow_tf32 = False  # exactness needs full float32 products
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False

    # -- accumulators -------------------------------------------------------------------------

    def _gemm_acc(self, a: torch.Tensor, b: np.ndarray, table: ProductTable | TableBatch, za: int,
                  zb: np.ndarray) -> torch.Tensor:
        """int64 accumulators (M, O) of codes a (M, K) on the device times weights b (K, O).
        With a batch of tables, row i of ``a`` belongs to table ``i // (M / len(batch))``."""
        tables = tables_of(table)
        if a.shape[0] % len(tables):
            raise ValueError(f"{a.shape[0]} rows do not split into {len(tables)} tables")
        # each row's offset into the tables stacked along the activation axis
        owner = torch.arange(a.shape[0], device=self.device) // (a.shape[0] // len(tables))
        if all(t.rows is not None for t in tables) and table.signed and za == 0 and not np.any(zb):
            return self._structured(a, b, tables, owner)
        k = a.shape[1]
        idx = (a + table.offset).long() + 256 * owner[:, None]
        tvals = torch.tensor(np.concatenate([t.values for t in tables]), device=self.device).long()
        bidx = torch.as_tensor(b.astype(np.int64) + table.offset, device=self.device)
        out = torch.empty((a.shape[0], b.shape[1]), dtype=torch.int64, device=self.device)
        step = max(1, _ELEMENTS // max(1, k * b.shape[1]))
        for start in range(0, a.shape[0], step):
            block = idx[start : start + step]
            out[start : start + step] = tvals[block[:, :, None], bidx[None]].sum(dim=1)
        if np.any(zb):
            zb_t = torch.as_tensor(zb.astype(np.int64), device=self.device)
            out -= zb_t[None] * a.long().sum(1, keepdim=True)
        if za:
            out -= za * torch.as_tensor(b.astype(np.int64).sum(0), device=self.device)[None]
            out += k * za * torch.as_tensor(zb.astype(np.int64), device=self.device)[None]
        return out

    def _structured(self, a: torch.Tensor, b: np.ndarray, tables: tuple[ProductTable, ...],
                    owner: torch.Tensor) -> torch.Tensor:
        k = a.shape[1]
        idx = (a + 128).long() + 256 * owner[:, None]
        # rows[r, table * 256 + a + 128, d]: the tables' row tables stacked along the activation
        rows = torch.tensor(np.concatenate([t.rows for t in tables], axis=1), device=self.device,
                            dtype=torch.float32)
        raw = torch.as_tensor(b.astype(np.int64) & 0xFF, device=self.device)
        # T[0, 0] minus its rows (a = 0, every weight digit 0): each table's constant term
        correction = torch.tensor([int(t.values[128, 128]) - sum(
            int(t.rows[r, 128, 0]) << (2 * r) for r in range(t.rows.shape[0])) for t in tables],
            dtype=torch.int64, device=self.device)
        out = (k * correction[owner])[:, None].expand(-1, b.shape[1]).clone()
        block = max(1, _EXACT_LIMIT // (4 * _ROW_MAX) - 1)  # K per block keeps sums exact
        for r in range(rows.shape[0]):
            digits = (raw >> (2 * r)) & 3
            for k0 in range(0, k, block):
                cols = slice(k0, k0 + block)
                base = rows[r, :, 0][idx[:, cols]]
                part = base.sum(dim=1, keepdim=True).expand(-1, b.shape[1]).clone()
                for d in (1, 2, 3):
                    mask = (digits[cols] == d).to(torch.float32)
                    if mask.any():
                        part += (rows[r, :, d][idx[:, cols]] - base) @ mask
                out += part.round().long() << (2 * r)
        return out

    # -- the kernel interface -----------------------------------------------------------------

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x).astype(np.int32), device=self.device)

    def gemm_accumulate(self, a, b, table, a_zero_point=0, b_zero_point=0) -> np.ndarray:
        zb = np.broadcast_to(np.asarray(b_zero_point, dtype=np.int64), (b.shape[1],))
        return self._gemm_acc(self._tensor(a), b, table, int(a_zero_point), zb).cpu().numpy().astype(np.int32)

    def matmul_accumulate(self, a, b, table, a_zero_point=0, b_zero_point=0) -> np.ndarray:
        """Same contract as ``accel.reference.matmul_accumulate``; a ``TableBatch`` natively (the
        result's leading axis holds each table's images in turn, ``accel.batch.matmul_parts``):
        one gather ``T[a, b]`` from the tables stacked along the activation axis."""
        if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
            raise ValueError(f"cannot multiply {a.shape} by {b.shape}: expected (..., M, K) x "
                             "(..., K, N)")
        tables = tables_of(table)
        lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        (m, k), n = a.shape[-2:], b.shape[-1]
        at = self._tensor(a).long().expand(*lead, m, k).reshape(-1, m, k)
        bt = self._tensor(b).long().expand(*lead, k, n).reshape(-1, k, n)
        rows = at.shape[0] * m if not lead else lead[0]  # the leading axis: the images
        if rows % len(tables):
            raise ValueError(f"a leading axis of {rows} does not split into {len(tables)} tables")
        per_row = (at.shape[0] * m) // rows  # output rows (l, m) per image
        owner = (torch.arange(at.shape[0] * m, device=self.device) // per_row
                 // (rows // len(tables))).reshape(-1, m)
        tvals = torch.tensor(np.concatenate([t.values for t in tables]).reshape(-1),
                             device=self.device).long()
        # flat index of T_owner[a, b]: (owner * 256 + a + offset) * 256 + b + offset
        a_idx = ((owner[:, :, None] * 256 + at + table.offset) * 256)[:, :, :, None]
        b_idx = (bt + table.offset)[:, None, :, :]
        out = torch.empty((at.shape[0], m, n), dtype=torch.int64, device=self.device)
        step = max(1, _ELEMENTS // max(1, m * k * n))
        for start in range(0, at.shape[0], step):
            block = slice(start, start + step)
            out[block] = tvals[a_idx[block] + b_idx[block]].sum(dim=2)
        zb = torch.as_tensor(np.broadcast_to(np.asarray(b_zero_point, dtype=np.int64), (n,)).copy(),
                             device=self.device)
        za = int(a_zero_point)
        out -= zb * at.sum(2, keepdim=True)
        out -= za * bt.sum(1, keepdim=True)
        out += k * za * zb
        return out.reshape(*lead, m, n).cpu().numpy().astype(np.int32)

    def _conv_acc(self, x, w, table, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1,
                  x_zero_point=0, w_zero_point=0):
        o, cg, kh, kw = w.shape
        og = o // group
        zw = np.broadcast_to(np.asarray(w_zero_point, dtype=np.int64), (o,))
        xp = self._tensor(pad_input(x, pads, x_zero_point)).float()
        n, _, hp, wp = xp.shape
        outs = []
        for g in range(group):
            cols = F.unfold(xp[:, g * cg : (g + 1) * cg], (kh, kw), dilation=dilations,
                            stride=strides)  # (N, cg*kh*kw, L), channel-major like ONNX
            length = cols.shape[2]
            a = cols.transpose(1, 2).reshape(n * length, -1).round().int()
            wg = w[g * og : (g + 1) * og].reshape(og, -1).T
            acc = self._gemm_acc(a, wg, table, int(x_zero_point), zw[g * og : (g + 1) * og])
            outs.append(acc.reshape(n, length, og))
        oh = (hp - dilations[0] * (kh - 1) - 1) // strides[0] + 1
        ow = (wp - dilations[1] * (kw - 1) - 1) // strides[1] + 1
        return torch.cat(outs, dim=2).transpose(1, 2).reshape(n, o, oh, ow)

    def conv_accumulate(self, x, w, table, *, strides=(1, 1), pads=(0, 0, 0, 0),
                        dilations=(1, 1), group=1, x_zero_point=0, w_zero_point=0) -> np.ndarray:
        acc = self._conv_acc(x, w, table, strides, pads, dilations, group, x_zero_point, w_zero_point)
        return acc.cpu().numpy().astype(np.int32)

    def _requantize(self, acc: torch.Tensor, bias, multiplier, zero_point: np.ndarray) -> torch.Tensor:
        shape = [1, -1] + [1] * (acc.dim() - 2)
        if bias is not None:
            acc = acc + torch.as_tensor(bias.astype(np.int64), device=self.device).reshape(shape)
        info = np.iinfo(zero_point.dtype)
        zp = float(zero_point)
        mult = torch.as_tensor(np.asarray(multiplier, dtype=np.float32), device=self.device)
        y = acc.to(torch.float32) * (mult.reshape(shape) if mult.numel() > 1 else mult)
        y = torch.clamp(y, info.min - zp, info.max - zp)
        return torch.round(y) + zp  # codes, as float32 (exact)

    def qlinear_conv(self, x, w, table, *, bias, multiplier, y_zero_point, **conv) -> np.ndarray:
        acc = self._conv_acc(x, w, table, **conv)
        codes = self._requantize(acc, bias, multiplier, y_zero_point)
        return codes.cpu().numpy().astype(y_zero_point.dtype)

    def qlinear_conv_pool(self, x, w, table, *, pool, code_map, bias, multiplier, y_zero_point,
                          **conv) -> np.ndarray:
        acc = self._conv_acc(x, w, table, **conv)
        codes = self._requantize(acc, bias, multiplier, y_zero_point)
        pooled = F.max_pool2d(codes, pool, stride=pool)
        index = (pooled - np.iinfo(y_zero_point.dtype).min).long()
        mapped = torch.as_tensor(code_map.astype(np.int64), device=self.device)[index]
        return mapped.cpu().numpy().astype(code_map.dtype)

    def qlinear_gemm(self, a, b, table, *, a_zero_point, b_zero_point, bias, multiplier,
                     y_zero_point) -> np.ndarray:
        zb = np.broadcast_to(np.asarray(b_zero_point, dtype=np.int64), (b.shape[1],))
        acc = self._gemm_acc(self._tensor(a), b, table, int(a_zero_point), zb)
        codes = self._requantize(acc, bias, multiplier, y_zero_point)
        return codes.cpu().numpy().astype(y_zero_point.dtype)
