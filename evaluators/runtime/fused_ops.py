"""The ops graph transformations fuse (``evaluators.runtime.transforms``): ``dse.CodeChain``
(pooling and reshapes on 8-bit codes, then a 256-entry code map) and ``dse.QLinearConvPool``
(a QLinearConv whose kernel requantizes, pools and maps the codes in one pass). Every op here
is listed in ``OPS``, which the op registry (``evaluators.runtime.ops``) takes in whole.
"""

from __future__ import annotations

import numpy as np

from accel.codes import map_codes
from evaluators.runtime import core_ops
from evaluators.runtime.core_ops import Context, Op, conv_arguments
from evaluators.runtime.node import Node

CODE_CHAIN = "dse.CodeChain"
CONV_POOL = "dse.QLinearConvPool"


def _steps(node: Node, x: np.ndarray, ctx: Context) -> np.ndarray:
    """The fused structural steps (max pooling, reshapes: ops of ``core_ops``) applied to ``x``."""
    for step in node.attrs["steps"]:
        consts = [ctx.graph.initializers.get(n) for n in step.inputs[1:]]
        x = core_ops.OPS[step.op](step, [x, *consts], ctx)[0]
    return x


def _run_code_chain(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    return [map_codes(node.attrs["code_map"], _steps(node, args[0], ctx))]


def _run_conv_pool(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    x, w, qconv = conv_arguments(node, args, ctx)
    y = ctx.kernels.qlinear_conv_pool(x, w, ctx.table_for(node), pool=node.attrs["pool"],
                                      code_map=node.attrs["code_map"], **qconv)
    return [_steps(node, y, ctx)]


OPS: dict[str, Op] = {
    CODE_CHAIN: _run_code_chain,
    CONV_POOL: _run_conv_pool,
}

TABLE_OPS = frozenset({CONV_POOL})
"""The ops here that multiply through the table."""
