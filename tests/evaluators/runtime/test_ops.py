"""The op registry: one table of every op the runner executes, whole on import of the runtime."""

from __future__ import annotations

import subprocess
import sys

from evaluators.runtime import approx_ops, core_ops, fused_ops, integer_ops, ops, qops
from tests.conftest import REPO


def test_the_registry_is_the_union_of_the_families_and_they_share_no_op():
    families = [table for table, _ in ops.FAMILIES.values()]
    assert {op for table in families for op in table} == set(ops.OPS)
    assert sum(len(table) for table in families) == len(ops.OPS)
    assert all(ops.OPS[op] is fn for table in families for op, fn in table.items())
    assert ops.TABLE_OPS == (core_ops.TABLE_OPS | integer_ops.TABLE_OPS | fused_ops.TABLE_OPS
                             | approx_ops.TABLE_OPS)
    assert ops.TABLE_OPS <= set(ops.OPS)
    assert set(qops.OPS) <= set(ops.OPS)


def test_importing_the_runner_gives_every_op_without_the_onnx_flows():
    """What used to be registered as a side effect of importing the approximate export and the
    integer graph is in the registry as soon as the runner is imported, and nothing else is."""
    code = (
        "import sys\n"
        "from evaluators.runtime import approx_runner\n"
        "wanted = {'QLinearConv', 'QGemm', 'QLinearMatMul', 'QLinearAdd', 'ConvInteger',\n"
        "          'MatMulInteger', 'Div', 'Cast', 'dse.CodeChain', 'dse.QLinearConvPool',\n"
        "          'ApproxQLinearConv', 'ApproxQGemm', 'ApproxQLinearMatMul'}\n"
        "assert wanted <= set(approx_runner.OPS), wanted - set(approx_runner.OPS)\n"
        "table = {'QLinearConv', 'QGemm', 'QLinearMatMul', 'ConvInteger', 'MatMulInteger',\n"
        "         'dse.QLinearConvPool', 'ApproxQLinearConv', 'ApproxQGemm', 'ApproxQLinearMatMul',\n"
        "         'ApproxMatMulInteger'}\n"
        "assert approx_runner.TABLE_OPS == table, approx_runner.TABLE_OPS ^ table\n"
        "loaded = [m for m in sys.modules if m.startswith(('evaluators.onnx', 'evaluators.networks'))]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
